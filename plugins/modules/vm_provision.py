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
    description: One element of C(provisions) returned by M(vmctl.core.vmfile) - C(step), C(type), and C(inline), C(script) or C(source) and C(destination).
    type: dict
    required: true
  total:
    description: Number of steps, for the log's C(step N/M) headers.
    type: int
  log:
    description: Provision log to append to (default C(provision.log) in the VM's work directory).
    type: path
  plan:
    description:
      - The digest of the VM's whole provision plan (C(provision_digest) returned by M(vmctl.core.vmfile)).
      - When set, step 1 records the plan in the store as started (the VM is unprovisioned), and the last step
        (O(step) number equal to O(total)) records it as completed, so that C(vmctl.core.up) runs a plan that
        never completed, and warns when a completed plan changed.
    type: str
notes:
  - This runs as an action plugin on the controller, which must be the VM host.
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
requirements:
  - Python package C(paramiko) on the controller (the C(vmctl.core.vm_ssh) connection)
attributes:
  check_mode:
    description: Not supported; the step always runs.
    support: none
  diff_mode:
    description: Not supported.
    support: none
  action:
    description: Runs on the controller and reaches the VM through the task's connection.
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
  description: The provision log the output was appended to.
  returned: always
  type: str
"""
