# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs one provision step on the VM over the task's connection, streaming its output as it comes."""

from __future__ import annotations

__metaclass__ = type

import os

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.checks import check_hypervisor, validate_name
from ansible_collections.vmctl.core.plugins.module_utils.guest import provision
from ansible_collections.vmctl.core.plugins.module_utils.errors import ProvisionFailed, VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

display = Display()


class _LinePrinter:
    """Shows output line by line, prefixed with the VM's name, as soon as each line is complete."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.pending = ""

    def __call__(self, text):
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            display.display(self.prefix + line.rstrip("\r"))

    def flush(self):
        if self.pending:
            display.display(self.prefix + self.pending)
            self.pending = ""


class _ConnectionRunner:
    """The provision engine's runner on top of an Ansible connection (streaming when it can)."""

    def __init__(self, action):
        self.action = action
        self.connection = action._connection

    def run(self, command, on_output):
        streaming = getattr(self.connection, "exec_command_streaming", None)
        if streaming is not None:
            return streaming(command, on_output)
        rc, stdout, stderr = self.connection.exec_command(command)
        on_output((stdout + stderr).decode("utf-8", "replace"))
        return rc, None

    def put(self, local, remote, mode):
        self.connection.put_file(local, remote)
        if mode is not None:
            rc, _out, err = self.connection.exec_command("chmod %o %s" % (mode, remote))
            if rc != 0:
                raise ProvisionFailed("cannot make %s executable: %s" % (remote, err.decode("utf-8", "replace").strip()))


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("vm", "step", "total", "log", "plan", "record"))
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = self._task.args
        if args.get("record") is not None:  # bookkeeping, where the VM's store is (the task is delegated there)
            result.update(self._execute_module(module_args=dict(args), task_vars=task_vars))
            return result
        vm, step = args.get("vm"), args.get("step")
        if not vm or not isinstance(step, dict) or "type" not in step:
            return dict(result, failed=True, msg="vm_provision needs vm (a name) and step (a provision record from vmctl.core.vmfile)")
        log_path = args.get("log")
        plan, total = args.get("plan"), args.get("total")
        printer = _LinePrinter("[%s] " % vm)
        hypervisor = self._templar.template(task_vars.get("vmctl_hypervisor")) or "localhost"
        try:
            if not log_path and hypervisor != "localhost":  # the VM's work dir is there: keep the log here
                log_path = paths.remote_provision_log(check_hypervisor(hypervisor), validate_name(vm))
                paths.ensure_private_dir(os.path.dirname(log_path))
            elif not log_path:
                log_path = VmManager().get(vm).provision_log
            with provision.ProvisionLog(log_path) as log:
                done = provision.run_step(_ConnectionRunner(self), vm, step, total=total, log=log, on_output=printer)
        except VmctlError as err:
            printer.flush()
            msg = str(err)
            if plan:  # said before the hint
                msg = "%s; %s is left unprovisioned: the next vmctl.core.up runs its provision steps again%s" % (
                    err.message, vm, " (hint: %s)" % err.hint if err.hint else "")
            return dict(result, failed=True, msg=msg, error=err.to_dict(), log=log_path)
        printer.flush()
        result.update(changed=True, log=log_path, **done)
        return result
