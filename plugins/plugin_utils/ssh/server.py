# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The serving side of the SSH session daemon (see ``ssh_mux`` for the design and the protocol).

``MuxServer`` runs requests over one ``SshSession``; ``daemon_main`` is the detached process that
holds the session, listens on the unix socket and exits when idle, stopped or disconnected.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import fcntl
import json
import os
import select
import socket
import struct
import sys
import threading
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import SshDisconnected, SshError
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.protocol import (
    ACCEPTED, DONE, ERROR, EXIT, IO_CHUNK, PROTOCOL, REQUEST, STDERR, STDIN, STDIN_EOF, STDOUT, ControlPaths,
    error_payload, frame, read_frame)
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import login, ready_session
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import SshSession


class MuxServer:
    """Serves requests over one SshSession; ``handle(conn)`` runs one request to its end."""

    def __init__(self, session, log=None):
        self.session = session
        self.log = log or (lambda message: None)
        self.started = time.time()
        self.requests = 0
        self.active = 0
        self.last_activity = time.monotonic()
        self.stopping = threading.Event()
        self.on_stop = None  # the daemon takes its socket off the path here, before it answers "stop"
        self._lock = threading.Lock()

    def _begin(self):
        with self._lock:
            self.requests += 1
            self.active += 1
            self.last_activity = time.monotonic()

    def _end(self):
        with self._lock:
            self.active -= 1
            self.last_activity = time.monotonic()

    def idle_for(self):
        with self._lock:
            return 0.0 if self.active else time.monotonic() - self.last_activity

    def handle(self, conn):
        self._begin()
        try:
            if not _same_user(conn):
                return
            try:
                kind, payload = read_frame(conn)
                if kind != REQUEST:
                    return
                request = json.loads(payload.decode("utf-8"))
            except (EOFError, OSError, ValueError):
                return
            if not self.session.is_active():
                self.log("request %s refused: SSH transport is gone" % request.get("op"))
                closed = SshDisconnected("VM %s: the SSH session is closed" % self.session.target.vm)
                self._send(conn, ERROR, error_payload(closed, retry=True))
                self.stopping.set()
                return
            self._send(conn, ACCEPTED, json.dumps({"pid": os.getpid(), "protocol": PROTOCOL}).encode("utf-8"))
            op = request.get("op")
            try:
                if op == "exec":
                    self._exec(conn, request)
                elif op == "put":
                    sent = self.session.put(request["local"], request["remote"], request.get("mode"))
                    self._send(conn, DONE, json.dumps({"bytes": sent}).encode("utf-8"))
                elif op == "get":
                    umask = int(request.get("umask", 0o022))
                    got = self.session.get(request["remote"], request["local"], 0o666 & ~umask)
                    self._send(conn, DONE, json.dumps({"bytes": got}).encode("utf-8"))
                elif op == "ping":
                    self._send(conn, DONE, json.dumps(self.status()).encode("utf-8"))
                elif op == "stop":
                    self.stopping.set()
                    if self.on_stop:
                        self.on_stop()
                    self._send(conn, DONE, b"{}")
                else:
                    raise SshError("unknown request %r" % op)
            except (OSError, EOFError):
                pass  # the client went away
            except Exception as err:
                self._send(conn, ERROR, error_payload(err))
        finally:
            self._end()
            with contextlib.suppress(OSError):
                conn.close()

    def status(self):
        return {"pid": os.getpid(), "vm": self.session.target.vm, "address": self.session.target.address,
                "started": self.started, "requests": self.requests, "active": self.active - 1}

    @staticmethod
    def _send(conn, kind, payload=b""):
        with contextlib.suppress(OSError):
            conn.sendall(frame(kind, payload))

    def _exec(self, conn, request):
        command = request["command"].encode("utf-8", "surrogateescape")
        channel = self.session.open_command(command, pty=bool(request.get("pty")), term=request.get("term") or "xterm")

        def pump_stdin():
            # frames from the client go to the command; the client closing the socket ends the command
            try:
                eof = False
                while True:
                    kind, payload = read_frame(conn)
                    if kind == STDIN and not eof:
                        channel.sendall(payload)
                    elif kind == STDIN_EOF and not eof:
                        channel.shutdown_write()
                        eof = True
            except (EOFError, OSError):
                channel.close()
            except Exception:  # paramiko refuses data for a channel that closed: the command's exit follows
                pass

        feeder = threading.Thread(target=pump_stdin, name="stdin", daemon=True)
        feeder.start()
        try:
            while True:
                while channel.recv_ready():
                    conn.sendall(frame(STDOUT, channel.recv(IO_CHUNK)))
                while channel.recv_stderr_ready():
                    conn.sendall(frame(STDERR, channel.recv_stderr(IO_CHUNK)))
                if channel.eof_received or channel.closed:
                    if channel.recv_ready() or channel.recv_stderr_ready():
                        continue
                    break
                select.select([channel], [], [], 5.0)
            status, signal = SshSession.exit_of(channel)
            if status == -1 and signal is None and not self.session.is_active():
                raise SshDisconnected("VM %s: the SSH connection was lost while a command ran" % self.session.target.vm,
                                      name=self.session.target.vm)
            conn.sendall(frame(EXIT, json.dumps({"status": status, "signal": signal}).encode("utf-8")))
        finally:
            channel.close()


def _same_user(conn):
    """Serve only our own user (the socket is 0600 in a 0700 directory; this holds even if those were loosened)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (os.getuid(), 0)


class _Daemon:
    """The detached process: one SshSession, a listening socket, an idle clock."""

    def __init__(self, config):
        self.config = config
        self.paths = ControlPaths(config["control_dir"], config["identity"])
        self.target = SshTarget.from_json(config["target"])
        self.idle_timeout = float(config["idle_timeout"])
        self.socket_id = None

    def log(self, message):
        sys.stderr.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message))
        sys.stderr.flush()

    def run(self, status_fd):
        waited = None
        try:
            readiness = self.config.get("readiness")
            if readiness:  # a task waits for a booting VM: the wait's login is the session kept
                session, waited = ready_session(self.target, readiness.get("deadline"), readiness.get("stall"),
                                                _progress_writer(readiness["progress"]), readiness.get("store"))
            else:
                session = login(self.target, self.config["wait_timeout"], self.config["attempt_timeout"], self.log)
        except BaseException as err:
            self.log("cannot open the session: %s" % err)
            _report(status_fd, {"ok": False, "error": json.loads(error_payload(err).decode("utf-8"))})
            return 1
        self.log("SSH session to VM %s at %s as %s open" % (self.target.vm, self.target.address, self.target.user))
        server = MuxServer(session, self.log)
        listener = self._listen()
        _report(status_fd, {"ok": True, "pid": os.getpid(), "socket": self.paths.socket, "waited": waited})
        try:
            self._serve(server, listener)
        finally:
            session.close()
            self.log("exit after %d requests" % server.requests)
        return 0

    def _listen(self):
        # bind under a private name, then rename over the stale socket: clients never see a gap
        tmp = "%s.%d" % (self.paths.socket, os.getpid())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(tmp)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        os.rename(tmp, self.paths.socket)
        self.socket_id = _file_id(self.paths.socket)
        listener.settimeout(1.0)
        return listener

    def _serve(self, server, listener):
        retired = threading.Event()
        retiring = threading.Lock()  # the stop request's thread and this loop both retire: once, never twice

        def retire(wait=True):
            with retiring:
                if not retired.is_set() and self._retire(listener, wait=wait):
                    retired.set()

        server.on_stop = retire
        while not retired.is_set():
            try:
                conn = listener.accept()[0]
                conn.settimeout(None)
                threading.Thread(target=server.handle, args=(conn,), name="request", daemon=True).start()
            except socket.timeout:
                pass
            except OSError:
                if not server.stopping.is_set():
                    raise
            if server.stopping.is_set():
                reason = "stop requested"
                retire()
            elif not server.session.is_active():
                reason = "SSH transport closed"
                retire()
            elif server.idle_for() > self.idle_timeout:
                # give way to a starter holding the lock: it is about to use us
                reason = "idle for %d s" % self.idle_timeout
                retire(wait=False)
        self.log("exiting: %s" % reason)
        deadline = time.monotonic() + 10
        while server.active > (1 if reason == "stop requested" else 0) and time.monotonic() < deadline:
            time.sleep(0.02)  # let requests already accepted finish

    def _retire(self, listener, wait):
        """Take our socket off the path (under the start lock, so no starter sees a half-gone daemon)."""
        deadline = time.monotonic() + (5.0 if wait else 0.0)
        with open(self.paths.lock, "a") as lock:
            while True:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        if wait:
                            break  # stopping anyway; the inode check below keeps a successor's socket
                        return False
                    time.sleep(0.05)
            try:
                with contextlib.suppress(OSError):
                    # our own socket only: a successor's may have the inode number ours freed, not its ctime
                    if _file_id(self.paths.socket) == self.socket_id:
                        os.unlink(self.paths.socket)
                listener.close()
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return True


def _file_id(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _report(fd, data):
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(data) + "\n").encode("utf-8"))
        os.close(fd)


def _progress_writer(path):
    """``on_progress(line)`` appending to the 0600 file ``path`` that the waiting client shows."""
    def write(line):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line.replace("\n", " ") + "\n")
    return write


def daemon_main():
    """Entry point of the detached daemon: reads its config (JSON) on stdin, forks away, serves."""
    config = json.loads(sys.stdin.read())
    status_fd = int(config["status_fd"])
    if os.fork() > 0:  # double fork: the starter reaps our parent at once; we belong to init
        os._exit(0)
    os.setsid()
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    raise SystemExit(_Daemon(config).run(status_fd))


__all__ = ["MuxServer", "daemon_main"]
