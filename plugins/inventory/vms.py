# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
name: vms
short_description: The VMs in the vmctl store as hosts, reached with vmctl.core.vm_ssh
version_added: 0.1.0
author:
  - vmctl.core developers (@vmctl)
description:
  - Makes every VM in the vmctl store (C($XDG_DATA_HOME/vmctl/vms.json)) a host named after the VM, with
    C(ansible_connection=vmctl.core.vm_ssh) and the address, port, user, private key and known_hosts
    file to log in with, and C(ansible_python_interpreter=auto_silent) (the guest's python is discovered;
    set it with O(compose) to pin one).
  - Host variables C(vmctl_*) describe the VM; C(vmctl_state) is the live state asked from the VM's
    backend (QEMU's monitor), not only the one recorded.
  - Groups C(vmctl_state_<state>), C(vmctl_backend_<backend>) and C(vmctl_network_<type>), plus whatever
    O(groups) and O(keyed_groups) make.
  - Every value read from the store is marked unsafe, so a VM name, host name or user containing
    C({{ }}) is never rendered as a template.
  - Source files must end in C(.vmctl.yml) or C(.vmctl.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a source for this plugin.
    required: true
    type: string
    choices: ["vmctl.core.vms", "vms"]
  data_dir:
    description:
      - vmctl's data directory (the store is C(vms.json) in it). Default C($XDG_DATA_HOME/vmctl), that is
        C(~/.local/share/vmctl). A relative path is relative to the inventory file's directory.
    type: string
  vmfile:
    description:
      - Keep only the VMs created from this VMFile. A relative path is relative to the inventory file's directory.
    type: string
  states:
    description:
      - Keep only VMs in these (live) states. Default all.
    type: list
    elements: string
    choices: [preparing, prepared, running, suspended, stopped, failed, destroyed]
    default: []
  live_state:
    description:
      - Ask each VM's backend for its state. With V(false) the state recorded in the store is used
        (no process or monitor is queried).
    type: boolean
    default: true
"""

EXAMPLES = r"""
# vms.vmctl.yml - every VM, grouped by state, is this one line:
#   plugin: vmctl.core.vms

# web.vmctl.yml - the running VMs of one project, with extra groups
plugin: vmctl.core.vms
vmfile: ./VMFile.kdl
states: [running]
keyed_groups:
  - key: vmctl_memory_mb | string
    prefix: mem
groups:
  big: vmctl_vcpus >= 4
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"

# Then:  ansible-inventory -i web.vmctl.yml --graph
#        ansible -i web.vmctl.yml all -m ansible.builtin.ping
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.plugins.loader import connection_loader
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.inventory import CONNECTION, vm_records


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "vmctl.core.vms"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith((".vmctl.yml", ".vmctl.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        records = None
        if use_cache and cache:
            try:
                records = self._cache[cache_key]
            except KeyError:
                records = None
        if records is None:
            records = self._read_store(path)
            if use_cache:
                self._cache[cache_key] = records
        self._populate(records)
        if records:
            self._preload_connection_plugin()

    def _preload_connection_plugin(self):
        """Load vmctl.core.vm_ssh in this controller process: task workers are forked from it and inherit
        the loaded plugin, instead of each compiling it again (ansible-core preloads only its own plugins)."""
        try:
            connection_loader.get(CONNECTION, class_only=True)
        except Exception as err:  # only an optimization: the worker loads it itself then
            self.display.vvv("vmctl.core.vms: could not preload %s: %s" % (CONNECTION, err))

    def _read_store(self, path):
        base = os.path.dirname(os.path.abspath(path))
        vmfile, data_dir = [os.path.join(base, os.path.expanduser(value)) if value else None
                            for value in (self.get_option("vmfile"), self.get_option("data_dir"))]
        try:
            return vm_records(data_dir=data_dir, vmfile=vmfile, states=self.get_option("states"),
                              live_state=self.get_option("live_state"))
        except VmctlError as err:
            raise AnsibleParserError("vmctl.core.vms: %s" % err)

    def _populate(self, records):
        strict = self.get_option("strict")
        for record in records:
            name = self.inventory.add_host(wrap_var(record["name"]))
            hostvars = wrap_var(record["hostvars"])
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            for group in record["groups"]:
                self.inventory.add_child(self.inventory.add_group(wrap_var(group)), name)
            variables = self.inventory.get_host(name).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)
