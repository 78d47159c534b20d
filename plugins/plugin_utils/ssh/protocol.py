# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The session daemon's wire protocol, shared by its client and its server (see ``client`` for the design).

Frames are ``type (1 byte) | length (4 bytes, big endian) | payload``; errors travel as JSON payloads
that name the engine's error class. ``ControlPaths`` names the daemon's files in the control directory.
"""

from __future__ import annotations

__metaclass__ = type

import json
import os
import stat
import struct

from ansible_collections.vmctl.core.plugins.module_utils import errors as vmctl_errors
from ansible_collections.vmctl.core.plugins.module_utils.errors import SessionDaemonFailed, SshError, VmctlError

PROTOCOL = 2  # 2: one daemon per control directory, every request names its session (target)
REQUEST, ACCEPTED, STDIN, STDIN_EOF, STDOUT, STDERR, EXIT, ERROR, DONE, PROGRESS = range(1, 11)
_HEADER = struct.Struct("!BI")
MAX_FRAME = 4 * 1024 * 1024
IO_CHUNK = 256 * 1024
ACCEPT_TIMEOUT = 30.0
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with its NUL

DEFAULT_CONTROL_DIR = "~/.ansible/vmctl-cp"
# the one daemon of a control directory: sessions-v2.sock, .lock, .log (another protocol, another daemon: a
# collection of another version on the same controller never talks to this one)
DAEMON_NAME = "sessions-v%d" % PROTOCOL


# --- frames ----------------------------------------------------------------------------------------

def frame(kind, payload=b""):
    return _HEADER.pack(kind, len(payload)) + payload


def json_frame(kind, data):
    return frame(kind, json.dumps(data).encode("utf-8"))


def _recv_exact(sock, size):
    parts = []
    while size:
        data = sock.recv(min(size, IO_CHUNK))
        if not data:
            raise EOFError("connection closed")
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def read_frame(sock):
    """``(kind, payload)`` from a blocking socket; EOFError when the peer closed."""
    kind, size = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise EOFError("frame of %d bytes is too large" % size)
    return kind, _recv_exact(sock, size) if size else b""


class FrameReader:
    """Incremental frame parser for non-blocking reads."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise EOFError("frame of %d bytes is too large" % size)
            if len(self._buffer) < _HEADER.size + size:
                break
            frames.append((kind, bytes(self._buffer[_HEADER.size:_HEADER.size + size])))
            del self._buffer[:_HEADER.size + size]
        return frames


def error_payload(err, retry=False, login=False):
    if isinstance(err, VmctlError):
        data = err.to_dict()
        data["class"] = type(err).__name__
    else:
        data = {"class": "SshError", "code": SshError.code, "message": "%s: %s" % (type(err).__name__, err), "hint": ""}
    data["retry"] = retry
    data["login"] = login  # the daemon holds no session for the target: log in ("open"), then ask again
    return json.dumps(data, default=str).encode("utf-8")


def error_from_payload(payload):
    data = json.loads(payload.decode("utf-8"))
    cls = getattr(vmctl_errors, data.pop("class", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, VmctlError)):
        cls = SshError
    if data.get("code") != cls.code:  # a class this side does not know (or a newer daemon's): the code still tells
        cls = next((c for c in vmctl_errors.error_classes()
                    if c.code == data.get("code") and c.__init__ is VmctlError.__init__), SshError)
    details = {k: v for k, v in data.items() if k not in ("message", "hint", "code", "retry", "login")}
    return cls(data.get("message", "unknown error"), hint=data.get("hint"), **details)


class ControlPaths:
    """The session daemon's files in a control directory: socket (0600), start/stop lock, log."""

    def __init__(self, directory, name=DAEMON_NAME):
        base = os.path.join(directory, name)
        self.directory = directory
        self.socket = base + ".sock"
        self.lock = base + ".lock"
        self.log = base + ".log"


def ensure_control_dir(path):
    """Create ``path`` 0700; refuse one that others can write to or that belongs to another user."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SessionDaemonFailed("control directory %s is not a directory owned by uid %d" % (path, os.getuid()),
                                  hint="Remove it or set the connection option control_path_dir")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
