# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vm_snapshot, then, after a revert, the end of the VM's shared ``vm_ssh`` session on the controller.

A revert puts the guest back in a state whose TCP connections are gone, so the session daemon's SSH
connection is dead even where the host side does not notice yet; the next task logs in again (the host key
is the pinned one: it is on the snapshot's disk too).
"""

from __future__ import annotations

__metaclass__ = type

from ansible.errors import AnsibleError

from ansible_collections.vmctl.core.plugins.action.vm_state import ActionModule as VmStateAction
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError


class ActionModule(VmStateAction):

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(VmStateAction, self).run(tmp, task_vars)  # ActionBase's, not vm_state's wait
        result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
        if result.get("failed") or not result.get("changed") or self._task.args.get("state") != "reverted" \
                or self._play_context.check_mode:
            return result
        try:
            self._connection_to(self._task.args["name"], task_vars).reset()
            result["session_reset"] = True
        except (AnsibleError, VmctlError) as err:  # a VM without SSH settings has no session to end
            result["session_reset"] = False
            result["session_reset_skipped"] = str(err)
        return result
