#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_state
short_description: Start, stop, suspend or restart a vmctl virtual machine
version_added: 0.1.0
description:
  - Brings an existing VM (see M(vmctl.core.vm)) to a runtime state, like C(vmctl start),
    C(vmctl stop), C(vmctl suspend) and C(vmctl resume).
  - Returns only when the VM really is in that state - a stop waits until the guest is off
    (ACPI power button, then SIGTERM, then SIGKILL after O(stop_timeout)), and a start waits until
    SSH answers when O(wait_for_ssh) is set.
author:
  - vmctl.core developers (@vmctl)
options:
  name:
    description: VM name.
    type: str
    required: true
  state:
    description:
      - V(running) starts a prepared or stopped VM and resumes a suspended one.
      - V(stopped) shuts the guest down; a stopped or never started VM, or one that does not exist, is left alone.
      - V(suspended) pauses the vCPUs of a running VM.
      - V(restarted) stops a running VM and starts it again (always a change).
    type: str
    choices: [running, stopped, suspended, restarted]
    required: true
  stop_timeout:
    description: Seconds the guest gets to power off after the ACPI power button before it is terminated.
    type: int
    default: 30
  wait_for_ssh:
    description:
      - After V(running) or V(restarted), wait until the guest accepts an SSH login with the VM's key and
        cloud-init has finished. Defaults to true when the VM has SSH settings.
    type: bool
  wait_timeout:
    description:
      - The overall deadline, in seconds, of the wait for SSH and cloud-init.
      - Defaults to 600 under emulation (TCG) and 300 with KVM or bhyve. The wait also ends earlier when the
        guest stalls (see O(stall_timeout)).
    type: int
  stall_timeout:
    description:
      - Seconds without any sign of progress after which the wait fails as stalled, long before the deadline.
      - Progress is the console log growing, a login attempt getting further than before (TCP, SSH handshake,
        login), or cloud-init's log growing once logged in.
    type: int
    default: 120
notes:
  - The wait for SSH runs on the controller, in this module's action plugin, through the session of the
    C(vmctl.core.vm_ssh) connection. Its login is the one that the tasks that run on the VM afterwards reuse.
  - Supports check mode (reports what would change, touches nothing and waits for nothing) and diff mode.
  - With the propolis backend, V(stopped) powers the VM off at once (propolis-server has no ACPI shutdown request;
    it destroys its VM, the disk stays) and O(stop_timeout) bounds the wait; V(suspended) fails with
    C(vmctl.propolis.unsupported), as propolis-server cannot pause a VM.
  - In check mode, V(running) or V(restarted) for a VM that does not exist plans a start (with a warning), as an
    earlier M(vmctl.core.vm) task in the same check run only planned to create it; outside check mode that is an error.
seealso:
  - module: vmctl.core.vm
  - module: vmctl.core.vm_info
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
requirements:
  - QEMU on the host that runs the VM (Debian package C(qemu-system-x86)); none for the propolis backend
  - Python package C(paramiko) on the controller, for O(wait_for_ssh)
attributes:
  check_mode:
    description: Reports which transitions would happen; starts, stops and waits for nothing.
    support: full
  diff_mode:
    description: Shows the state before and after.
    support: full
"""

EXAMPLES = r"""
- name: Boot the VM and wait until it can be reached over SSH
  vmctl.core.vm_state:
    name: web
    state: running

- name: Shut it down, giving the guest a minute
  vmctl.core.vm_state:
    name: web
    state: stopped
    stop_timeout: 60
"""

RETURN = r"""
state:
  description: The VM's state after the task (V(absent) for a VM that does not exist).
  returned: success
  type: str
  sample: running
previous_state:
  description: The VM's state before the task.
  returned: success
  type: str
  sample: stopped
actions:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["start", "wait_for_ssh"]
wait_for_ssh:
  description:
    - The wait for SSH that the action plugin does next, on the controller - its deadline (V(null) for the default)
      and stall window, in seconds. The action plugin removes it from the result.
  returned: never in a playbook's result; by the module when it asks its action plugin to wait
  type: dict
ssh_wait:
  description: Seconds waited for SSH (0 when a session to the VM was open already).
  returned: when SSH was waited for
  type: float
progress:
  description: The progress lines of the wait (also shown while the task runs, at default verbosity).
  returned: when SSH was waited for
  type: list
  elements: str
  sample: ["web: waiting for SSH, 10 s, console: Reached target System Initialization."]
vm:
  description: The VM as recorded in the store.
  returned: when the VM exists
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils import reconcile
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=list(reconcile.RUNTIME_STATES), required=True),
            stop_timeout=dict(type="int", default=30),
            wait_for_ssh=dict(type="bool"),
            wait_timeout=dict(type="int"),
            stall_timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    p = module.params
    manager = VmManager()
    outcome = reconcile.ensure_state(manager, p["name"], p["state"], stop_timeout=p["stop_timeout"],
                                     check_mode=module.check_mode)
    result = dict(changed=outcome.changed, actions=list(outcome.actions), state=outcome.diff["after"]["state"],
                  previous_state=outcome.diff["before"]["state"])
    if outcome.handle is None:  # no such VM: stopped asks for nothing, check mode plans a start
        if outcome.changed:
            module.warn("VM %s does not exist; check mode assumes an earlier task creates it" % p["name"])
    else:
        result["vm"] = outcome.handle.to_json()
    if outcome.handle is not None and p["state"] in ("running", "restarted") and not module.check_mode:
        # the wait itself is the action plugin's, on the controller: its login is the session later tasks reuse
        if reconcile.ssh_wait_wanted(outcome.handle, p["wait_for_ssh"], p["wait_timeout"], p["stall_timeout"]):
            # the default deadline is worked out here, where the VM runs (TCG or KVM)
            result["wait_for_ssh"] = {"deadline": p["wait_timeout"] or manager.backend(outcome.handle).ssh_deadline(outcome.handle),
                                      "stall": p["stall_timeout"]}
    if module._diff:
        result["diff"] = outcome.diff
    return result


if __name__ == "__main__":
    main()
