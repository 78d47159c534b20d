# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one backend contract every hypervisor implements (the guide's ``Hypervisor`` trait)."""

from __future__ import annotations

__metaclass__ = type

import collections
import errno
import socket
import uuid

from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit, host_keys, keys, shares
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.errors import ConsoleFailed, ConsoleUnsupported, InvalidState, SnapshotUnsupported
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState
from ansible_collections.vmctl.core.plugins.module_utils.store import atomic_write

# The SSH wait's default deadline, in seconds, by how the guest's CPU runs: Lima waits up to 10 minutes, Vagrant 5.
SSH_DEADLINE = {"tcg": 600, "kvm": 300}

# kind: "unix" (path), "websocket" (url) or "none"
ConsoleEndpoint = collections.namedtuple("ConsoleEndpoint", "kind address")


class Backend:
    """prepare / start / stop / suspend / resume / destroy / state / guest_ip / console_endpoint.

    ``allocate`` is called inside the store's lock with the store's records (``known.raw_items()``:
    ``(name, record dict)`` of every VM, cheap to scan), so that what it picks (SSH port, MAC address)
    is unique among VMs; ``prepare`` then creates the files.
    """

    tag = None
    disk_format = None  # the format of the VM's own disk file (``overlay_path``) for qemu-img; None: detected

    def new_id(self):
        """A new VM's id (its instance id in cloud-init's meta-data)."""
        return uuid.uuid4().hex[:12]

    def allocate(self, spec, handle, known):
        return handle

    def before_start(self, handle, transaction):
        """The handle to boot a VM that is not running. ``transaction()`` opens the store (as ``allocate``'s
        ``known``) for a backend that must change what it allocated; most need nothing."""
        return handle

    def disk_gb(self, handle):
        """The size of the VM's disk in GB, 0 when it cannot be read (a missing disk is reported when it matters)."""
        try:
            return qemu_img.info(handle.overlay_path).get("virtual-size", 0) / 1024.0 ** 3
        except Exception:  # pylint: disable=broad-except
            return 0

    def resize_disk(self, handle, size_gb):
        """Grow the VM's disk to ``size_gb`` (the VM is not running)."""
        qemu_img.resize(handle.overlay_path, size_gb, self.disk_format)

    def prepare(self, spec, handle):
        raise NotImplementedError

    def start(self, handle):
        raise NotImplementedError

    def stop(self, handle, timeout=30):
        raise NotImplementedError

    def suspend(self, handle):
        raise NotImplementedError

    def resume(self, handle):
        raise NotImplementedError

    def destroy(self, handle):
        raise NotImplementedError

    def reap(self, work_dir):
        """End what of this backend still runs for a VM whose record is unusable, found from its work dir alone
        (never from the record). Returns the pids ended; by default there is nothing this backend can find."""
        return []

    def state(self, handle):
        raise NotImplementedError

    def pid(self, handle):
        """The VM's live process id, as far as this backend knows one (the stored one by default)."""
        return handle.pid

    def ssh_deadline(self, handle):
        """The default deadline of the SSH wait for this VM (an emulated CPU's, unless the backend knows better)."""
        return SSH_DEADLINE["tcg"]

    def alive(self, handle):
        """Whether the VM still runs, as cheaply as the backend can tell (a wait asks every few seconds)."""
        return self.state(handle) == VmState.RUNNING

    def guest_ip(self, handle, timeout=0):
        raise NotImplementedError

    def private_links(self, handle):
        """``{private network name: "up" | "down" | "cut off"}`` of a running VM (none by default)."""
        return {}

    def console_endpoint(self, handle):
        return ConsoleEndpoint("none", None)

    def open_console(self, handle):
        """A connected stream on the serial console for a relay (``fileno``, ``recv``, ``sendall``,
        ``close``): here a unix socket endpoint; backends with other endpoints override it."""
        endpoint = self.console_endpoint(handle)
        if endpoint.kind != "unix":
            raise ConsoleUnsupported("VM %s: the %s backend has no serial console to attach to" % (handle.name, handle.backend),
                                     name=handle.name,
                                     hint="Read the console log instead (vmctl log %s --console)" % handle.name)
        return connect_unix(endpoint.address, handle.name)

    # --- snapshots (in the VM's own disk; a backend without them refuses each one clearly) -------------
    def snapshot_list(self, handle):
        """``{tag: {"ram", "vm_state_size", "created_at"}}``: the snapshots the VM's disk holds, oldest first."""
        raise self._no_snapshots(handle)

    def snapshot_create(self, handle, tag):
        """Take snapshot ``tag`` (live with RAM when the VM runs, disk-only when stopped); returns its record."""
        raise self._no_snapshots(handle)

    def snapshot_revert(self, handle, tag, ram):
        """Return the VM to snapshot ``tag`` (``ram``: it holds RAM); returns ``(handle, details)``."""
        raise self._no_snapshots(handle)

    def snapshot_delete(self, handle, tag):
        raise self._no_snapshots(handle)

    @staticmethod
    def _no_snapshots(handle):
        return SnapshotUnsupported("VM %s: the %s backend has no snapshots" % (handle.name, handle.backend), name=handle.name)


def connect_unix(path, vm):
    """A connected socket to the console socket ``path`` of VM ``vm``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise InvalidState("VM %s has no serial console to attach to (%s: %s)" % (vm, path, err.strerror),
                               hint="Start it first (vmctl start %s)" % vm, name=vm)
        raise ConsoleFailed("VM %s: cannot attach to its console %s: %s" % (vm, path, err.strerror), name=vm)
    return sock


def prepare_cloud_init(spec, handle, files, network_config=None):
    """Write the NoCloud seed ISO (and the keys it needs) for ``spec``; returns the handle changes.

    ``files`` names the paths: ``seed``, ``user_key``, ``host_key``, ``known_hosts``. Without the
    user's own user-data, the guest gets a host key we generated, and ``known_hosts`` pins it; with
    it, the keys come from the console (host_keys.py).
    """
    ci = spec.cloud_init
    ssh = spec.ssh
    hostname = ci.hostname or spec.name
    changes = {"cloud_init": True, "hostname": hostname, "seed_iso_path": files["seed"]}
    if ci.user_data is not None:
        user_data = ci.user_data  # the user's own cloud-config, untouched; its host keys come from the console
    else:
        user = ssh.user if ssh else "vm"
        authorized = list(ci.ssh_public_keys)
        if ci.generate_key:
            pair = keys.load_or_create(files["user_key"], "vmctl-%s" % spec.name)
            authorized.insert(0, pair.public_openssh)
            changes["private_key_path"] = files["user_key"]
        host_key = keys.load_or_create(files["host_key"], "vmctl-host-%s" % spec.name)
        user_data = cloudinit.build_user_data(user, authorized, hostname, host_key, mounts=shares.mounts(spec.shares))
        changes["known_hosts"] = files["known_hosts"]
        write_known_hosts(handle, files["known_hosts"], host_key.public_openssh)
    meta_data = cloudinit.build_meta_data(handle.id, hostname)
    cloudinit.write_seed_iso(files["seed"], user_data, meta_data, network_config)
    return changes


def write_known_hosts(handle, path, host_public):
    # Any address too (TAP guests): the key is what we pin, the address is discovered later.
    atomic_write(path, host_keys.known_hosts_text(handle.ssh_host_port, [host_public]), mode=0o644)
