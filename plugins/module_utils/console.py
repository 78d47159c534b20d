# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Console automation on a VM's serial console: wait for a pattern, send keys, log in, run a command.

Reading never consumes anything: every wait searches the console log (``console.log``, which QEMU appends
everything the guest prints to, whoever is attached) from a byte offset, by default where the VM's latest
start began (``handle.console_offset``), so two waits can match the same boot. Each call returns the offset
just past what it matched, to pass as ``since`` to the next. Keys go to the guest through the backend's
console stream (``VmManager.open_console``), the one ``vmctl console`` relays.
"""

from __future__ import annotations

__metaclass__ = type

import fcntl
import os
import re
import secrets
import struct
import termios
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import ConsoleFailed, ConsoleTimeout, InvalidSpec, InvalidState

POLL = 0.2  # seconds between reads of the console log
ALIVE_EVERY = 2.0  # seconds between checks that the VM still runs
# A shell prompt at the end of a line, maybe followed by terminal queries (busybox ash asks for the cursor position).
DEFAULT_PROMPT = r"[#$] ?(?:\x1b\[[0-9;?]*[A-Za-z])*$"
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "e": "\x1b", "\\": "\\"}


def decode_keys(text):
    """Text with escapes as keys: ``\\r`` Enter, ``\\n``, ``\\t``, ``\\e`` Escape, ``\\\\``, ``\\xHH`` a byte,
    ``\\cX`` Ctrl+X (``\\cc`` is Ctrl+C, ``\\cd`` Ctrl+D). Real control characters pass through unchanged."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        key = text[i + 1]
        if key in _ESCAPES:
            out.append(_ESCAPES[key])
            i += 2
        elif key == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(chr(int(text[i + 2:i + 4], 16)))
            i += 4
        elif key == "c" and i + 2 < len(text) and (text[i + 2].isalpha() or text[i + 2] in "[]\\"):
            out.append(chr(ord(text[i + 2].upper()) & 0x1f))
            i += 3
        else:
            raise InvalidSpec("unknown key escape %r in %r" % (text[i:i + 2], text),
                              hint="Use \\r (Enter), \\n, \\t, \\e (Escape), \\\\, \\xHH or \\cX (Ctrl+X)")
    return "".join(out).encode("utf-8", "surrogateescape")


def shown(raw):
    """Console bytes as lines of text for a result (carriage returns dropped, bad UTF-8 replaced)."""
    return raw.decode("utf-8", "replace").replace("\r", "").split("\n") if raw else []


class Console:
    """The serial console of one VM (``name``) through the manager: its log, and a stream to send keys."""

    def __init__(self, manager, name):
        self.manager = manager
        self.name = name
        self.handle = manager.get(name)
        if not self.handle.console_log:
            raise ConsoleFailed("VM %s has no console log" % name, hint="Start it first (vmctl start %s)" % name, name=name)

    # --- reading ---------------------------------------------------------------------------------
    def size(self):
        try:
            return os.path.getsize(self.handle.console_log)
        except OSError:
            return 0

    def start_offset(self, since=None):
        """``since``, checked, or where the VM's latest start began."""
        if since is None:
            return self.handle.console_offset or 0
        size = self.size()
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= size:
            raise InvalidSpec("VM %s: since=%r is not an offset in its console log (0 to %d)" % (self.name, since, size),
                              hint="Pass the offset a previous call returned, or leave since out to search from the VM's "
                                   "latest start", name=self.name)
        return since

    def read(self, since):
        try:
            with open(self.handle.console_log, "rb") as f:
                f.seek(since)
                return f.read()
        except FileNotFoundError:
            return b""

    def wait_for(self, pattern, timeout, since=None, what=None):
        """Wait until ``pattern`` (a Python regex; ``^`` and ``$`` match at each line) matches the console output after ``since``.

        Returns ``{matched, groups, offset, lines, seconds}``: ``offset`` is just past the match. Raises
        ConsoleTimeout (with the same fields, ``matched`` false) when it does not appear in ``timeout`` seconds,
        InvalidState when the VM stops meanwhile.
        """
        regex = compile_pattern(pattern)
        since = self.start_offset(since)
        begin = time.monotonic()
        checked = begin
        while True:
            raw = self.read(since)
            text = raw.decode("utf-8", "surrogateescape")
            found = regex.search(text)
            if found:
                end = since + len(text[:found.end()].encode("utf-8", "surrogateescape"))
                return {"matched": True, "groups": [_text(g) for g in found.groups()], "offset": end,
                        "lines": shown(raw[:end - since]), "seconds": round(time.monotonic() - begin, 3)}
            now = time.monotonic()
            if now - begin >= timeout:
                result = {"matched": False, "groups": [], "offset": since + len(raw), "lines": shown(raw),
                          "seconds": round(now - begin, 3)}
                raise ConsoleTimeout("VM %s: %s did not appear on the serial console within %ss"
                                     % (self.name, what or "pattern %r" % pattern, timeout), name=self.name, result=result)
            if now - checked >= ALIVE_EVERY:
                checked = now
                if not self.manager.backend(self.handle).alive(self.handle):
                    raise InvalidState("VM %s stopped while waiting for %s on its console" % (self.name, what or repr(pattern)),
                                       hint="See its console log (vmctl log %s --console)" % self.name, name=self.name)
            time.sleep(POLL)

    # --- writing ---------------------------------------------------------------------------------
    def send(self, data):
        """Send ``data`` (bytes: see decode_keys) to the guest's serial port; returns the log's size before."""
        before = self.size()
        stream = self.manager.open_console(self.name)
        try:
            stream.sendall(data)
            drain(stream)
        finally:
            stream.close()
        return before

    def login(self, user, password, timeout, prompt=DEFAULT_PROMPT):
        """Log in on a getty: Enter to get a fresh prompt, the user at ``login:``, the password at ``Password:``,
        then wait for a shell ``prompt``. A shell already at its prompt is left as it is."""
        since = self.send(b"\r")
        first = self.wait_for(r"(?i)(login:\s*$)|(%s)" % prompt, timeout, since, what="a login or shell prompt")
        if first["groups"][0] is None:
            return dict(first, logged_in=False)
        since = self.send(user.encode() + b"\r")
        self.wait_for(r"(?i)password:\s*$", timeout, since, what="the password prompt")
        since = self.send(password.encode() + b"\r")
        done = self.wait_for(r"(?i)(login incorrect|login:\s*$)|(%s)" % prompt, timeout, since, what="a shell prompt")
        if done["groups"][0] is not None:
            raise ConsoleFailed("VM %s: login as %s on the serial console was refused" % (self.name, user),
                                hint="Check the user and password", name=self.name)
        return dict(done, logged_in=True)

    def command(self, command, timeout):
        """Run one shell command line on the serial shell (already logged in); returns ``{stdout, rc, seconds,
        offset, lines}``. Its output is framed by markers that its own echo cannot contain (printf builds them)."""
        if "\n" in command or "\r" in command:
            raise InvalidSpec("VM %s: the console command must be one line" % self.name,
                              hint="Join the commands with ; or &&", name=self.name)
        token = secrets.token_hex(6)
        line = "printf '%%s-%%s\\n' VMCTL-BEGIN %s; %s; printf '\\n%%s-%%s:%%d\\n' VMCTL-END %s $?\r" % (token, command, token)
        begin = time.monotonic()
        since = self.send(line.encode("utf-8"))
        found = self.wait_for(r"(?s)VMCTL-BEGIN-%s\r?\n(.*?)\r?\nVMCTL-END-%s:(\d+)" % (token, token), timeout, since,
                              what="the end of command %r" % command)
        stdout = found["groups"][0].replace("\r\n", "\n")
        return {"stdout": stdout, "rc": int(found["groups"][1]), "seconds": round(time.monotonic() - begin, 3),
                "offset": found["offset"], "lines": found["lines"], "matched": True, "groups": found["groups"]}


def drain(stream, timeout=30.0):
    """Wait until QEMU has read all we sent: it reads a serial port's input only as fast as the guest's UART takes
    it, and drops what is left in the socket when we hang up first."""
    if not hasattr(stream, "fileno") or not hasattr(termios, "TIOCOUTQ"):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            unread = struct.unpack("i", fcntl.ioctl(stream.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:  # not a socket that can tell (a websocket's stream): nothing to wait for
            return
        if unread == 0:
            return
        time.sleep(0.02)
    raise ConsoleFailed("the guest did not read the keys sent to its serial console within %ds" % timeout,
                        hint="The guest may be hung, or not reading its serial port")


def compile_pattern(pattern):
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as err:
        raise InvalidSpec("bad regular expression %r: %s" % (pattern, err), hint="Check the pattern (Python re syntax)")


def _text(group):
    return None if group is None else group.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
