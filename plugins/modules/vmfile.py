#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vmfile
short_description: Read and check a VMFile.kdl
version_added: 0.1.0
description:
  - Parses a C(VMFile.kdl) (KDL v1 or v2 spelling), checks every node against the format described in the
    collection's C(docs/vmfile.md), resolves paths relative to the VMFile's directory (C(~) expanded) and
    returns one record per VM, ready for M(vmctl.core.vm) and the C(vmctl.core.vm_up) role.
  - Every mistake is reported at once, each with C(file:line:col), the offending line with a caret, and a hint.
author:
  - vmctl.core developers (@vmctl)
options:
  path:
    description: The VMFile. Defaults to C(VMFile.kdl) in the current directory.
    type: path
  name:
    description: Only these VMs (an error names the ones that are not defined).
    type: list
    elements: str
  current_state:
    description:
      - Also return each VM's live state on this host (RV(vms[].current_state)), read from the vmctl store
        and the VM's backend, so that a play can decide what to do without another task.
    type: bool
    default: false
notes:
  - Read-only; it never reports a change.
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: Runs the same in check mode.
    support: full
  diff_mode:
    support: N/A
seealso:
  - module: vmctl.core.vm
"""

EXAMPLES = r"""
- name: Read the VMFile next to the playbook
  vmctl.core.vmfile:
    path: "{{ playbook_dir }}/VMFile.kdl"
  register: vmf

- name: One VM only
  vmctl.core.vmfile:
    name: [web]
"""

RETURN = r"""
path:
  description: The VMFile read.
  returned: success
  type: str
vms:
  description: One record per VM, in the file's order.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
    vmfile:
      description: Absolute path of the VMFile.
      type: str
    image:
      description: Resolved local image path, or null.
      type: str
    image_url:
      description: Image URL, or null.
      type: str
    image_checksum:
      description: Checksum for the image URL, or null.
      type: str
    vcpus:
      description: Virtual CPUs (default 1).
      type: int
    memory:
      description: Memory in MiB (default 1024).
      type: int
    disk:
      description: Disk size in GiB, or null for the image's size.
      type: int
    network:
      description: C(type) (user, tap, vnic, none), C(bridge), C(name).
      type: dict
    cloud_init:
      description: C(hostname), C(ssh_key), C(user_data), C(generate_key); null without a cloud-init block.
      type: dict
    private_networks:
      description: The VM's C(private-network) nodes, each C(name) (the switch) and C(address) (or null).
      type: list
      elements: dict
    ssh:
      description: >-
        C(user), C(private_key), C(boot_timeout) and C(stall_timeout) (the readiness wait's deadline and stall
        window in seconds, null for the defaults); null without an ssh block.
      type: dict
    current_state:
      description: >-
        The VM's live state on this host (C(absent) when it does not exist), when O(current_state=true).
      type: str
      sample: running
    provision_digest:
      description: >-
        A digest of the VM's provision plan (its steps and the contents of the files they upload); C(up) records
        it when the plan completes.
      type: str
    provision_status:
      description: >-
        When O(current_state=true): V(none) (no steps), V(pending) (the plan never completed on this VM, so C(up)
        runs it), V(done) (completed, same plan) or V(changed) (completed, but the plan changed since: a warning
        names C(provision)).
      type: str
      sample: done
    provisions:
      description: >-
        Steps with C(step) (from 1), C(type), C(inline), C(script) or C(source) and C(destination), and
        C(description) (e.g. C(shell: make), C(file: /abs/src -> /dest)).
      type: list
      elements: dict
    port_forwards:
      description: The C(port-forward) nodes - C(host), C(guest), C(protocol) (tcp, udp), C(address) (default 127.0.0.1).
      type: list
      elements: dict
    shares:
      description: The C(share) nodes - C(source) (resolved from the VMFile's folder), C(guest), C(readonly).
      type: list
      elements: dict
    firmware:
      description: V(bios) (default) or V(uefi).
      type: str
    kernel:
      description: The C(kernel) node's resolved path (direct kernel boot), or null.
      type: str
    initrd:
      description: The C(kernel) node's C(initrd), or null.
      type: str
    kernel_append:
      description: The C(kernel) node's C(append) (the kernel command line), or null.
      type: str
    hypervisor:
      description: The C(hypervisor) node (the inventory host that runs the VM), or null for this host.
      type: str
    backend:
      description: >-
        The C(backend) node - V(auto) (default; the platform of the host that runs the VM decides: QEMU on Linux,
        Propolis on illumos), V(qemu) or V(propolis).
      type: str
problems:
  description: On failure, every problem with C(file), C(line), C(col), C(message), C(hint), C(node_path).
  returned: failure
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module
from ansible_collections.vmctl.core.plugins.module_utils.guest.provision import provision_status


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path"), name=dict(type="list", elements="str"),
                           current_state=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    path = vmfile.find(module.params["path"])
    vms = vmfile.load(path, module.params["name"])
    if module.params["current_state"]:
        manager = VmManager()
        handles = manager.find_all([vm["name"] for vm in vms])  # one store read for the whole VMFile
        for vm in vms:
            handle = handles[vm["name"]]
            vm["current_state"] = manager.state_of(handle)
            vm["provision_status"] = provision_status(handle.provision if handle else None, vm["provisions"],
                                                      vm["provision_digest"])
            if vm["provision_status"] == "changed" and vm["current_state"] in ("running", "suspended"):
                module.warn("VM %s: its provision steps changed since they last completed; up does not run them "
                            "again on a running VM: run vmctl provision --name %s (ansible-playbook vmctl.core.provision "
                            "-e name=%s) to apply them" % (vm["name"], vm["name"], vm["name"]))
    return dict(changed=False, path=path, vms=vms)


if __name__ == "__main__":
    main()
