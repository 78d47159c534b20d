# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ``vmctl.core.vms`` inventory shows: one record per VM in the store (plain data, cacheable).

A record is ``{"name", "hostvars", "groups"}``. Host variables hand the connection settings to
``vmctl.core.vm_ssh`` (``ansible_host``/``ansible_port``/``ansible_user``/
``ansible_ssh_private_key_file`` and the plugin's own ``ansible_vmctl_vm_name``/
``ansible_vmctl_known_hosts_file``/``ansible_vmctl_data_dir``) and describe the VM
(``vmctl_*``). The inventory plugin marks all of it unsafe.
"""

from __future__ import annotations

__metaclass__ = type

import os
import re

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

CONNECTION = "vmctl.core.vm_ssh"


def group_name(prefix, value):
    """``vmctl_<prefix>_<value>`` with anything but letters, digits and ``_`` replaced by ``_``."""
    return "vmctl_%s_%s" % (prefix, re.sub(r"[^A-Za-z0-9_]", "_", str(value).lower()))


def vm_records(data_dir=None, vmfile=None, states=None, live_state=True):
    """Records for the VMs in the store under ``data_dir`` (default ``$XDG_DATA_HOME/vmctl``), filtered."""
    store = VmStore(os.path.join(os.path.expanduser(data_dir), "vms.json") if data_dir else None)
    wanted_vmfile = os.path.abspath(os.path.expanduser(vmfile)) if vmfile else None
    manager = VmManager(store)
    records = []
    for name, handle in sorted(store.list().items()):
        if wanted_vmfile and (not handle.vmfile or os.path.abspath(handle.vmfile) != wanted_vmfile):
            continue
        state, state_error = _state(manager, handle, live_state)
        if states and state not in states:
            continue
        records.append(_record(manager, name, handle, state, state_error, data_dir))
    return records


def _state(manager, handle, live):
    """``(state, error message or None)``: the manager's live answer, or the recorded state if it cannot tell."""
    if not live:
        return handle.state, None
    try:
        state, problem = manager.observe(handle)
    except VmctlError as err:
        return handle.state, str(err)
    return state, str(problem) if problem else None


def _record(manager, name, handle, state, state_error, data_dir):
    host, port = manager.endpoint(handle)
    hostvars = {
        "ansible_connection": CONNECTION,
        "ansible_python_interpreter": "auto_silent",  # the guest's own python, found without a warning
        "ansible_user": handle.ssh_user or "vm",
        "ansible_vmctl_vm_name": name,
        "vmctl_state": state,
        "vmctl_backend": handle.backend,
        "vmctl_vcpus": handle.vcpus,
        "vmctl_memory_mb": handle.memory_mb,
        "vmctl_disk_gb": handle.disk_gb,
        "vmctl_network": handle.network.type,
        "vmctl_network_bridge": handle.network.bridge,
        "vmctl_mac": handle.mac_addr,
        "vmctl_work_dir": handle.work_dir,
        "vmctl_ssh_host_port": handle.ssh_host_port,
        "vmctl_hostname": handle.hostname,
        "vmctl_vmfile": handle.vmfile,
        "vmctl_console_log": handle.console_log,
        "vmctl_id": handle.id,
        "vmctl_private_networks": [dict(nic) for nic in handle.private_networks or ()],
        "vmctl_private_addresses": {nic["name"]: nic["address"].split("/")[0]
                                    for nic in handle.private_networks or () if nic.get("address")},
    }
    if host:
        hostvars["ansible_host"] = host
    if port:
        hostvars["ansible_port"] = port
    if handle.private_key_path:
        hostvars["ansible_ssh_private_key_file"] = handle.private_key_path
    if handle.known_hosts:
        hostvars["ansible_vmctl_known_hosts_file"] = handle.known_hosts
    if data_dir:
        hostvars["ansible_vmctl_data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    if state_error:
        hostvars["vmctl_state_error"] = state_error
    groups = [group_name("state", state), group_name("backend", handle.backend), group_name("network", handle.network.type)]
    groups += [group_name("private_network", nic["name"]) for nic in handle.private_networks or ()]
    return {"name": name, "hostvars": hostvars, "groups": groups}


__all__ = ["vm_records", "group_name", "VmState"]
