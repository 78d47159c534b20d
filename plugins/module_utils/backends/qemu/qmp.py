# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small synchronous QMP (QEMU Machine Protocol) client.

Reads the greeting, negotiates capabilities, tags every command with an ``id`` and matches the
reply by it; asynchronous events that arrive in between are kept in ``events``. Every read has a
deadline, so a monitor that does not answer becomes a QmpTimeout instead of a hang.
"""

from __future__ import annotations

__metaclass__ = type

import itertools
import json
import socket
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import QmpConnectFailed, QmpError, QmpTimeout


class QmpClient:
    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout
        self.events = []
        self.greeting = None
        self._sock = None
        self._buf = b""
        self._ids = itertools.count(1)

    # --- connection -------------------------------------------------------------------------
    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (OSError, socket.timeout) as err:
            sock.close()
            raise QmpConnectFailed("cannot connect to QMP socket %s: %s" % (self.path, err), path=self.path,
                                   errno=getattr(err, "errno", None))
        self._sock = sock
        self.greeting = self._read_message(time.monotonic() + self.timeout)
        if "QMP" not in self.greeting:
            self.close()
            raise QmpConnectFailed("%s did not greet with QMP: %r" % (self.path, self.greeting), path=self.path)
        self.execute("qmp_capabilities")
        return self

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # --- protocol -----------------------------------------------------------------------------
    def _read_message(self, deadline):
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeout("QMP monitor %s did not answer within %.1fs" % (self.path, self.timeout), path=self.path)
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as err:
                raise QmpError("QMP connection %s failed: %s" % (self.path, err), path=self.path,
                               hint="QEMU may have exited; check console.log in the work directory")
            if not chunk:
                raise QmpError("QMP connection %s closed by QEMU" % self.path, path=self.path,
                               hint="QEMU exited; check console.log in the work directory")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            raise QmpError("QMP monitor %s sent invalid JSON: %r" % (self.path, line[:200]), path=self.path)

    def execute(self, command, arguments=None, timeout=None):
        """Run ``command`` and return its ``return`` value; an ``error`` reply raises QmpError."""
        if self._sock is None:
            raise QmpError("QMP client for %s is not connected" % self.path)
        msg_id = "vmctl-%d" % next(self._ids)
        message = {"execute": command, "id": msg_id}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
        except OSError as err:
            raise QmpError("sending %s to %s failed: %s" % (command, self.path, err), path=self.path)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != msg_id:
                continue  # a late reply to a command that timed out earlier
            if "error" in reply:
                error = reply["error"]
                raise QmpError("QMP %s failed: %s" % (command, error.get("desc", error)), command=command,
                               qmp_class=error.get("class"))
            return reply.get("return")

    # --- commands vmctl uses ----------------------------------------------------------------
    def query_status(self):
        return self.execute("query-status")

    def system_powerdown(self):
        return self.execute("system_powerdown")

    def stop(self):
        return self.execute("stop")

    def cont(self):
        return self.execute("cont")

    def quit(self):
        return self.execute("quit")

    def query_vnc(self):
        return self.execute("query-vnc")
