# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The serving side of the SSH session daemon (see ``client`` for the design and the protocol).

``MuxServer`` holds one ``SshSession`` per VM target (keyed by the target's trust identity) and runs each
request to its end in a thread of its own; ``daemon_main`` is the detached process of a control directory
that listens on its unix socket and exits when idle (no session left) or stopped.
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

from ansible_collections.vmctl.core.plugins.module_utils.errors import SessionDaemonFailed, SshDisconnected, SshError
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.protocol import (
    ACCEPTED, DONE, ERROR, EXIT, IO_CHUNK, PROGRESS, PROTOCOL, REQUEST, STDERR, STDIN, STDIN_EOF, STDOUT, ControlPaths,
    error_payload, frame, read_frame)
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import login, ready_session
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import SshSession

DEFAULT_IDLE_TIMEOUT = 60


class _Slot:
    """One VM target's place in the daemon: its session (None until logged in), the lock that lets one login
    at a time happen for it, the last login's failure, and its own counters and idle clock."""

    def __init__(self, identity, target, idle_timeout):
        self.identity = identity
        self.target = target
        self.idle_timeout = float(idle_timeout)
        self.session = None
        self.login_lock = threading.Lock()
        self.failed = None  # (monotonic time, error payload) of the last failed login
        self.stopped = False
        self.started = None
        self.requests = 0
        self.active = 0
        self.last_activity = time.monotonic()

    def usable(self):
        return self.session is not None and self.session.is_active()

    def status(self):
        return {"vm": self.target.vm, "address": self.target.address, "identity": self.identity, "started": self.started,
                "requests": self.requests, "active": self.active, "open": self.usable()}


class MuxServer:
    """Serves requests for every session it holds; ``handle(conn)`` runs one request to its end.

    A request names its session (``{"session": {"identity", "target"}}``): ``open`` logs in (one login at a
    time per target, others wait for it and share its outcome), ``exec``/``put``/``get``/``ping`` use the
    session, ``stop`` ends it. ``ping``/``stop`` without a session are about the daemon itself.
    """

    def __init__(self, log=None, idle_timeout=DEFAULT_IDLE_TIMEOUT):
        self.log = log or (lambda message: None)
        self.started = time.time()
        self.idle_timeout = float(idle_timeout)  # of the daemon once it holds no session
        self.requests = 0
        self.active = 0
        self.last_activity = time.monotonic()
        self.stopping = threading.Event()
        self.on_stop = None  # the daemon takes its socket off the path here, before it answers "stop"
        self._lock = threading.Lock()
        self._slots = {}

    # -- sessions ---------------------------------------------------------------------------------
    def adopt(self, target, session, idle_timeout=DEFAULT_IDLE_TIMEOUT):
        """Hold ``session`` (logged in elsewhere) as ``target``'s."""
        slot = self._slot(target.identity(), target, idle_timeout)
        slot.session, slot.started = session, time.time()
        return slot

    def _slot(self, identity, target=None, idle_timeout=None):
        with self._lock:
            slot = self._slots.get(identity)
            if slot is None and target is not None:
                slot = self._slots[identity] = _Slot(identity, target, idle_timeout or self.idle_timeout)
            return slot

    def _drop(self, slot, reason, grace=0.0):
        """Forget the slot at once (the next request logs in anew); close its session once the requests it is
        running have ended, or after ``grace`` seconds."""
        with self._lock:
            if self._slots.get(slot.identity) is slot:
                del self._slots[slot.identity]
        slot.stopped = True
        if slot.session is None:
            return

        def close():
            deadline = time.monotonic() + grace
            while slot.active and time.monotonic() < deadline:
                time.sleep(0.05)
            slot.session.close()
            self.log("VM %s: session closed: %s" % (slot.target.vm, reason))

        if grace and slot.active:
            threading.Thread(target=close, name="close", daemon=True).start()
        else:
            close()

    def sessions(self):
        with self._lock:
            return list(self._slots.values())

    def reap(self):
        """Close the sessions whose transport died or that were idle for their idle timeout."""
        now = time.monotonic()
        gone = []
        with self._lock:  # a request takes its slot under this lock too: none starts on a slot reaped here
            for slot in list(self._slots.values()):
                if slot.active or slot.login_lock.locked():
                    continue
                if slot.session is not None and not slot.session.is_active():
                    gone.append((slot, "SSH transport closed"))
                elif now - slot.last_activity > slot.idle_timeout:
                    gone.append((slot, "idle for %d s" % slot.idle_timeout))
                else:
                    continue
                del self._slots[slot.identity]
        for slot, reason in gone:
            self._drop(slot, reason)

    def close_all(self, reason):
        for slot in self.sessions():
            self._drop(slot, reason)

    # -- requests -------------------------------------------------------------------------------
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
        """Seconds since the daemon last served anything, 0 while it holds a session or serves a request."""
        with self._lock:
            return 0.0 if self.active or self._slots else time.monotonic() - self.last_activity

    def handle(self, conn):
        received = time.monotonic()
        self._begin()
        slot = None
        try:
            if not _same_user(conn):
                return
            try:
                kind, payload = read_frame(conn)
                if kind != REQUEST:
                    return
                request = json.loads(payload.decode("utf-8"))
                named = request.get("session")
                if named is not None:
                    target = SshTarget.from_json(named["target"])
                    identity = str(named["identity"])
            except (EOFError, OSError, ValueError, KeyError, TypeError):
                return
            op = request.get("op")
            if named is None:
                self._daemon_request(conn, op)
                return
            if op == "stop":
                slot = self._slot(identity)
                self._send(conn, ACCEPTED, self._accepted())
                if slot is not None:  # the commands it runs for other forks may end first (10 s at most)
                    self._drop(slot, "stop requested", grace=10.0)
                self._send(conn, DONE, b"{}")
                return
            with self._lock:  # the slot is taken (counted active) in the same step as it is found: reap spares it
                slot = self._slots.get(identity)
                if op == "open" and slot is None:
                    idle = (request.get("login") or {}).get("idle_timeout") or self.idle_timeout
                    slot = self._slots[identity] = _Slot(identity, target, idle)
                if slot is not None and (op == "open" or slot.usable()):
                    slot.requests += 1
                    slot.active += 1
                    taken = True
                else:
                    taken = False
            if not taken:
                if slot is not None and slot.session is not None and not slot.login_lock.locked():
                    self.log("VM %s: request %s refused: SSH transport is gone" % (slot.target.vm, op))
                    self._drop(slot, "SSH transport closed")
                closed = SessionDaemonFailed("VM %s: no SSH session open" % target.vm, name=target.vm)
                self._send(conn, ERROR, error_payload(closed, login=True))
                return
            try:
                self._send(conn, ACCEPTED, self._accepted())
                self._session_request(conn, op, request, slot, received)
            finally:
                with self._lock:
                    slot.active -= 1
                    slot.last_activity = time.monotonic()
        finally:
            self._end()
            with contextlib.suppress(OSError):
                conn.close()

    def _accepted(self):
        return json.dumps({"pid": os.getpid(), "protocol": PROTOCOL}).encode("utf-8")

    def _daemon_request(self, conn, op):
        self._send(conn, ACCEPTED, self._accepted())
        if op == "ping":
            self._send(conn, DONE, json.dumps(self.status()).encode("utf-8"))
        elif op == "stop":
            self.stopping.set()
            if self.on_stop:
                self.on_stop()
            self._send(conn, DONE, b"{}")
        else:
            self._send(conn, ERROR, error_payload(SshError("unknown request %r" % op)))

    def _session_request(self, conn, op, request, slot, received):
        try:
            if op == "open":
                waited = self._open(conn, slot, request.get("login") or {}, received)
                self._send(conn, DONE, json.dumps({"waited": waited}).encode("utf-8"))
            elif op == "exec":
                self._exec(conn, request, slot.session)
            elif op == "put":
                sent = slot.session.put(request["local"], request["remote"], request.get("mode"))
                self._send(conn, DONE, json.dumps({"bytes": sent}).encode("utf-8"))
            elif op == "get":
                umask = int(request.get("umask", 0o022))
                got = slot.session.get(request["remote"], request["local"], 0o666 & ~umask)
                self._send(conn, DONE, json.dumps({"bytes": got}).encode("utf-8"))
            elif op == "ping":
                answer = dict(slot.status(), pid=os.getpid(), active=slot.active - 1)  # not counting this ping
                self._send(conn, DONE, json.dumps(answer).encode("utf-8"))
            else:
                raise SshError("unknown request %r" % op)
        except (OSError, EOFError):
            pass  # the client went away
        except _Failed as err:
            self._send(conn, ERROR, err.payload)
        except Exception as err:
            self._send(conn, ERROR, error_payload(err))

    def _open(self, conn, slot, options, received):
        """Log in to the slot's target unless its session is open: the seconds a readiness wait took, or None.

        Logins to one target are one at a time; a request that waited for a login that failed meanwhile gets
        its error at once rather than a second wait (the failure is the same for all of them)."""
        with slot.login_lock:
            if slot.usable():
                return None
            if slot.failed is not None and slot.failed[0] >= received:
                raise _Failed(slot.failed[1])
            target = slot.target
            readiness = options.get("readiness")
            waited = None

            def progress(line):
                self._send(conn, PROGRESS, line.encode("utf-8", "replace"))

            try:
                if slot.session is not None:
                    slot.session.close()
                    slot.session = None
                if readiness:  # a task waits for a booting VM: the wait's login is the session kept
                    session, waited = ready_session(target, readiness.get("deadline"), readiness.get("stall"), progress,
                                                    readiness.get("store"))
                else:
                    session = login(target, options.get("wait_timeout", 120), options.get("attempt_timeout", 10),
                                    self.log)
            except BaseException as err:
                self.log("VM %s: cannot open the session: %s" % (target.vm, err))
                slot.failed = (time.monotonic(), error_payload(err))
                raise
            if slot.stopped:  # stopped while it logged in: not kept
                session.close()
                raise _Failed(error_payload(SessionDaemonFailed("VM %s: the session was stopped while it logged in"
                                                                % target.vm, name=target.vm), retry=True))
            slot.session, slot.started, slot.failed = session, time.time(), None
            if options.get("idle_timeout"):
                slot.idle_timeout = float(options["idle_timeout"])
                self.idle_timeout = slot.idle_timeout
            self.log("VM %s: SSH session at %s as %s open" % (target.vm, target.address, target.user))
            return waited

    def status(self):
        return {"pid": os.getpid(), "protocol": PROTOCOL, "started": self.started, "requests": self.requests,
                "active": self.active - 1, "sessions": [slot.status() for slot in self.sessions()]}

    def _send(self, conn, kind, payload=b""):
        with contextlib.suppress(OSError):
            conn.sendall(frame(kind, payload))

    def _exec(self, conn, request, session):
        command = request["command"].encode("utf-8", "surrogateescape")
        channel = session.open_command(command, pty=bool(request.get("pty")), term=request.get("term") or "xterm")

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
            if status == -1 and signal is None and not session.is_active():
                raise SshDisconnected("VM %s: the SSH connection was lost while a command ran" % session.target.vm,
                                      name=session.target.vm)
            conn.sendall(frame(EXIT, json.dumps({"status": status, "signal": signal}).encode("utf-8")))
        finally:
            channel.close()


class _Failed(Exception):
    """A failure already in its wire form (a login that failed for another request)."""

    def __init__(self, payload):
        super().__init__("login failed")
        self.payload = payload


def _same_user(conn):
    """Serve only our own user (the socket is 0600 in a 0700 directory; this holds even if those were loosened)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (os.getuid(), 0)


class _Daemon:
    """The detached process of a control directory: every VM's session, one listening socket, an idle clock."""

    def __init__(self, config):
        self.config = config
        self.paths = ControlPaths(config["control_dir"])
        self.socket_id = None

    def log(self, message):
        sys.stderr.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message))
        sys.stderr.flush()

    def run(self, status_fd):
        server = MuxServer(self.log, self.config.get("idle_timeout", DEFAULT_IDLE_TIMEOUT))
        try:
            listener = self._listen()
        except BaseException as err:
            self.log("cannot listen on %s: %s" % (self.paths.socket, err))
            _report(status_fd, {"ok": False, "error": json.loads(error_payload(err).decode("utf-8"))})
            return 1
        self.log("session daemon listening on %s" % self.paths.socket)
        _report(status_fd, {"ok": True, "pid": os.getpid(), "socket": self.paths.socket})
        try:
            self._serve(server, listener)
        finally:
            server.close_all("the daemon exits")
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
        listener.listen(128)
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
        reason = None
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
            server.reap()
            if server.stopping.is_set():
                reason = "stop requested"
                retire()
            elif server.idle_for() > server.idle_timeout:
                # give way to a starter holding the lock: it is about to use us
                reason = "idle for %d s" % server.idle_timeout
                retire(wait=False)
        self.log("exiting: %s" % reason)
        deadline = time.monotonic() + 10
        while server.active > (1 if reason == "stop requested" else 0) and time.monotonic() < deadline:
            time.sleep(0.02)  # let requests already accepted finish
        return reason

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
