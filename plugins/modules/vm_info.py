#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_info
short_description: Show vmctl virtual machines
version_added: 0.1.0
description:
  - Everything C(vmctl list) and C(vmctl status) show about one or all VMs, with the live state
    read from the hypervisor and the details needed to reach each VM over SSH.
author:
  - vmctl.core developers (@vmctl)
options:
  name:
    description: Only this VM (an error if it does not exist). All VMs when omitted.
    type: str
notes:
  - Read-only; check mode is supported and changes nothing.
seealso:
  - module: vmctl.core.vm
  - module: vmctl.core.vm_state
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    support: N/A
"""

EXAMPLES = r"""
- name: All VMs
  vmctl.core.vm_info:
  register: vms

- name: How to reach one
  vmctl.core.vm_info:
    name: web
  register: web

- ansible.builtin.debug:
    msg: "ssh -i {{ web.vms[0].ssh.private_key }} -p {{ web.vms[0].ssh.port }} {{ web.vms[0].ssh.user }}@{{ web.vms[0].ssh.host }}"
"""

RETURN = r"""
data_dir:
  description:
    - The vmctl data directory of the host the module ran on (its store, VM folders, image cache, and in
      C(staged/<vm>/) the files a controller staged there for a VM; see the P(vmctl.core.staged#filter) filter).
  returned: always
  type: str
  sample: /home/me/.local/share/vmctl
vms:
  description: One entry per VM, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
    state:
      description: Live state (preparing, prepared, running, suspended, stopped, failed).
      type: str
    backend:
      description: Hypervisor backend.
      type: str
    vcpus:
      description: Virtual CPUs.
      type: int
    memory_mb:
      description: Memory in MiB.
      type: int
    network:
      description: Network type and its bridge or VNIC.
      type: dict
    private_networks:
      description: >-
        The VM's NICs on private switches, each with C(name) (the switch), C(address) (or null), C(mac),
        C(switch) (the switch's id, its folder under C($XDG_DATA_HOME/vmctl/switches/)) and, for a running VM,
        C(link) - V(up), V(down) (its switch was killed) or V(cut off) (the switch was started again since the VM
        joined; the VM rejoins at its next start) - else null.
      type: list
      elements: dict
    ssh:
      description: C(host), C(port), C(user), C(private_key) and C(known_hosts) to log in (null without SSH settings).
      type: dict
    console_log:
      description: File with everything the guest printed on its serial console.
      type: str
    work_dir:
      description: The VM's directory (overlay, seed ISO, keys, sockets, logs).
      type: str
    provision_log:
      description: File the output of the VM's provision steps is appended to (it may not exist yet).
      type: str
    provision:
      description: >-
        The VM's provision plan as C(up) or C(provision) last ran it - C(digest) (of the steps and the files they
        upload) and C(completed) (false while it runs, and after a failed or interrupted step) - or null when no
        plan has run on it.
      type: dict
      sample: {"digest": "sha256:3b1f…", "completed": true}
    port_forwards:
      description: Host ports forwarded to the guest (C(host), C(guest), C(protocol), C(address)), as recorded; a running VM
        uses the forwards it was started with.
      type: list
      elements: dict
      sample: [{"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}]
    shares:
      description: Host folders shared with the guest (C(source), C(guest), C(readonly)).
      type: list
      elements: dict
    firmware:
      description: V(bios) or V(uefi).
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module


def main():
    module = AnsibleModule(argument_spec=dict(name=dict(type="str")), supports_check_mode=True)
    run_module(module, _run)


def _run(module):
    manager = VmManager()
    names = [module.params["name"]] if module.params["name"] else manager.list()
    return dict(changed=False, vms=[manager.describe(name) for name in sorted(names)], data_dir=manager.store.data_dir)


if __name__ == "__main__":
    main()
