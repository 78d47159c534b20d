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
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState
from ansible_collections.vmctl.core.plugins.plugin_utils.hypervisors import LOCAL, Hypervisor, read_views

CONNECTION = "vmctl.core.vm_ssh"


def group_name(prefix, value):
    """``vmctl_<prefix>_<value>`` with anything but letters, digits and ``_`` replaced by ``_``."""
    return "vmctl_%s_%s" % (prefix, re.sub(r"[^A-Za-z0-9_]", "_", str(value).lower()))


def vm_records(data_dir=None, vmfile=None, states=None, live_state=True, hypervisors=None, warn=None, timeout=30):
    """Records for the VMs in the stores of ``hypervisors`` (default: this host's store under ``data_dir``, that is
    ``$XDG_DATA_HOME/vmctl``), filtered. Every hypervisor is read at once; one that cannot be read is passed to
    ``warn(message)`` with the others still listed, or raised if ``warn`` is None (strict). Bad records and a VM
    name already seen on an earlier hypervisor are warned about too, and left out."""
    hypervisors = hypervisors or [Hypervisor(LOCAL, data_dir=data_dir)]
    wanted_vmfile = os.path.abspath(os.path.expanduser(vmfile)) if vmfile else None
    records, seen = [], {}
    for hypervisor, views, bad, error in read_views(hypervisors, live_state=live_state, timeout=timeout):
        if error is not None:
            if warn is None:
                raise error
            warn("%s (its VMs are not listed)" % error)
        for name, message in sorted(bad.items()):
            if warn is not None:
                warn("VM %s on %s is not listed: %s" % (name, hypervisor.name, message))
        for view in views:
            name, handle = view["name"], view["handle"]
            if wanted_vmfile and (not handle.vmfile or os.path.abspath(handle.vmfile) != wanted_vmfile):
                continue
            if states and view["state"] not in states:
                continue
            if name in seen:
                message = "VM %s on %s is not listed: %s has a VM of that name" % (name, hypervisor.name, seen[name])
                if warn is None:
                    raise VmctlError(message, hint="Give VMs names that are unique across the hypervisors")
                warn(message)
                continue
            seen[name] = hypervisor.name
            records.append(_record(view, hypervisor))
    return records


def _record(view, hypervisor):
    name, handle, state, state_error = view["name"], view["handle"], view["state"], view["state_error"]
    host, port, data_dir = view["host"], view["port"], hypervisor.data_dir
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
        "vmctl_port_forwards": handle.port_forwards,  # issue 14
        "vmctl_shares": handle.shares,
        "vmctl_firmware": handle.firmware,
    }
    if host:
        hostvars["ansible_host"] = host
    if port:
        hostvars["ansible_port"] = port
    if handle.private_key_path:
        hostvars["ansible_ssh_private_key_file"] = handle.private_key_path
    if handle.known_hosts:
        hostvars["ansible_vmctl_known_hosts_file"] = handle.known_hosts
    if data_dir and hypervisor.local:
        hostvars["ansible_vmctl_data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    hostvars.update(hypervisor.hostvars())
    if state_error:
        hostvars["vmctl_state_error"] = state_error
    groups = [group_name("state", state), group_name("backend", handle.backend), group_name("network", handle.network.type),
              group_name("hypervisor", hypervisor.name)]
    return {"name": name, "hostvars": hostvars, "groups": groups}


__all__ = ["vm_records", "group_name", "VmState"]
