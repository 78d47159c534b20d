# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM registry, ``vms.json``: a JSON object mapping VM name to its handle (the guide's layout).

Each record is checked on load, on its own (``record_handle``): a bad record is an error naming the VM
and the field for commands on that VM, while every other VM stays usable (``list`` reports it in
``bad``). A VM's file paths are derived from its name under the store's directory, never taken from
the record: a stored path that differs is ignored, with a warning.

Scale: one read per command, and a change costs about the same with 10 VMs as with 1,000. vms.json
holds one record per line (still the guide's JSON object), so a transaction on one VM finds that
VM's line without splitting or parsing the others. A store of 64 KiB or more (about 60 VMs) takes a
change of one record as a line appended to ``vms.json.journal`` (fsynced; the same ``{"name":
record}`` JSON, ``null`` for a removed VM) instead of a rewrite of the whole file; once the journal
would pass a quarter of vms.json's size it is folded in (vms.json rewritten, the journal removed),
under the same lock. Readers apply the journal's lines over vms.json; a line torn by a kill
mid-append was never committed and is dropped by the next writer. The journal's first line names
the vms.json it extends (inode, size, mtime): one replaced since (a fold cut short, or a hand edit)
is ignored and set aside as ``vms.json.journal.stale``, never applied to the wrong file. A smaller
store never has a journal: its vms.json is always the complete store, as the guide shows it.

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
import logging
import numbers
import os
import re
import tempfile

from ansible_collections.vmctl.core.plugins.module_utils import checks, forwards, paths
from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
from ansible_collections.vmctl.core.plugins.module_utils.errors import BadRecord, StoreError, VmctlError, VmNotFound
from ansible_collections.vmctl.core.plugins.module_utils.model import (
    ACCELS, BACKENDS, FIRMWARES, SNAPSHOT_FIELDS, NetworkConfig, VmHandle, VmState)

LOG = logging.getLogger("vmctl.store")


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
    _fsync_dir(directory)


def _fsync_dir(directory):
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


# The journal (vms.json.journal) is used only for a vms.json of this size or more; a smaller one is
# rewritten whole on every change, so it is always the complete store. The journal is folded into
# vms.json once it would outgrow 1/JOURNAL_SHARE of it.
JOURNAL_MIN_STORE = 64 << 10
JOURNAL_SHARE = 4
_BASE = "#base"  # the journal's first line: {"#base": [inode, size, mtime_ns]} of the vms.json it extends


class Journal:
    """What one read found in the journal: its size, the committed length (up to its last newline),
    the records by name (JSON text, None when removed), and whether it belongs to another vms.json."""

    def __init__(self, size, committed):
        self.size, self.committed = size, committed
        self.entries = {}
        self.stale = False


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_OPTIONAL_TEXT = ("image_path", "image_format", "vnc_addr", "private_key_path", "vmfile", "kernel", "initrd")
_warned = set()


def _field_error(path, name, field, problem):
    shown = name if isinstance(name, str) and checks.NAME_RE.fullmatch(name) else checks.short(name)
    destroy = " or destroy the VM (vmctl destroy %s ends its QEMU and removes its folder and entry);" % name \
        if isinstance(name, str) and checks.NAME_RE.fullmatch(name) else ";"
    return BadRecord("VM store %s: VM %s: field %s %s" % (path, shown, field, problem),
                     hint="Fix or remove that field of the VM's entry in %s (keep a copy first),%s the other VMs are "
                          "not affected" % (path, destroy), path=path, name=name if isinstance(name, str) else None,
                     field=field)


def _check_record(path, name, raw):
    """Raise BadRecord for the first field of ``raw`` whose value the engine cannot use."""
    def bad(field, problem):
        raise _field_error(path, name, field, problem)

    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(raw, dict):
        bad("(record)", "must be a JSON object, got %s" % type(raw).__name__)
    try:
        checks.validate_name(name)
    except VmctlError as err:
        bad("name", "is not usable: %s" % err.message)
    if raw.get("name", name) != name:
        bad("name", "is %s, but the entry is filed under %s" % (checks.short(raw.get("name")), checks.short(name)))
    if not isinstance(raw.get("id"), str) or not raw.get("id"):
        bad("id", "must be a non-empty string, got %s" % checks.short(raw.get("id")))
    for field, check in (("vcpus", checks.check_vcpus), ("memory_mb", checks.check_memory), ("disk_gb", checks.check_disk)):
        if field in raw and not (field == "disk_gb" and raw[field] is None):
            try:
                check(raw[field])
            except VmctlError as err:
                bad(field, "is wrong: %s" % err.message)
    backend = raw.get("backend", "qemu")
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        bad("backend", "must be one of %s, got %s" % (", ".join(BACKENDS), checks.short(backend)))
    if raw.get("state", VmState.PREPARED) not in VmState.STORED:
        bad("state", "must be one of %s, got %s" % (", ".join(VmState.STORED), checks.short(raw.get("state"))))
    if raw.get("accel", "auto") not in ACCELS:
        bad("accel", "must be one of %s, got %s" % (", ".join(ACCELS), checks.short(raw.get("accel"))))
    port = raw.get("ssh_host_port")
    if port is not None and not (is_int(port) and 1 <= port <= 65535):
        bad("ssh_host_port", "must be a port number from 1 to 65535, got %s" % checks.short(port))
    pid = raw.get("pid")
    if pid is not None and not (is_int(pid) and pid > 0):
        bad("pid", "must be a positive integer, got %s" % checks.short(pid))
    mac = raw.get("mac_addr")
    if mac is not None and not (isinstance(mac, str) and _MAC.fullmatch(mac)):
        bad("mac_addr", "must be a MAC address like 52:54:00:12:34:56, got %s" % checks.short(mac))
    for field in ("vnc", "cloud_init"):
        if field in raw and not isinstance(raw[field], bool):
            bad(field, "must be true or false, got %s" % checks.short(raw[field]))
    created = raw.get("created_at")
    if created is not None and (isinstance(created, bool) or not isinstance(created, numbers.Real)):
        bad("created_at", "must be a number, got %s" % checks.short(created))
    for field in _OPTIONAL_TEXT + ("kernel_append", "hostname", "ssh_user", "cpu", "machine"):
        value = raw.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > checks.MAX_TEXT):
            bad(field, "must be a string of at most %d characters, got %s" % (checks.MAX_TEXT, checks.short(value)))
    for field, check in (("hostname", checks.validate_hostname), ("ssh_user", checks.validate_login_user),
                         ("cpu", checks.check_word), ("machine", checks.check_word)):
        if raw.get(field) is not None:
            try:
                check(raw[field])
            except VmctlError as err:
                bad(field, "is wrong: %s" % err.message)
    network = raw.get("network")
    if network is not None and not isinstance(network, (dict, str)):
        bad("network", "must be an object like {\"type\": \"User\"}, got %s" % checks.short(network))
    try:
        NetworkConfig.from_json(network)
    except (VmctlError, AttributeError, TypeError) as err:
        bad("network", "is wrong: %s" % getattr(err, "message", err))
    _check_snapshots(raw.get("snapshots"), bad)
    provision = raw.get("provision")
    if provision is not None and not (isinstance(provision, dict) and isinstance(provision.get("digest", ""), str)
                                      and isinstance(provision.get("completed", False), bool)):
        bad("provision", 'must be {"digest": string, "completed": true/false}, got %s' % checks.short(provision))
    _check_devices(raw, bad)


def _check_devices(raw, bad):
    """Issue 14's fields: port forwards, shares (their shape; folders are checked at start) and firmware."""
    for field, check in (("port_forwards", forwards.check_forwards), ("shares", lambda v: shares.check_shares(v, must_exist=False))):
        try:
            check(raw.get(field))
        except VmctlError as err:
            bad(field, "is wrong: %s" % err.message)
    if raw.get("firmware", "bios") not in FIRMWARES:
        bad("firmware", "must be one of %s, got %s" % (", ".join(FIRMWARES), checks.short(raw.get("firmware"))))


def _check_snapshots(snapshots, bad):
    """``snapshots``: a list of {name, ram, size, vm_state_size, created_at} with unique, valid names."""
    if snapshots is None:
        return
    if not isinstance(snapshots, list):
        bad("snapshots", "must be a list of snapshot records, got %s" % checks.short(snapshots))
    seen = set()
    for i, snap in enumerate(snapshots):
        field = "snapshots[%d]" % i
        if not isinstance(snap, dict):
            bad(field, "must be an object like {\"name\": \"base\", \"ram\": true, ...}, got %s" % checks.short(snap))
        try:
            checks.validate_name(snap.get("name"), "snapshot name")
        except VmctlError as err:
            bad(field + ".name", "is wrong: %s" % err.message)
        if snap["name"] in seen:
            bad(field + ".name", "repeats snapshot %s" % snap["name"])
        seen.add(snap["name"])
        for key, kind in SNAPSHOT_FIELDS.items():
            value = snap.get(key)
            if key == "name" or value is None:
                continue
            ok = isinstance(value, bool) if kind is bool else (
                not isinstance(value, bool) and isinstance(value, numbers.Real if kind is float else int) and value >= 0)
            if not ok:
                bad("%s.%s" % (field, key), "must be %s, got %s" % (
                    "true or false" if kind is bool else "a number of at least 0", checks.short(value)))


def derive_paths(handle, data_dir, store_path=None):
    """The handle with every file path derived from its name under ``data_dir``; a stored path that
    differs is ignored with a warning (nothing reads it, so it cannot redirect a write or a removal)."""
    work_dir = paths.vm_dir_in(data_dir, handle.name)
    files = paths.vm_files(work_dir)
    changes = {"work_dir": work_dir}
    mismatched = []
    if handle.work_dir not in ("", None, work_dir):
        mismatched.append(("work_dir", handle.work_dir, work_dir))
    for field, roles in paths.HANDLE_FILES.items():
        stored = getattr(handle, field)
        if stored is None:
            continue
        candidates = [files[role] for role in roles]
        if stored in candidates:
            continue
        derived = files["disk"] if field == "overlay_path" and handle.backend == "propolis" else candidates[0]
        mismatched.append((field, stored, derived))
        changes[field] = derived
    key = handle.private_key_path
    if isinstance(key, str) and os.path.basename(key) == paths.VM_FILES["user_key"] and key != files["user_key"]:
        changes["private_key_path"] = files["user_key"]  # the key vmctl generated lives in the VM's directory
        mismatched.append(("private_key_path", key, files["user_key"]))
    warned = (store_path, handle.name, tuple(mismatched))
    if mismatched and warned not in _warned:
        _warned.add(warned)
        field, stored, _derived = mismatched[0]
        LOG.warning("VM %s: the store names paths that are not the VM's own (%s; e.g. %s %s): they are ignored, "
                    "its files are in %s (paths are derived from the VM's name)", handle.name,
                    ", ".join(m[0] for m in mismatched), field, checks.short(stored, 200), work_dir)
    return handle.replace(**changes)


def record_handle(path, name, raw):
    """The checked VmHandle of one record (paths derived under the store's directory); raises BadRecord."""
    _check_record(path, name, raw)
    try:
        handle = VmHandle.from_json(raw if "name" in raw else dict(raw, name=name))
    except (TypeError, ValueError, AttributeError, VmctlError) as err:
        raise _field_error(path, name, "(record)", "cannot be read: %s" % getattr(err, "message", err))
    return derive_paths(handle, os.path.dirname(os.path.abspath(path)), path)


class LazyRecords:
    """The raw records of one read, name -> JSON object, each parsed when first used.

    ``text`` is vms.json in vmctl's one-record-per-line layout: a lookup of one name searches it for
    that VM's line (a transaction on one VM among 1,000 neither splits nor parses the other lines).
    ``text`` is None for any other layout; then ``base`` holds every record's JSON text. ``overlay``
    holds the journal's later records (name -> text, None when the VM was removed); they win."""

    def __init__(self, path, text=None, base=None, parsed=None):
        self.path, self.text, self.base = path, text, base
        self.overlay = {}
        self.parsed = dict(parsed or {})
        self._merged = None

    def apply(self, entries):
        """Lay the journal's records (name -> text or None) over the file's."""
        for name, text in entries.items():
            self.overlay[name] = text
            self.parsed.pop(name, None)
        self._merged = None

    def text_of(self, name):
        """The record's JSON text, or None when there is no such VM."""
        if name in self.overlay:
            return self.overlay[name]
        if self.base is not None:
            return self.base.get(name)
        if not isinstance(name, str) or not checks.NAME_RE.fullmatch(name):
            return None  # such a name is never filed in this layout (and must not steer the search)
        key = '\n  "%s": ' % name
        at = self.text.rfind(key)  # the last one, as a JSON parser reads a name given twice
        if at < 0:
            return None
        begin = at + len(key)
        end = self.text.index("\n", begin)
        return self.text[begin:end - 1 if self.text[end - 1] == "," else end]

    def texts(self):
        """name -> JSON text of every record (the file split once, the journal applied)."""
        if self._merged is None:
            if self.base is None:
                self.base = _split_lines(self.text)
                if self.base is None:  # not quite vmctl's layout after all: let the JSON parser decide
                    data = _parse_store(self.path, self.text)
                    self.base = {name: json.dumps(value) for name, value in data.items()}
                    self.parsed = self._with_overlay(data)
                    self.text = None
            merged = dict(self.base)
            for name, text in self.overlay.items():
                if text is None:
                    merged.pop(name, None)
                else:
                    merged[name] = text
            self._merged = merged
        return self._merged

    def __contains__(self, name):
        return (name in self._merged) if self._merged is not None else self.text_of(name) is not None

    def __iter__(self):
        return iter(self.texts())

    def __len__(self):
        return len(self.texts())

    def __getitem__(self, name):
        if name not in self.parsed:
            text = self.text_of(name)
            if text is None:
                raise KeyError(name)
            try:
                self.parsed[name] = json.loads(text)
            except ValueError as err:
                raise _field_error(self.path, name, "(record)", "is not valid JSON: %s" % checks.short(str(err), 200))
        return self.parsed[name]

    def get(self, name, default=None):
        return self[name] if name in self else default

    def load_all(self):
        """Parse every record (one JSON parse of the whole file when it is valid: the fast path for scans)."""
        texts = self.texts()
        if self.text is not None and len(self.parsed) < len(texts):
            with contextlib.suppress(ValueError):  # else each record is parsed (and reported) on its own
                self.parsed = self._with_overlay(json.loads(self.text))

    def _with_overlay(self, data):
        """Parsed records: the file's ``data`` except where the journal has a later one (kept if parsed)."""
        parsed = {name: value for name, value in data.items() if name not in self.overlay}
        parsed.update((name, value) for name, value in self.parsed.items() if name in self.overlay)
        return parsed

    def lines(self, changed, removed):
        """vms.json's record lines, sorted by name, with ``changed`` (name -> record) and ``removed``
        applied; unchanged records are copied as the text they were read as."""
        texts = dict(self.texts())
        for name, text in self.overlay.items():
            if text is not None and name not in changed and name not in removed:
                try:  # a journal line that is not JSON is never folded into vms.json (it would break the file)
                    json.loads(text)
                except ValueError:
                    raise _field_error(self.path, name, "(record)", "is not valid JSON in the journal %s.journal, "
                                       "so the journal cannot be folded into vms.json" % self.path)
        for name in removed:
            texts.pop(name, None)
        for name, record in changed.items():
            texts[name] = json.dumps(record)
        return ["  %s: %s" % (json.dumps(name), texts[name]) for name in sorted(texts)]


class Records:
    """One read of the store: raw records by name, their handles built (and checked) on first use.
    ``identity`` is vms.json's (inode, size, mtime) as read; ``journal`` what was read of the journal."""

    def __init__(self, path, raw, identity=None, journal=None):
        self.path = path
        if not isinstance(raw, LazyRecords):
            raw = LazyRecords(path, base={name: json.dumps(value) for name, value in raw.items()}, parsed=raw)
        self.raw = raw
        self.identity = identity
        self.journal = journal
        self._handles = {}
        self._errors = {}
        self.snapshots = None  # name -> the handle's JSON when first built (transactions only: change detection)

    def handle(self, name):
        """The handle of ``name`` (None when absent); raises BadRecord for a bad record."""
        if name in self._handles:
            return self._handles[name]
        if name in self._errors:
            raise self._errors[name]
        if name not in self.raw:
            return None
        try:
            handle = self._handles[name] = record_handle(self.path, name, self.raw[name])
        except BadRecord as err:
            self._errors[name] = err
            raise
        if self.snapshots is not None:
            self.snapshots[name] = json.loads(json.dumps(handle.to_json()))  # a deep copy: in-place changes show
        return handle

    def split(self):
        """``(good, bad)``: handles by name, and BadRecord errors by name."""
        self.raw.load_all()
        good, bad = {}, {}
        for name in self.raw:
            try:
                good[name] = self.handle(name)
            except BadRecord as err:
                bad[name] = err
        return good, bad


class Transaction:
    """The mapping a ``VmStore.transaction()`` block changes: ``vms[name]``, ``vms.get``, ``vms[name] = handle``,
    ``vms.pop``, ``name in vms``; ``raw_items()`` for cheap scans (ports, MACs) that must not build every handle."""

    def __init__(self, records):
        self.records = records
        records.snapshots = {}
        self.set = {}        # name -> handle written in this block
        self.removed = set()

    def __contains__(self, name):
        return name in self.set or (name in self.records.raw and name not in self.removed)

    def get(self, name, default=None):
        if name in self.set:
            return self.set[name]
        if name in self.removed:
            return default
        handle = self.records.handle(name)
        return default if handle is None else handle

    def __getitem__(self, name):
        handle = self.get(name)
        if handle is None:
            raise KeyError(name)
        return handle

    def __setitem__(self, name, handle):
        checks.validate_name(name)
        self.set[name] = handle
        self.removed.discard(name)

    def pop(self, name, default=None):
        try:
            handle = self.get(name, default) if name in self else default
        except BadRecord:  # a bad record can still be removed
            handle = default
        self.set.pop(name, None)
        if name in self.records.raw:
            self.removed.add(name)
        return handle

    def __delitem__(self, name):
        if name not in self:
            raise KeyError(name)
        self.pop(name)

    def names(self):
        return sorted(n for n in set(self.records.raw) | set(self.set) if n in self)

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.names())

    def keys(self):
        return self.names()

    def items(self):
        """Good records only (a bad one is skipped: it is reported by ``list``)."""
        for name in self.names():
            try:
                yield name, self[name]
            except BadRecord:
                continue

    def values(self):
        return [handle for _name, handle in self.items()]

    def clear(self):
        for name in self.names():
            self.pop(name)

    def raw_items(self):
        """``(name, record dict)`` for every VM, bad records included (read-only; an unparsable one is skipped)."""
        if isinstance(self.records.raw, LazyRecords):
            self.records.raw.load_all()
        for name in self.names():
            if name in self.set:
                yield name, self.set[name].to_json()
            else:
                with contextlib.suppress(BadRecord):
                    yield name, self.records.raw[name]

    def changes(self):
        """``(changed records by name, removed names)`` against what was read (handles read are compared too,
        so a handle changed in place is written)."""
        changed = {}
        for name, handle in list(self.set.items()) + [(n, h) for n, h in self.records._handles.items() if n not in self.set]:
            if name in self.removed:
                continue
            data = handle.to_json()
            if name in self.records.snapshots:
                before = self.records.snapshots[name]
            else:
                try:
                    before = self.records.raw.get(name)
                except BadRecord:
                    before = None
            if data != before:
                changed[name] = data
        return changed, {n for n in self.removed if n in self.records.raw}


class VmStore:
    """``VmStore().get(name)``, ``.list()``, and ``with VmStore().transaction() as vms:`` to change it."""

    def __init__(self, path=None):
        self.path = path or paths.store_path()
        self.lock_path = self.path + ".lock"
        self.journal_path = self.path + ".journal"
        self.data_dir = os.path.dirname(os.path.abspath(self.path))
        self.bad = {}  # name -> BadRecord, from the last list()

    def vm_dir(self, name):
        """The VM's own directory under this store (the only place its files are ever looked for)."""
        return paths.vm_dir_in(self.data_dir, checks.validate_name(name))

    def _ensure_dir(self):
        paths.ensure_private_dir(os.path.dirname(self.path))

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            return Records(self.path, {}, journal=self._read_journal(None))
        except OSError as err:
            raise StoreError("cannot read VM store %s: %s" % (self.path, err.strerror), path=self.path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise StoreError("VM store %s is corrupt: %s" % (self.path, err), path=self.path,
                             hint="Restore it from a backup, or fix the JSON; vmctl never treats it as empty")
        identity = [st.st_ino, st.st_size, st.st_mtime_ns]
        journal = self._read_journal(identity)
        current = journal is not None and journal.committed > 0 and not journal.stale
        # A journal is only started on a vms.json in vmctl's layout, and its header names that very file:
        # while it matches, the layout check (a pass over the whole file) is not needed again.
        if current or _in_line_layout(text):
            records = LazyRecords(self.path, text=text)
        else:
            data = _parse_store(self.path, text)
            records = LazyRecords(self.path, base={name: json.dumps(value) for name, value in data.items()}, parsed=data)
        if current:
            records.apply(journal.entries)
        return Records(self.path, records, identity, journal)

    def _read_journal(self, identity):
        """The journal's committed entries (a torn last line, from a kill mid-append, was never committed)."""
        try:
            with open(self.journal_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError("cannot read VM store journal %s: %s" % (self.journal_path, err.strerror), path=self.journal_path)
        journal = Journal(size=len(data), committed=data.rfind(b"\n") + 1)
        try:
            lines = data[:journal.committed].decode("utf-8").split("\n")[:-1]
            header = json.loads(lines[0]) if lines else None
            if lines and not (isinstance(header, dict) and isinstance(header.get(_BASE), list)):
                raise ValueError("its first line is not {\"%s\": [...]}" % _BASE)
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError("VM store journal %s is corrupt: %s" % (self.journal_path, checks.short(str(err), 200)),
                             path=self.journal_path,
                             hint="It holds the latest changes to %s; restore it from a backup, or move it aside to "
                                  "go back to vms.json as it is" % self.path)
        if not lines:
            return journal
        if header[_BASE] != identity:
            journal.stale = True  # vms.json was replaced since: a compaction that was cut short, or a hand edit
            if (self.journal_path, tuple(header[_BASE])) not in _warned:
                _warned.add((self.journal_path, tuple(header[_BASE])))
                LOG.warning("VM store journal %s was written for an earlier %s and is ignored (the next change sets it "
                            "aside as %s.stale)", self.journal_path, self.path, self.journal_path)
            return journal
        for number, line in enumerate(lines[1:], 2):
            match = _JOURNAL_LINE.fullmatch(line)
            if match:
                journal.entries[match.group(1)] = None if match.group(2) == "null" else match.group(2)
                continue
            match = _JOURNAL_NAME.match(line)
            if not match:
                raise StoreError("VM store journal %s is corrupt: line %d names no VM: %s"
                                 % (self.journal_path, number, checks.short(line, 80)), path=self.journal_path,
                                 hint="Fix or remove that line (keep a copy first)")
            journal.entries[match.group(1)] = line  # reported as that VM's bad record; the other VMs stay usable
        return journal

    def _write(self, records, changed, removed, fold=False):
        journal = records.journal
        if journal is not None and journal.stale:
            os.replace(self.journal_path, self.journal_path + ".stale")  # kept, never silently dropped
            journal = None
        names = set(changed) | set(removed)
        if not fold and len(names) == 1 and records.raw.text is not None and records.identity \
                and records.identity[1] >= JOURNAL_MIN_STORE:
            name = names.pop()
            line = json.dumps({name: changed.get(name)}) + "\n"
            if (journal.committed if journal else 0) + len(line) <= records.identity[1] // JOURNAL_SHARE:
                self._append(journal, records.identity, line.encode("utf-8"))
                return
        lines = records.raw.lines(changed, removed)
        atomic_write(self.path, "{\n%s\n}\n" % ",\n".join(lines) if lines else "{}\n")
        if journal is not None:  # its changes are in vms.json now
            os.unlink(self.journal_path)
            _fsync_dir(self.data_dir)

    def _append(self, journal, identity, line):
        """Commit one record change to the journal: an appended line, fsynced."""
        if journal is None or journal.committed == 0:
            atomic_write(self.journal_path, json.dumps({_BASE: identity}).encode("utf-8") + b"\n" + line)
            return
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            if journal.size != journal.committed:
                os.ftruncate(fd, journal.committed)  # drop a torn line left by a killed writer
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, journal.committed)  # a change that failed is not committed
                raise
        finally:
            os.close(fd)

    def records(self):
        """One consistent read of the store (``Records``)."""
        if not os.path.exists(self.path):  # a read creates nothing: check mode and vm_info leave no trace
            return Records(self.path, {})
        self._ensure_dir()
        with file_lock(self.lock_path, shared=True):
            return self._read()

    def list(self):
        """The usable VMs' handles, by name (a consistent snapshot); bad records are in ``self.bad``."""
        good, self.bad = self.records().split()
        return good

    def get(self, name):
        handle = self.records().handle(name)
        if handle is None:
            raise VmNotFound("VM %r not found in %s" % (name, self.path), name=name)
        return handle

    def find(self, name):
        return self.records().handle(name)

    @contextlib.contextmanager
    def transaction(self):
        """Exclusive read-modify-write: change the yielded mapping; it is written back if the block succeeds."""
        self._ensure_dir()
        with file_lock(self.lock_path):
            records = self._read()
            vms = Transaction(records)
            yield vms
            changed, removed = vms.changes()
            if changed or removed:
                self._write(records, changed, removed)

    def compact(self):
        """Fold the journal into vms.json: after it, vms.json alone is the whole store (as the guide shows it)."""
        if not os.path.exists(self.journal_path):
            return
        with file_lock(self.lock_path):
            records = self._read()
            if records.journal is not None:
                self._write(records, {}, set(), fold=True)

    def put(self, handle):
        with self.transaction() as vms:
            vms[handle.name] = handle
        return handle

    def remove(self, name):
        with self.transaction() as vms:
            return vms.pop(name, None)


_NAME = checks.NAME_RE.pattern
_LINE = re.compile(r'^  "(%s)": (\{.*\}),?$' % _NAME, re.M)
_JOURNAL_LINE = re.compile(r'\{"(%s)": (\{.*\}|null)\}' % _NAME)
_JOURNAL_NAME = re.compile(r'\{"(%s)": ' % _NAME)


def _in_line_layout(text):
    """Whether ``text`` looks like vms.json as vmctl.core writes it, one ``  "name": {...}`` line per VM
    (checked at C speed; a line that is not a record after all is found by ``_split_lines``)."""
    body = text.rstrip()
    return body.startswith("{\n  \"") and body.endswith("\n}") and body.count("\n") - 1 == body.count('\n  "')


def _split_lines(text):
    """name -> record JSON text of a file written one record per line with plain VM names (as
    vmctl.core writes it), found without parsing JSON (one regex pass); None for any other layout."""
    body = text.rstrip()
    found = _LINE.findall(body)
    if len(found) != body.count("\n") - 1:  # every line between the braces is one record
        return None
    texts = dict(found)
    return texts if len(texts) == len(found) else None  # a name given twice: let the JSON parser decide


def _parse_store(path, text):
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("top level is %s, not an object" % type(data).__name__)
    except (ValueError, TypeError, AttributeError) as err:
        raise StoreError("VM store %s is corrupt: %s" % (path, checks.short(str(err), 300)), path=path,
                         hint="Restore it from a backup, or fix the JSON; vmctl never treats it as empty")
    return data
