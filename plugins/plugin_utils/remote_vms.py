# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMs on other hypervisors, for ``vmctl ssh``, ``ssh-config`` and ``cp`` (controller-only code).

``read_inventory(path)`` reads the hypervisors of a ``vms`` inventory file (``plugin: vmctl.core.vms``) with the
plugin's own parsing of its ``hypervisors`` option. ``locate`` finds a VM by name in their stores (every store read
at once, one SSH command each, as the inventory reads them). ``fetch_logins`` copies VMs' private keys and
known_hosts files from their hypervisor, over its checked SSH login (SFTP), into a private cache on the controller
(``$XDG_DATA_HOME/vmctl/hypervisors/<hypervisor>/<vm>/``, 0700/0600), for OpenSSH to use through ProxyJump.
"""

from __future__ import annotations

__metaclass__ = type

import os
import tempfile

from ansible_collections.vmctl.core.plugins.module_utils import checks, paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidState, UsageError, VmctlError, VmNotFound
from ansible_collections.vmctl.core.plugins.plugin_utils.hypervisors import HypervisorError, from_entry, read_views

PLUGIN_NAMES = ("vmctl.core.vms", "vms")
CACHE_FILES = {"private_key": "id_vm", "known_hosts": "known_hosts"}


class Inventory:
    """The hypervisors of a ``vms`` inventory file, in its order, with its ``hypervisor_timeout`` and ``strict``."""

    def __init__(self, path, hypervisors, timeout=30, strict=False):
        self.path, self.hypervisors, self.timeout, self.strict = path, hypervisors, timeout, strict

    @property
    def names(self):
        return ", ".join(hv.name for hv in self.hypervisors)


def read_inventory(path):
    """The Inventory of the ``vms`` inventory file at ``path``: ``localhost`` and mappings (a name of another
    inventory source needs that source, which only Ansible reads: write it as a mapping here)."""
    import yaml
    try:
        with open(os.path.expanduser(path)) as f:
            config = yaml.safe_load(f)
    except OSError as err:
        raise UsageError("cannot read inventory %s: %s" % (path, err.strerror),
                         hint="Give a vms inventory file (plugin: vmctl.core.vms) with --inventory")
    except yaml.YAMLError as err:
        raise UsageError("inventory %s is not YAML: %s" % (path, str(err).splitlines()[0]))
    if not isinstance(config, dict) or config.get("plugin") not in PLUGIN_NAMES:
        raise UsageError("inventory %s is not a vms inventory (plugin: vmctl.core.vms)" % path,
                         hint="vmctl reads the hypervisors option of a vmctl.core.vms inventory file")
    base = os.path.dirname(os.path.abspath(path))
    data_dir = os.path.join(base, os.path.expanduser(config["data_dir"])) if config.get("data_dir") else None
    found = []
    for entry in config.get("hypervisors") or ["localhost"]:
        try:
            hypervisor = from_entry(entry, data_dir)
        except VmctlError as err:
            raise UsageError("inventory %s: %s" % (path, err.message))
        if hypervisor is None:
            raise UsageError("inventory %s: hypervisor %s is a host of another inventory source, which vmctl does not "
                             "read" % (path, entry),
                             hint="Write it as a mapping: name, host, user, private_key_file, known_hosts_file")
        checks.check_hypervisor(hypervisor.name)
        found.append(hypervisor)
    timeout = checks.whole_number("hypervisor_timeout", config.get("hypervisor_timeout", 30), 1, 3600)
    return Inventory(path, found, timeout=timeout, strict=bool(config.get("strict")))


class Located:
    """A VM found on ``hypervisor``: its store ``view`` (``handle``, ``state``, ``host``, ``port``)."""

    def __init__(self, hypervisor, view):
        self.hypervisor, self.view = hypervisor, view
        self.name, self.handle = view["name"], view["handle"]

    @property
    def local(self):
        return self.hypervisor.local

    def jump(self):
        hv = self.hypervisor
        return {"name": hv.name, "host": hv.host, "port": hv.port, "user": hv.user,
                "private_key_file": hv.private_key_file, "known_hosts_file": hv.known_hosts_file}

    def require_running(self):
        if self.view["state"] != "running":
            raise InvalidState("VM %s on hypervisor %s is %s: no SSH to it" % (self.name, self.hypervisor.name, self.view["state"]),
                               hint="Start it first (vmctl.core.vm_state name=%s state=running, delegated to %s)"
                                    % (self.name, self.hypervisor.name), name=self.name, state=self.view["state"])

    def target(self):
        """The SshTarget through the hypervisor (the VM's key and pins read there at login)."""
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import resolve_target
        handle = self.handle
        target, _none = resolve_target(self.name, host=self.view["host"], port=self.view["port"], user=handle.ssh_user,
                                       private_key_path=handle.private_key_path, known_hosts=handle.known_hosts,
                                       jump=self.jump(), cloud_init=bool(handle.cloud_init))
        return target

    def cache_dir(self):
        return os.path.join(paths.data_dir(), "hypervisors", checks.check_hypervisor(self.hypervisor.name),
                            checks.validate_name(self.name))


def read_all(inventory, live_state=True, warn=None):
    """``[Located]`` of every VM in the inventory's stores (the first of a name wins, as in the inventory). A hypervisor
    that cannot be read is passed to ``warn`` (its VMs left out), or raised when the inventory is strict or ``warn`` None."""
    found, seen = [], set()
    for hypervisor, views, _bad, error in read_views(inventory.hypervisors, live_state=live_state, timeout=inventory.timeout):
        if error is not None:
            if warn is None or inventory.strict:
                raise error
            warn("%s (its VMs are left out)" % error)
        for view in views:
            if view["name"] not in seen:
                seen.add(view["name"])
                found.append(Located(hypervisor, view))
    return found


def locate(inventory, names):
    """``[Located]`` for ``names``, every store read once: VmNotFound naming the hypervisors searched for a VM in none
    of them, or HypervisorError naming one that could not be read (the VM may be there)."""
    for name in names:
        checks.validate_name(name)
    unreachable = []
    found = {vm.name: vm for vm in read_all(inventory, warn=unreachable.append)}
    missing = [name for name in names if name not in found]
    if missing and unreachable:
        raise HypervisorError("VM %s is not on any hypervisor that answered, and %s" % (", ".join(missing), "; ".join(unreachable)),
                              hint="Bring the hypervisor back, or check its SSH settings in %s" % inventory.path, name=missing[0])
    if missing:
        raise VmNotFound("VM %s is in none of the stores of the hypervisors %s (from %s)" % (
            ", ".join(missing), inventory.names, inventory.path),
            hint="ansible-inventory -i %s --graph lists the VMs" % inventory.path, name=missing[0])
    return [found[name] for name in names]


def fetch_logins(located, timeout=30):
    """Copy the private key and known_hosts of each VM in ``located`` (all on one hypervisor) from the hypervisor into
    the controller's private cache, over one checked login; ``{name: {"private_key": path, "known_hosts": path}}``.
    Refreshed each time: the files are replaced whole (0600, in a 0700 folder)."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import Retryable, SshSession, _Hop
    if not located:
        return {}
    first = located[0]
    target = first.target()
    SshSession.credentials(target)  # the hypervisor's settings checked before any traffic
    try:
        hop = _Hop.connect(target, timeout)
    except Retryable as err:  # its message names the hypervisor and its address
        raise HypervisorError(err.args[0], hint=err.hint or "Check that the hypervisor is up and reachable over SSH",
                              name=first.hypervisor.name)
    try:
        files = {}
        for vm in located:
            folder = paths.ensure_private_dir(vm.cache_dir())
            files[vm.name] = {}
            for what, label in (("private_key", "private key"), ("known_hosts", "known_hosts file")):
                source = getattr(vm.handle, "private_key_path" if what == "private_key" else "known_hosts")
                if not source:
                    raise VmctlError("VM %s on hypervisor %s has no %s" % (vm.name, vm.hypervisor.name, label), name=vm.name)
                files[vm.name][what] = write_private(os.path.join(folder, CACHE_FILES[what]), hop.read(source, label))
        return files
    finally:
        hop.close()


def write_private(path, data):
    """``data`` into ``path``, mode 0600, replacing it whole (never a half-written key)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


__all__ = ["Inventory", "Located", "read_inventory", "read_all", "locate", "fetch_logins", "write_private"]
