# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM registry, ``vms.json``: a JSON object mapping VM name to its handle.

Every change is a locked read-modify-write (``fcntl.flock`` on a sibling lock file) ending in an
atomic replace (tmp file, fsync, rename, fsync of the directory), so parallel runs never lose an
entry and a crash never leaves half a file. A file that cannot be read is an error naming it;
vmctl never treats it as empty, because the next write would erase every VM.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import fcntl
import json
import os
import tempfile

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import StoreError, VmNotFound
from ansible_collections.vmctl.core.plugins.module_utils.types import VmHandle


def atomic_write(path, data, mode=0o600):
    """Write bytes or text to ``path`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path, shared=False):
    """Hold an flock on ``path`` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class VmStore:
    """``VmStore().get(name)``, ``.list()``, and ``with VmStore().transaction() as vms:`` to change it."""

    def __init__(self, path=None):
        self.path = path or paths.store_path()
        self.lock_path = self.path + ".lock"

    def _ensure_dir(self):
        paths.ensure_private_dir(os.path.dirname(self.path))

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise StoreError("cannot read VM store %s: %s" % (self.path, err.strerror), path=self.path)
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is %s, not an object" % type(data).__name__)
            return {name: VmHandle.from_json(entry) for name, entry in data.items()}
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise StoreError("VM store %s is corrupt: %s" % (self.path, err), path=self.path)

    def _write(self, vms):
        data = {name: vms[name].to_json() for name in sorted(vms)}
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def list(self):
        """All handles, by name (a consistent snapshot)."""
        if not os.path.exists(self.path):  # a read creates nothing: check mode and vm_info leave no trace
            return {}
        self._ensure_dir()
        with file_lock(self.lock_path, shared=True):
            return self._read()

    def get(self, name):
        vms = self.list()
        if name not in vms:
            raise VmNotFound("VM %r not found in %s" % (name, self.path), name=name)
        return vms[name]

    def find(self, name):
        return self.list().get(name)

    @contextlib.contextmanager
    def transaction(self):
        """Exclusive read-modify-write: mutate the yielded dict; it is written back if the block succeeds."""
        self._ensure_dir()
        with file_lock(self.lock_path):
            vms = self._read()
            before = {name: handle.to_json() for name, handle in vms.items()}
            yield vms
            after = {name: handle.to_json() for name, handle in vms.items()}
            if after != before:
                self._write(vms)

    def put(self, handle):
        with self.transaction() as vms:
            vms[handle.name] = handle
        return handle

    def remove(self, name):
        with self.transaction() as vms:
            return vms.pop(name, None)
