# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where vmctl keeps its state: ``$XDG_DATA_HOME/vmctl`` (default ``~/.local/share/vmctl``)."""

from __future__ import annotations

__metaclass__ = type

import os

from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, UnsafePath


def data_dir():
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "vmctl")


def store_path():
    return os.path.join(data_dir(), "vms.json")


def images_dir():
    return os.path.join(data_dir(), "images")


def vms_dir():
    return os.path.join(data_dir(), "vms")


def vm_dir(name):
    return os.path.join(vms_dir(), name)


def remote_provision_log(hypervisor, name):
    """The controller's copy of the provision log of VM ``name`` on another ``hypervisor`` (both names checked)."""
    return os.path.join(data_dir(), "hypervisors", hypervisor, name, VM_FILES["provision_log"])


def ensure_private_dir(path):
    """Create ``path`` (and parents) with mode 0700 for the leaf; return it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# --- a VM's own files: always derived from its (validated) name under the data dir ------------------
# A path stored in vms.json is never used to find, write or remove a file (see store.derive_paths).

VM_FILES = {
    "overlay": "overlay.qcow2", "disk": "disk0.raw", "seed": "seed.iso", "qmp": "qmp.sock",
    "console": "console.sock", "console_log": "console.log", "pidfile": "qemu.pid",
    "user_key": "id_ed25519_generated", "host_key": "ssh_host_ed25519_key", "known_hosts": "known_hosts",
    "provision_log": "provision.log", "vnc": "vnc.sock", "vnc_password": "vnc.password",
}


# Handle field -> the VM files it may name (the first is the default; the propolis backend keeps a raw
# ``disk`` where QEMU has its ``overlay``). The store derives these fields from the table, never trusts them.
HANDLE_FILES = {
    "overlay_path": ("overlay", "disk"), "seed_iso_path": ("seed",), "qmp_socket": ("qmp",),
    "console_socket": ("console",), "pidfile": ("pidfile",), "console_log": ("console_log",),
    "known_hosts": ("known_hosts",),
}


def vm_dir_in(data_dir_path, name):
    """``<data_dir>/vms/<name>`` (``name`` must be validated by the caller)."""
    return os.path.join(data_dir_path, "vms", name)


def vm_files(work_dir):
    """Every file of the VM whose directory is ``work_dir``, by role (see VM_FILES)."""
    return {role: os.path.join(work_dir, base) for role, base in VM_FILES.items()}


def _refuse(path, what, hint="Remove it (it was not made by vmctl), then run the command again"):
    raise UnsafePath("%s %s" % (path, what), hint=hint, path=path)


def _private_dir_nofollow(path):
    """Create ``path`` (one level) mode 0700 if missing; refuse a symlink or a non-directory; chmod 0700 through an fd."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        if os.path.islink(path):
            _refuse(path, "is a symbolic link; vmctl never follows one below its data directory")
        _refuse(path, "is not a directory (%s)" % err.strerror)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            _refuse(path, "belongs to another user", hint="vmctl keeps each VM's files in a directory of its own user")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


# A UNIX socket's path must fit sockaddr_un.sun_path (108 bytes with its NUL): QEMU's sockets are in the VM's folder.
MAX_SOCKET_PATH = 107


def check_socket_room(work_dir):
    """Refuse a VM folder too deep for its sockets (QEMU would fail to start with "UNIX socket path is too long")."""
    longest = max((name for name in VM_FILES.values() if name.endswith(".sock")), key=len)
    path = os.path.join(work_dir, longest)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise InvalidSpec("the VM's folder %s is too deep for its sockets: %s is %d bytes, and a UNIX socket path "
                          "holds at most %d" % (work_dir, path, len(os.fsencode(path)), MAX_SOCKET_PATH),
                          hint="Use a shorter VM name, or a data directory with a shorter path (XDG_DATA_HOME)",
                          path=path)


def make_vm_dir(work_dir):
    """Create ``<data_dir>/vms/<name>`` (0700) refusing symlinks at every level below the data dir, and
    refusing a VM file inside that is a symlink; returns ``work_dir``."""
    check_socket_room(work_dir)
    vms = os.path.dirname(work_dir)
    os.makedirs(os.path.dirname(vms), mode=0o700, exist_ok=True)  # the data dir itself may be a link (a moved home)
    _private_dir_nofollow(vms)
    _private_dir_nofollow(work_dir)
    check_vm_files(work_dir)
    return work_dir


def check_vm_files(work_dir):
    """Refuse a VM directory, or a file of a VM, that is a symlink (QEMU and qemu-img would follow it)."""
    if os.path.islink(work_dir) or os.path.islink(os.path.dirname(work_dir)):
        _refuse(work_dir if os.path.islink(work_dir) else os.path.dirname(work_dir),
                "is a symbolic link; vmctl never follows one below its data directory")
    for path in vm_files(work_dir).values():
        for candidate in (path, path + ".pub", path + ".tmp"):
            if os.path.islink(candidate):
                _refuse(candidate, "is a symbolic link; vmctl never writes through one")


def remove_vm_dir(work_dir, name):
    """Remove the VM's own directory, only after checking that its real path is ``<data_dir>/vms/<name>``.

    A symlink (at ``vms/`` or ``vms/<name>``) or any other path is refused with an error and left alone.
    Returns True when something was removed.
    """
    return _remove_own_dir(work_dir, "vms", name)


STAGED = "staged"  # <data_dir>/staged/<vm>/: what a controller copied here for a VM (vmfile/staging.py)


def staged_dir_in(data_dir_path, name):
    """``<data_dir>/staged/<name>``: the copies of VM ``name``'s files from the controller that sent it here
    (``name`` must be validated by the caller; see vmfile/staging.py)."""
    return os.path.join(data_dir_path, STAGED, name)


def remove_staged_dir(data_dir_path, name):
    """Remove VM ``name``'s staged files (``<data_dir>/staged/<name>``), refusing a symlink as ``remove_vm_dir`` does;
    True when something was removed."""
    return _remove_own_dir(staged_dir_in(data_dir_path, name), STAGED, name)


def _remove_own_dir(path, parent, name):
    """Remove ``<data_dir>/<parent>/<name>`` after checking that ``path`` is that folder and resolves to it."""
    import shutil
    above = os.path.dirname(path)
    if os.path.basename(path) != name or os.path.basename(above) != parent:
        _refuse(path, "is not the %s directory of VM %s" % (parent, name), hint="Nothing was removed")
    if not os.path.lexists(path):
        return False
    expected = os.path.join(os.path.realpath(os.path.dirname(above)), parent, name)
    if os.path.islink(above) or os.path.islink(path) or os.path.realpath(path) != expected:
        _refuse(path, "is a symbolic link or resolves to %s, not %s; nothing was removed"
                % (os.path.realpath(path), expected), hint="Remove the link by hand after checking where it points")
    shutil.rmtree(path, ignore_errors=True)  # rmtree does not follow symlinks inside the tree
    return not os.path.lexists(path)
