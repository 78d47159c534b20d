# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-bridge-helper's ACL (/etc/qemu/bridge.conf), read by its own rules, so a TAP VM whose bridge
is not allowed fails before QEMU starts, with the file and the line to add.

The helper's rules (qemu-bridge-helper.c, QEMU 7.2): one command per line, ``allow NAME``,
``deny NAME``, ``allow all``, ``deny all`` or ``include FILE``; ``#`` starts a comment line, leading
and trailing blanks are ignored; the command ends at the first space (or, without one, the first
tab). An unknown command, a line without an argument or a name of 16 characters or more makes the
whole file unusable ("failed to parse default acl file"). An included file that is missing or broken
is ignored (the rules it gave before the broken line still count); a file that includes itself makes
the helper recurse until it runs out of open files or crashes, so vmctl refuses it. The order does not matter: the
bridge must be allowed by some rule and denied by none (a deny always wins).
"""

from __future__ import annotations

__metaclass__ = type

import os

from ansible_collections.vmctl.core.plugins.module_utils.errors import BridgeNotAllowed

DEFAULT_ACL_FILE = "/etc/qemu/bridge.conf"
# The file vmctl checks (tests point it at a decoy); qemu-bridge-helper itself always reads DEFAULT_ACL_FILE.
ACL_FILE_ENV = "VMCTL_BRIDGE_CONF"
IFNAMSIZ = 16
_BLANK = " \t\n\v\f\r"
SYNTAX = "`allow NAME`, `deny NAME`, `allow all`, `deny all`, `include FILE` or a `#` comment"


class _Unreadable(Exception):
    """A file we may not read (qemu-bridge-helper is setuid root and can): we cannot decide."""


class _Broken(Exception):
    """The helper refuses the file at this line; ``rules`` are those it had read before it."""

    def __init__(self, file, line, text, why, rules, cycle=False):
        super().__init__(why)
        self.file, self.line, self.text, self.why, self.rules, self.cycle = file, line, text, why, rules, cycle


def acl_file():
    return os.environ.get(ACL_FILE_ENV) or DEFAULT_ACL_FILE


def read_rules(path, _open_files=()):
    """The rules of ``path`` and its includes, in order: ``[(verb, name, file, line)]``.

    Raises FileNotFoundError, _Unreadable, or _Broken (the helper refuses the file).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        return []  # fopen() of a directory works and fgets() then reads nothing
    except PermissionError:
        raise _Unreadable(path)
    rules = []
    for number, raw in enumerate(data.decode("latin-1").split("\n"), 1):
        raw = raw.split("\0", 1)[0]  # C strings end at a NUL byte
        line = raw.lstrip(_BLANK)
        if not line or line.startswith("#"):
            continue
        cut = line.find(" ")
        if cut < 0:
            cut = line.find("\t")
        if cut < 0:
            raise _Broken(path, number, raw, "a command without an argument", rules)
        verb, name = line[:cut], line[cut + 1:].strip(_BLANK)
        if verb != "include" and len(name) >= IFNAMSIZ:
            raise _Broken(path, number, raw, "the name %r is %d characters long (at most %d)"
                          % (name, len(name), IFNAMSIZ - 1), rules)
        if verb in ("allow", "deny"):
            rules.append((verb, name, path, number))
        elif verb == "include":
            if os.path.realpath(name) in _open_files + (os.path.realpath(path),):
                # the helper recurses until it runs out of open files, or of stack first (it crashes)
                raise _Broken(path, number, raw, "%s is included again from inside itself" % name, rules, cycle=True)
            try:
                rules += read_rules(name, _open_files + (os.path.realpath(path),))
            except _Broken as err:
                if err.cycle:
                    raise
                rules += err.rules  # the helper ignores the error but keeps what it read
            except OSError:
                pass  # a missing include is ignored (one we may not read raises _Unreadable: undecided)
        else:
            raise _Broken(path, number, raw, "unknown command %r" % verb, rules)
    return rules


def check(bridge, vm, path=None):
    """Raise BridgeNotAllowed unless qemu-bridge-helper would attach VM ``vm`` to ``bridge``."""
    path = path or acl_file()
    line = "the line `allow %s` to %s (as root: mkdir -p %s && echo 'allow %s' >> %s)" % (
        bridge, path, os.path.dirname(path) or ".", bridge, path)
    add = "Add " + line
    where = "VM %s: tap networking on bridge %s" % (vm, bridge)
    try:
        rules = read_rules(path)
    except FileNotFoundError:
        raise BridgeNotAllowed("%s needs qemu-bridge-helper's ACL file %s, which does not exist" % (where, path),
                               hint=add, file=path, bridge=bridge)
    except _Unreadable:
        return  # not ours to read; QEMU's helper will say
    except _Broken as err:
        raise BridgeNotAllowed("%s: qemu-bridge-helper cannot parse %s:%d %r (%s)" % (where, err.file, err.line, err.text, err.why),
                               hint="Fix or remove that line (lines are %s), then add `allow %s`" % (SYNTAX, bridge),
                               file=err.file, line=err.line, bridge=bridge)
    denied = [r for r in rules if r[0] == "deny" and r[1] in (bridge, "all")]
    if denied:
        _verb, name, file, number = denied[0]
        raise BridgeNotAllowed("%s is refused by `deny %s` at %s:%d" % (where, name, file, number),
                               hint="Remove that line (a deny wins over any allow, wherever it is) and add %s" % line,
                               file=file, line=number, bridge=bridge)
    if not any(r[0] == "allow" and r[1] in (bridge, "all") for r in rules):
        near = [r for r in rules if r[0] == "allow" and r[1].split()[:1] == [bridge]]
        if near:  # `allow br0 # comment` allows a bridge named "br0 # comment"
            add = "%s:%d says `allow %s`: a comment must be on a line of its own. %s" % (near[0][2], near[0][3], near[0][1], add)
        raise BridgeNotAllowed("%s is not allowed by %s (no `allow %s` or `allow all` line)" % (where, path, bridge),
                               hint=add, file=path, bridge=bridge)
