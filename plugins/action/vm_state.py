# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vm_state, then the readiness wait on the controller, through the VM's own ``vm_ssh`` session.

The module changes the VM's state where the VM runs and says whether to wait for SSH. The wait
(``plugin_utils.ssh.readiness``) is the login that opens the VM's shared session daemon, so the
tasks that run on the VM next reuse that session: one SSH login per VM for a whole ``up``.
Progress lines are shown as they come, at default verbosity.
"""

from __future__ import annotations

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError

display = Display()

CONNECTION = "vmctl.core.vm_ssh"


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
        wait = result.pop("wait_for_ssh", None)  # the module checked the limits; None: nothing to wait for
        if result.get("failed") or not wait:
            return result
        name = self._task.args["name"]
        lines = []

        def on_progress(line):
            lines.append(line)
            display.display(line)

        try:
            waited = self._connection_to(name, task_vars).wait_until_ready(wait["deadline"], wait["stall"], on_progress)
        except VmctlError as err:
            return dict(result, failed=True, msg=str(err), error=err.to_dict(), progress=lines)
        result["actions"] = list(result.get("actions", [])) + ["wait_for_ssh"]
        result.update(ssh_wait=round(waited, 1), progress=lines)
        return result

    def _connection_to(self, name, task_vars):
        """The ``vm_ssh`` connection that tasks on VM ``name`` get: with the VM host's own variables when this task
        runs for that host (its task is delegated to the hypervisor, so ``task_vars`` hold the delegate's address),
        else with only the vmctl connection settings (control dir, data dir, timeouts)."""
        host = task_vars.get("inventory_hostname")
        hostvars = task_vars.get("hostvars") or {}
        own = hostvars[host] if host in hostvars and task_vars.get("ansible_vmctl_vm_name") == name else {}
        keep = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_user", "ansible_private_key_file",
                "ansible_ssh_private_key_file") if own else ()
        options = {key: own[key] for key in own if key in keep}
        options.update((key, value) for key, value in task_vars.items()
                       if key.startswith("ansible_vmctl_") or key == "vmctl_data_dir")
        options = self._templar.template(options)
        options["ansible_vmctl_vm_name"] = name
        connection = connection_loader.get(CONNECTION, self._play_context)
        connection.set_options(var_options=options)
        return connection
