# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared folders: a host folder in the guest (virtio-9p), mounted by cloud-init's ``mounts:``.

A share is ``{"source": "/abs/host/dir", "guest": "/mnt/src", "readonly": False}``. The QEMU backend exports
share ``i`` with the 9p mount tag ``vmctl:<i>`` (backends/qemu/virtfs.py); the cloud-config vmctl generates
mounts it. The tag has a colon on purpose: cloud-init 22.4 (Debian 12) keeps a ``mounts:`` device only when it
is a block device it can find or looks like a network source (``server:path``); a plain tag is dropped as
"nonexistent".
"""

from __future__ import annotations

__metaclass__ = type

import os
import re

from ansible_collections.vmctl.core.plugins.module_utils.checks import short
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec

MAX_SHARES = 16
# 9p2000.L (the Linux protocol), over virtio; msize 512 KiB instead of the 8 KiB default (much faster reads).
MOUNT_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288,nofail"
_GUEST_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")  # an fstab field: no blanks, no commas, no escapes needed


def tag(index):
    """The 9p mount tag of share ``index`` (at most 31 bytes, as virtio-9p allows)."""
    return "vmctl:%d" % index


def check_guest_path(guest):
    """Where a share is mounted in the guest: an absolute folder path that an fstab field holds as it is."""
    if not isinstance(guest, str) or not _GUEST_PATH.fullmatch(guest) or os.path.normpath(guest) == "/" \
            or "/../" in guest + "/":
        raise InvalidSpec("share guest path must be an absolute folder path in the guest, got %s" % short(guest),
                          hint='Write e.g. guest="/mnt/src" (letters, digits, . _ - @ +; no blanks or commas; not /)')
    return guest


def check_share(value, must_exist=True):
    """One share with its defaults (read-write); ``source`` must be an existing host directory (``must_exist``; a
    stored record's share is checked for its shape only: its folder is checked again at each start)."""
    if not isinstance(value, dict):
        raise InvalidSpec("a share must be a dict of source, guest and readonly, got %s" % short(value),
                          hint="Write e.g. {source: ./src, guest: /mnt/src}")
    unknown = sorted(set(value) - {"source", "guest", "readonly"})
    if unknown:
        raise InvalidSpec("unknown share setting %s" % ", ".join(unknown), hint="Use source, guest and readonly")
    source, guest, readonly = value.get("source"), value.get("guest"), value.get("readonly", False)
    if not isinstance(source, str) or not source:
        raise InvalidSpec("a share needs its host folder (source), got %s" % short(source), hint="Give the host folder's path")
    source = os.path.abspath(os.path.expanduser(source))
    if must_exist and not os.path.isdir(source):
        what = "does not exist" if not os.path.lexists(source) else "is not a folder"
        raise InvalidSpec("share source %s %s" % (source, what), hint="Give an existing host folder (create it first)",
                          path=source)
    guest = check_guest_path(guest)
    if not isinstance(readonly, bool):
        raise InvalidSpec("share readonly must be true or false, got %s" % short(readonly), hint="Write readonly=true")
    return {"source": source, "guest": os.path.normpath(guest), "readonly": readonly}


def check_shares(values, must_exist=True):
    """The checked shares of one VM, in their order; one guest folder holds one share."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InvalidSpec("shares must be a list of shares, got %s" % short(values),
                          hint="Write e.g. [{source: ./src, guest: /mnt/src}]")
    if len(values) > MAX_SHARES:
        raise InvalidSpec("at most %d shares per VM, got %d" % (MAX_SHARES, len(values)), hint="Share a common parent folder")
    shares, seen = [], set()
    for value in values:
        share = check_share(value, must_exist)
        if share["guest"] in seen:
            raise InvalidSpec("two shares are mounted at %s in the guest" % share["guest"], hint="Give each share its own guest path")
        seen.add(share["guest"])
        shares.append(share)
    return shares


def parse(text):
    """``SRC:DST[:ro]`` (``vmctl create --share``) as a share dict (checked by ``check_share``)."""
    parts = text.rsplit(":", 2) if isinstance(text, str) else []
    readonly = len(parts) == 3 and parts[2] in ("ro", "rw")
    if readonly:
        parts, readonly = parts[:2], parts[2] == "ro"
    else:
        parts = text.rsplit(":", 1) if isinstance(text, str) else []
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidSpec("--share %s is not SRC:DST" % short(text),
                          hint="Write HOST_FOLDER:GUEST_PATH, e.g. --share ./src:/mnt/src (add :ro for read-only)")
    return check_share({"source": parts[0], "guest": parts[1], "readonly": readonly})


def mounts(shares):
    """cloud-init ``mounts:`` entries (fstab fields) for ``shares``."""
    return [[tag(i), share["guest"], "9p", MOUNT_OPTIONS + (",ro" if share["readonly"] else ""), "0", "0"]
            for i, share in enumerate(shares)]


def describe(share):
    """``/host/src -> /mnt/src (ro)`` (list, status)."""
    return "%s->%s%s" % (share["source"], share["guest"], " (ro)" if share["readonly"] else "")
