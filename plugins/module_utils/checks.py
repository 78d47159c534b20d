# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one set of value rules: every front-end (VMFile, the ``vm`` and ``vm_state`` modules, the CLI,
the store's records) checks a VM's settings here, so the same value gets the same message and hint.

Each check returns the value or raises InvalidSpec / InvalidName (message without the VM's name: the
caller says where the value came from, a VMFile line or ``VM name:``). Every pattern is matched
with ``fullmatch``: a ``$`` would let a trailing newline through.
"""

from __future__ import annotations

__metaclass__ = type

import os
import re
import stat

from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    InvalidGuestUser, InvalidHostname, InvalidLoginUser, InvalidName, InvalidPublicKey, InvalidSpec,
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOSTNAME_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(r"%s(?:\.%s)*" % (_HOSTNAME_LABEL, _HOSTNAME_LABEL))
GUEST_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # a user cloud-init creates
LOGIN_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")  # a user we log in as (never an ssh option)
IFNAMSIZ = 16  # Linux: interface names are at most IFNAMSIZ - 1 bytes

VCPUS = (1, 255)
MEMORY_MB = (16, 16 * 1024 * 1024)
DISK_GB = (1, 65536)
MAX_WORD = 128  # cpu and machine model names
MAX_TEXT = 4096  # kernel command line and other free text


def short(value, limit=60):
    """``repr(value)`` cut to ``limit`` characters: an error never echoes a 50 MB value."""
    text = repr(value)
    return text if len(text) <= limit else "%s… (%d characters)" % (text[:limit], len(value) if hasattr(value, "__len__") else len(text))


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind_of(mode):
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def file_kind(path):
    """What is at ``path`` when it is not a regular file: None for a regular file (symlinks followed),
    ``"missing"`` when nothing is there, else what it is (``"a FIFO (named pipe)"``, ``"a directory"``,
    ``"a character device"`` for /dev/zero ...). Only stats: a FIFO is never opened, so nothing blocks.
    Raises OSError for other stat failures (permission denied)."""
    try:
        return _kind_of(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a path through a file
        return "missing"


def read_small_file(path, what, limit=16 << 20, shown=None, binary=False):
    """The content of the regular file ``path`` (a key, user-data): InvalidSpec when it is missing,
    unreadable, not a regular file (a FIFO is opened non-blocking and never read, so nothing hangs;
    /dev/zero never streams forever), or larger than ``limit`` bytes."""
    shown = shown or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidSpec("%s %s does not exist" % (what, shown), hint="Check the path", path=path)
    except OSError as err:
        raise InvalidSpec("cannot read %s %s: %s" % (what, shown, err.strerror),
                          hint="Check the path and the file's permissions", path=path)
    kind = _kind_of(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise InvalidSpec("%s %s is %s, not a regular file" % (what, shown, kind),
                          hint="Give the path of the %s file itself" % what, path=path)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise InvalidSpec("cannot read %s %s: %s" % (what, shown, err.strerror),
                              hint="Check the path and the file's permissions", path=path)
    if len(data) > limit:
        raise InvalidSpec("%s %s is larger than %d bytes" % (what, shown, limit),
                          hint="Is it the right file? A %s is much smaller" % what, path=path)
    return data if binary else data.decode("utf-8", "replace")


def validate_name(name, what="VM name"):
    """VM names become directory names and QEMU option values: keep them boring."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName("invalid %s %s" % (what, short(name)), name=name if isinstance(name, str) and len(name) < 256 else None)
    return name


def whole_number(label, value, low, high, unit=""):
    """An int from ``low`` to ``high`` (``unit`` " MB"/" GB" for the message); never a silent default."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec("%s must be a whole number, got %s" % (label, short(value)),
                          hint="Write a number without quotes, e.g. %s %d" % (label, low))
    if not low <= value <= high:
        raise InvalidSpec("%s must be from %d to %d%s, got %d" % (label, low, high, unit, value),
                          hint="Use at most %d%s (values are never wrapped around)" % (high, unit)
                          if value > high else "Use at least %d%s" % (low, unit))
    return value


def check_wait_limits(name, deadline=None, stall=None):
    """The readiness wait's limits (seconds; None: the default): whole numbers of at least 1."""
    for what, value in (("wait timeout (deadline)", deadline), ("stall timeout", stall)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidSpec("VM %s: the %s must be a whole number of seconds of at least 1, got %s"
                              % (name, what, short(value)), name=name)
    return deadline, stall


def check_vcpus(value):
    return whole_number("vcpus", value, *VCPUS)


def check_memory(value):
    return whole_number("memory", value, *MEMORY_MB, unit=" MB")


def check_disk(value):
    return whole_number("disk", value, *DISK_GB, unit=" GB")


def check_bridge(name):
    """Linux's rules for an interface name (``dev_valid_name``): 1-15 bytes, not . or .., no '/', ':' or space."""
    if not isinstance(name, str) or not 0 < len(name.encode("utf-8", "replace")) < IFNAMSIZ or name in (".", "..") \
            or re.search(r"[\s/:]", name):
        raise InvalidSpec("%s is not a network interface name" % short(name),
                          hint="Linux interface names have 1 to 15 characters, without spaces, '/' or ':'")
    return name


HYPERVISOR_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")


def check_hypervisor(value):
    """An inventory hostname to place a VM on (``localhost``: this host)."""
    if not isinstance(value, str) or not HYPERVISOR_RE.fullmatch(value):
        raise InvalidSpec("hypervisor %s is not an inventory hostname" % short(value),
                          hint='Write the hypervisor\'s name as the inventory knows it, e.g. hypervisor "hv1" '
                               '(letters, digits, "_", "." and "-")')
    return value


def check_word(value, label="cpu"):
    """A QEMU model name (``cpu``, ``machine``): one short word."""
    if not isinstance(value, str) or not value or len(value) > MAX_WORD or re.search(r"\s", value):
        raise InvalidSpec("%s is not a QEMU model name" % short(value),
                          hint='Write one word of at most %d characters, e.g. cpu "max" or machine "q35"' % MAX_WORD)
    return value


def check_text(label, value, limit=MAX_TEXT):
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidSpec("%s must be a string of at most %d characters, got %s" % (label, limit, short(value)),
                          hint="Shorten it")
    return value


def validate_hostname(hostname):
    if not isinstance(hostname, str) or len(hostname) > 253 or not HOSTNAME_RE.fullmatch(hostname):
        raise InvalidHostname("invalid hostname %s" % short(hostname))
    return hostname


def _user(user, pattern, hint, error):
    if not isinstance(user, str) or not pattern.fullmatch(user):
        raise error("invalid SSH user name %s" % short(user), hint=hint)
    return user


def validate_user(user):
    """A user cloud-init creates (a lowercase Linux user name)."""
    return _user(user, GUEST_USER_RE, "Use a lowercase Linux user name: [a-z_][a-z0-9_-]*, at most 32 characters",
                 InvalidGuestUser)


def validate_login_user(user):
    """A user we log in as: it reaches ssh's command line, so it can never look like an option."""
    return _user(user, LOGIN_USER_RE, "Use letters, digits, '.', '_' or '-', not starting with '-' or '.', at most 32 characters",
                 InvalidLoginUser)


def check_public_key(text, shown):
    """``text`` (the content of the file ``shown``) as one OpenSSH public key line, parsed by cryptography."""
    line = text.strip() if isinstance(text, str) else ""
    bad = InvalidPublicKey("ssh-key %s is not an OpenSSH public key" % shown)
    if not line or "\n" in line or "PRIVATE KEY" in line or len(line) > 16384:
        raise bad
    try:
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key
    except ImportError:  # pragma: no cover - the collection requires cryptography
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("AAAA"):
            raise bad
        return line
    try:
        load_ssh_public_key(line.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError) as err:
        bad.details["reason"] = str(err)
        raise bad
    except Exception:  # cryptography's UnsupportedAlgorithm: not a key type sshd would take from us
        raise bad
    return line


def read_public_key(path, shown=None):
    """The public key line of the file at ``path`` (at most 64 KB), checked by ``check_public_key``."""
    text = read_small_file(path, "ssh-key", limit=64 * 1024, shown=shown)  # a key is one line, not a disk image
    return check_public_key(text, shown or path)
