#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_provision
short_description: Run one VMFile provision step on a VM
version_added: 0.1.0
description:
  - Runs one C(provision) block of a VMFile on the VM the task targets (usually over C(vmctl.core.vm_ssh)).
  - V(shell) with C(inline) runs the command; V(shell) with C(script) uploads the script to
    C(/tmp/vmctl-provision-<step>.sh), makes it executable and runs it (its shebang picks the interpreter);
    V(file) uploads C(source) to the absolute C(destination).
  - Output is shown line by line while the step runs, prefixed with the VM's name, and appended to
    C(provision.log) in the VM's work directory.
  - A non-zero exit code or a signal fails the task with the VM, the step number, the command or path, and the
    exit code or signal.
author:
  - vmctl.core developers (@vmctl)
options:
  vm:
    description: Name of the VM (its work directory holds C(provision.log)).
    type: str
    required: true
  step:
    description:
      - One element of C(provisions) returned by M(vmctl.core.vmfile) - C(step), C(type), and C(inline), C(script) or
        C(source) and C(destination).
      - Either this or O(record) is required.
    type: dict
  total:
    description: Number of steps, for the log's C(step N/M) headers.
    type: int
  log:
    description: Provision log to append to (default C(provision.log) in the VM's work directory).
    type: path
  plan:
    description:
      - The digest of the VM's whole provision plan (C(provision_digest) returned by M(vmctl.core.vmfile)).
      - With O(step), a failure then says that the VM is left unprovisioned.
      - With O(record), the plan recorded in the store.
    type: str
  record:
    description:
      - Instead of running a step, record O(plan) in the VM's store entry as V(started) (the VM is unprovisioned
        until its plan completes) or V(completed), so that C(vmctl.core.up) runs a plan that never completed,
        and warns when a completed plan changed.
      - This runs where the VM's store is, as a module (delegate the task to the VM's hypervisor, or to
        C(localhost)); the C(vmctl.core.provision) role records before the first step and after the last.
    type: str
    choices: [started, completed]
notes:
  - A step runs as an action plugin on the controller and reaches the VM through the task's connection, also for
    a VM on another hypervisor (C(vmctl.core.vm_ssh) goes through the hypervisor). The provision log is then kept
    on the controller, in C(hypervisors/<hypervisor>/<vm>/provision.log) under the data directory.
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
requirements:
  - Python package C(paramiko) on the controller (the C(vmctl.core.vm_ssh) connection)
attributes:
  check_mode:
    description: Supported for O(record), which changes nothing in check mode.
    support: partial
    details: A step always runs, also in check mode.
  diff_mode:
    description: Not supported.
    support: none
  action:
    description: A step runs on the controller and reaches the VM through the task's connection; O(record) runs as a module.
    support: full
seealso:
  - module: vmctl.core.vmfile
"""

EXAMPLES = r"""
- name: Run the steps of a VM from its VMFile record
  vmctl.core.vm_provision:
    vm: "{{ vmctl_vm.name }}"
    step: "{{ item }}"
  loop: "{{ vmctl_vm.provisions }}"
"""

RETURN = r"""
provision:
  description: The plan recorded in the store (O(record)), C(digest) and C(completed).
  returned: success, with O(record)
  type: dict
step:
  description: The step number.
  returned: success
  type: int
description:
  description: "What ran, for example C(shell: apt-get install -y nginx)."
  returned: success
  type: str
rc:
  description: Exit code of a shell step.
  returned: success
  type: int
seconds:
  description: How long the step took.
  returned: success
  type: float
log:
  description: The provision log the output was appended to (O(record) - the VM's own, on its hypervisor).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vm=dict(type="str", required=True),
            step=dict(type="dict"),
            total=dict(type="int"),
            log=dict(type="path"),
            plan=dict(type="str"),
            record=dict(type="str", choices=["started", "completed"]),
        ),
        required_by={"record": "plan"},
        mutually_exclusive=[("record", "step")],
        required_one_of=[("record", "step")],
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    p = module.params
    if p["record"] is None:  # the action plugin runs steps; a module alone has no connection to the VM
        module.fail_json(msg="vm_provision runs a step as an action plugin on the controller; as a module it only records a plan (record)")
    manager = VmManager()
    handle = manager.get(p["vm"])
    wanted = {"digest": p["plan"], "completed": p["record"] == "completed"}
    changed = handle.provision != wanted
    if changed and not module.check_mode:
        handle = manager.record_provision(p["vm"], p["plan"], completed=wanted["completed"])
    return dict(changed=changed, provision=wanted, log=handle.provision_log)


if __name__ == "__main__":
    main()
