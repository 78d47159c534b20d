# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU arguments for issue 14's devices: port forwards (user-network ``hostfwd``), shares (``-virtfs``) and UEFI
firmware (OVMF from Debian's ``ovmf`` package, as two pflash drives: the shared CODE and the VM's own VARS).

Shares use ``security_model=mapped-xattr``: QEMU (running as the host user) creates every file itself, so a file
the guest writes belongs to the host user; the guest's owner and mode are kept in ``user.virtfs.*`` xattrs and read
back by the guest. ``passthrough`` would chown each new file to the guest's uid, which a QEMU that is not root
cannot do (the guest's write fails with EPERM), and which, as root, leaves files owned by guest uids on the host.
"""

from __future__ import annotations

__metaclass__ = type

import errno
import glob
import json
import os
import shutil

from ansible_collections.vmctl.core.plugins.module_utils import forwards
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, ToolMissing
from ansible_collections.vmctl.core.plugins.module_utils.guest import shares as guest_shares

FIRMWARE_DESCRIPTORS = "/usr/share/qemu/firmware"  # QEMU's firmware descriptors (docs/interop/firmware.json)
# Matched pairs when no descriptor is readable: Debian 12's ovmf package, 4 MiB build first.
OVMF_PAIRS = (("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
              ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"))
OVMF_HINT = "Install Debian's ovmf package (as root: apt-get install ovmf), or use firmware bios"
VARS_FILE = "OVMF_VARS.fd"  # the VM's own UEFI variable store, in its work dir
SHARE_PROBE = "user.vmctl.probe"
# Descriptor features that need more than a plain pflash pair (Secure Boot needs SMM, enrolled keys, SEV...).
_SPECIAL = {"secure-boot", "enrolled-keys", "requires-smm", "amd-sev", "amd-sev-es", "intel-tdx"}


def qemu_escape(value):
    """QEMU option values: a comma is written as two (the backend's argv uses it too)."""
    return str(value).replace(",", ",,")


# --- port forwards ------------------------------------------------------------------------------------

def hostfwd(forwards_):
    """``,hostfwd=tcp:127.0.0.1:8080-:80`` for each forward (appended to the user netdev's options)."""
    return "".join(",hostfwd=%s:%s:%d-:%d" % (f["protocol"], f["address"], f["host"], f["guest"])
                   for f in forwards.check_forwards(forwards_))  # checked again: a record is never trusted


# --- shares -------------------------------------------------------------------------------------------

def virtfs_args(shares):
    """``-virtfs`` for each share (mount tag ``vmctl:<i>``, see guest/shares.py)."""
    argv = []
    for i, share in enumerate(guest_shares.check_shares(shares, must_exist=False)):
        argv += ["-virtfs", "local,id=share%d,path=%s,mount_tag=%s,security_model=mapped-xattr%s"
                 % (i, qemu_escape(share["source"]), guest_shares.tag(i), ",readonly=on" if share["readonly"] else "")]
    return argv


def check_share_sources(name, shares):
    """Every share's host folder exists, and a writable one keeps user xattrs (mapped-xattr stores the guest's
    owner and mode in them; tmpfs before Linux 6.6 and some network filesystems do not)."""
    for share in shares:
        source = share["source"]
        if not os.path.isdir(source):
            raise InvalidSpec("VM %s: share source %s does not exist (or is not a folder)" % (name, source),
                              hint="Create the folder again, or remove the share (vmctl.core.vm shares)", name=name, path=source)
        if share["readonly"]:
            continue
        try:
            os.setxattr(source, SHARE_PROBE, b"1", follow_symlinks=True)
            os.removexattr(source, SHARE_PROBE, follow_symlinks=True)
        except OSError as err:
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise InvalidSpec("VM %s: share source %s is on a filesystem without user extended attributes, which a "
                                  "writable share needs (security_model=mapped-xattr)" % (name, source),
                                  hint="Share a folder on ext4, xfs or btrfs, or make the share readonly", name=name, path=source)
            if err.errno in (errno.EPERM, errno.EACCES):
                raise InvalidSpec("VM %s: share source %s is not writable by this user (%s)" % (name, source, err.strerror),
                                  hint="Share a folder you own, or make the share readonly", name=name, path=source)
            raise


# --- firmware -----------------------------------------------------------------------------------------

def _descriptor_pairs(directory=FIRMWARE_DESCRIPTORS):
    """``(code, vars)`` of each plain x86_64 UEFI pflash descriptor, in QEMU's priority order (file names)."""
    pairs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
            mapping = data["mapping"]
            if "uefi" not in data.get("interface-types", ()) or mapping.get("device") != "flash" \
                    or _SPECIAL & set(data.get("features", ())) \
                    or not any(t.get("architecture") == "x86_64" for t in data.get("targets", ())):
                continue
            pairs.append((mapping["executable"]["filename"], mapping["nvram-template"]["filename"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return pairs


def find_ovmf(directory=FIRMWARE_DESCRIPTORS, fallback=OVMF_PAIRS):
    """The OVMF ``(code, vars template)`` pair to boot with: from QEMU's firmware descriptors (each names a CODE
    file and the VARS template built with it), else Debian's known pairs. A CODE never goes with another's VARS."""
    for code, template in _descriptor_pairs(directory) + list(fallback):
        if os.path.isfile(code) and os.path.isfile(template):
            return code, template
    raise ToolMissing("UEFI firmware (OVMF) is not installed: no CODE/VARS pair in %s or %s"
                      % (directory, ", ".join(sorted({os.path.dirname(c) for c, _v in fallback}))), hint=OVMF_HINT)


def prepare_vars(work_dir, template):
    """The VM's own copy of the UEFI variable store (made once; the guest's boot entries live in it)."""
    path = os.path.join(work_dir, VARS_FILE)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        shutil.copyfile(template, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path


def firmware_args(work_dir, firmware):
    """Two pflash drives (read-only CODE, the VM's VARS) for ``uefi``; nothing for ``bios`` (SeaBIOS)."""
    if firmware != "uefi":
        return []
    code, template = find_ovmf()
    vars_path = prepare_vars(work_dir, template)
    if os.path.getsize(vars_path) != os.path.getsize(template):  # a VARS from another OVMF build does not fit its CODE
        os.unlink(vars_path)
        vars_path = prepare_vars(work_dir, template)
    return ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=%s" % qemu_escape(code),
            "-drive", "if=pflash,format=raw,unit=1,file=%s" % qemu_escape(vars_path)]
