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
  hypervisors:
    description:
      - The hosts whose stores are read, all at once, one SSH command each. Default only this host's store
        (V(localhost)).
      - An element is V(localhost) (this host's store, under O(data_dir)), the name of a host or a group of
        the inventory sources read before this one (its C(ansible_host), C(ansible_port), C(ansible_user),
        C(ansible_ssh_private_key_file) and C(ansible_python_interpreter) are used; variables from
        C(host_vars/) files are not known yet when inventories are parsed), or a mapping.
      - A mapping has C(name) (required; the hypervisor's inventory hostname), C(host) (default the name),
        C(port) (22), C(user), C(private_key_file), C(known_hosts_file) (default C(~/.ssh/known_hosts)),
        C(data_dir) (the store's directory there; default its user's C($XDG_DATA_HOME/vmctl)) and C(python)
        (default C(python3)).
      - The hypervisor's host key must be in the known_hosts file; an unknown or changed key is refused.
        Nothing of vmctl or Ansible is installed there; its Python runs this collection's engine, sent
        with the command. Each answer is checked as a local store is.
      - A hypervisor that cannot be read is a warning naming it, and the others are still listed; with
        O(strict) it is an error. A VM name already listed from an earlier hypervisor is left out, with a
        warning.
      - Each VM gets C(vmctl_hypervisor) and the group C(vmctl_hypervisor_<name>).
    type: list
    elements: raw
    default: [localhost]
  hypervisor_timeout:
    description: Seconds to log in to a hypervisor and read its store.
    type: integer
    default: 30
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

# fleet.vmctl.yml - the VMs of this host and of two hypervisors (hv2 is a host of an earlier source)
plugin: vmctl.core.vms
hypervisors:
  - localhost
  - name: hv1
    host: 192.0.2.10
    user: vmctl
    private_key_file: ~/.ssh/id_ed25519
  - hv2

# Then:  ansible-inventory -i web.vmctl.yml --graph
#        ansible -i web.vmctl.yml all -m ansible.builtin.ping
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.plugins.loader import connection_loader
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.hypervisors import LOCAL, Hypervisor, from_entry
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
        warn = None if self.get_option("strict") else (lambda message: self.display.warning("vmctl.core.vms: %s" % message))
        try:
            return vm_records(data_dir=data_dir, vmfile=vmfile, states=self.get_option("states"),
                              live_state=self.get_option("live_state"), warn=warn,
                              hypervisors=self._hypervisors(data_dir), timeout=self.get_option("hypervisor_timeout"))
        except VmctlError as err:
            raise AnsibleParserError("vmctl.core.vms: %s" % err)

    def _hypervisors(self, data_dir):
        """The O(hypervisors) as Hypervisor objects, names looked up in the inventory read so far."""
        found = []
        for entry in self.get_option("hypervisors") or [LOCAL]:
            try:
                hypervisor = from_entry(entry, data_dir)
            except VmctlError as err:
                raise AnsibleParserError("vmctl.core.vms: %s" % err)
            found.extend([hypervisor] if hypervisor else self._inventory_hypervisors(entry))
        return found

    def _inventory_hypervisors(self, name):
        group = self.inventory.groups.get(name)
        hosts = group.get_hosts() if group is not None else [self.inventory.get_host(name)]
        if hosts == [None]:
            raise AnsibleParserError("vmctl.core.vms: hypervisor %s is neither localhost nor a host or group of the "
                                     "inventory sources read before this one" % name)
        found = []
        for host in hosts:
            hostvars = host.get_vars()
            found.append(Hypervisor(host.name, host=hostvars.get("ansible_host"), port=hostvars.get("ansible_port"),
                                    user=hostvars.get("ansible_user"),
                                    private_key_file=hostvars.get("ansible_ssh_private_key_file"),
                                    known_hosts_file=hostvars.get("vmctl_known_hosts_file"),
                                    data_dir=hostvars.get("vmctl_data_dir"),
                                    python=hostvars.get("ansible_python_interpreter")))
        return found

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
