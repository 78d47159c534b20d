# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host keys we did not generate: read from the VM's serial console, or (opted in) the first one seen.

A VM built from the user's own user-data, or from an image that already trusts a key, has host keys
vmctl never saw. cloud-init prints them on the serial console in its final stage, between
``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``; QEMU writes that
console to console.log in the VM's private work directory — a local channel, not the network.

What is trusted, and why (docs/ssh.md says the same):

* Only text printed after the VM's latest start: the size of console.log when QEMU was started is
  recorded (``console_offset``), so a block from an earlier boot, or typed on the console before,
  is never read.
* Only the first complete block, its markers each on a line of their own. In the guest, only root
  (cloud-init, the kernel) and whoever owns the serial tty (a user logged in on ttyS0; the host user
  typing through ``vmctl console``) can write to ttyS0, /dev/console or /dev/kmsg: an unprivileged
  process cannot. The kernel may quote a process's name inside its own lines (a segfault report),
  never at the start of a line.
* Each key line must be an OpenSSH public key whose blob names the same type; other lines in the
  block (interleaved kernel messages) are skipped.
* Once a key is pinned the file is never rewritten from the console: a later block, or a changed key
  offered over SSH, is refused as a mismatch.

``accept-new`` (OpenSSH's name) is for images that print nothing: the first key the guest offers is
pinned, and any other key after it is refused.
"""

from __future__ import annotations

__metaclass__ = type

import base64
import os
import struct

from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
from ansible_collections.vmctl.core.plugins.module_utils.store import atomic_write

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
CHECKING = ("yes", "accept-new")
MAX_CONSOLE_READ = 64 * 1024 * 1024  # a boot prints far less; a guest flooding its console is not read further
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def parse_public_key(line):
    """``"type base64"`` of an OpenSSH public key line (the comment dropped), or None."""
    fields = line.split()
    if len(fields) < 2 or fields[0] not in _KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(fields[1].encode("ascii"), validate=True)
        (length,) = struct.unpack(">I", blob[:4])
    except (ValueError, UnicodeEncodeError, struct.error):
        return None
    if blob[4:4 + length] != fields[0].encode("ascii") or len(blob) <= 4 + length:
        return None
    return "%s %s" % (fields[0], fields[1])


def keys_from_console(console_log, offset=0):
    """Host keys of the first complete keys block printed after ``offset`` in ``console_log``, or []."""
    if not console_log:
        return []
    try:
        with open(console_log, "rb") as f:
            f.seek(offset or 0)
            data = f.read(MAX_CONSOLE_READ)
    except OSError:
        return []
    if BEGIN.encode() not in data:
        return []
    found, inside = [], False
    for raw in data.decode("utf-8", "replace").split("\n"):
        line = raw.rstrip("\r\n\t ")
        if not inside:
            inside = line == BEGIN
        elif line == END:
            if found:
                return found
            inside = False  # an empty block: look for a real one
        else:
            key = parse_public_key(line)
            if key and key not in found:
                found.append(key)
    return []  # no block, or not finished yet


def pinned_keys(known_hosts):
    """The keys a known_hosts file pins (any host), or [] when it is missing or empty."""
    try:
        with open(known_hosts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith(("#", "@")):
            key = parse_public_key(" ".join(fields[1:3]))
            if key:
                found.append(key)
    return found


def known_hosts_text(port, public_keys):
    """Lines pinning each key for 127.0.0.1:``port`` (the SLIRP forward) and for any address (TAP guests)."""
    lines = []
    for public in public_keys:
        if port:
            lines.append(keys.known_hosts_line("127.0.0.1", port, public))
        lines.append("* %s\n" % " ".join(public.split()[:2]))
    return "".join(lines)


def pin(known_hosts, public_keys, port=None):
    """Write ``public_keys`` as the pins of ``known_hosts`` unless it already pins a key; True when written."""
    if not public_keys or pinned_keys(known_hosts):
        return False
    atomic_write(known_hosts, known_hosts_text(port, public_keys), mode=0o644)
    return True


def pin_from_console(known_hosts, console_log, offset=0, port=None):
    """Pin the keys the guest printed on its console since ``offset``, if nothing is pinned yet; True when written."""
    if not known_hosts or pinned_keys(known_hosts):
        return False
    return pin(known_hosts, keys_from_console(console_log, offset), port)


def console_size(console_log):
    """Where the next boot's console output starts (console.log grows: QEMU appends)."""
    try:
        return os.path.getsize(console_log) if console_log else 0
    except OSError:
        return 0
