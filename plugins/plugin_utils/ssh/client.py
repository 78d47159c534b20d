# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSH session daemon, so that Ansible tasks do not each pay an SSH handshake.

ansible-core makes a new connection object for every task, in a new worker process. The first one
to need a VM starts a small detached daemon (double fork), **one per control directory** (so one per
controller user by default), that holds every VM's SSH session and serves requests on a unix socket;
every later task, for any VM, connects to that socket instead. One process with many paramiko
transports costs a fraction of a process per VM (``benchmarks/session_memory.py``).

* One session per *trust identity* inside the daemon: VM name, address, user, key file and
  known_hosts file **and** the digests of both files. Each request names its session (identity and
  target); a changed key or pinned host key never reuses an old session. The host key is checked
  against the VM's own pins at each login.
* Files ``<control dir>/sessions-v2.sock`` (0600) in a 0700 directory; ``sessions-v2.lock`` serializes
  starting and stopping the daemon; ``sessions-v2.log`` is its log.
* One request per unix connection, one thread per request and one SSH channel per request, so forks
  work in parallel and one VM's hung login or command never holds up another VM's requests. Logins
  to one VM are one at a time (a request that waited for a login that failed gets that error at
  once). Frames are ``type (1 byte) | length (4 bytes, big endian) | payload``. The client sends a
  REQUEST (JSON); the daemon answers ACCEPTED before it acts, so a client that sees no ACCEPTED
  knows nothing ran and may retry.

  - ``open``: log in to the target unless its session is open (PROGRESS lines of a readiness wait,
    then DONE ``{waited}``). Any other request for a target without an open session gets ERROR
    with ``login: true``; the client then opens it (after its ``before_login`` check) and asks again.
  - ``exec``: client STDIN*/STDIN_EOF; daemon STDOUT*/STDERR* then EXIT ``{status, signal}``.
  - ``put`` / ``get``: the daemon (same user, same host) reads or writes the local file itself
    and streams it over pipelined SFTP; answers DONE ``{bytes}``.
  - ``ping`` (DONE with pid and counters), ``stop`` (DONE; the session ends). Without a session:
    the daemon's own ping (every session's counters) and stop (the daemon exits).
  - Any failure: ERROR ``{class, code, message, hint, retry, login}``.
* A session ends after its ``idle_timeout`` seconds without requests, when its SSH transport dies
  (keepalives every 15 s; the next request logs in again), or on ``stop`` (the connection plugin's
  ``reset``). The daemon exits once it has held no session for its idle timeout, or on its ``stop``.

``MuxClient(persistent=False)`` runs the same server in-process over a socketpair: no daemon,
one handshake per connection object.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import SessionDaemonFailed
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.protocol import (
    ACCEPT_TIMEOUT, ACCEPTED, DEFAULT_CONTROL_DIR, DONE, ERROR, EXIT, IO_CHUNK, PROGRESS, REQUEST, SOCKET_PATH_MAX, STDERR,
    STDIN, STDIN_EOF, STDOUT, ControlPaths, FrameReader, ensure_control_dir, error_from_payload, frame, json_frame,
    read_frame)


# --- client ------------------------------------------------------------------------------------

class ExecStream:
    """The client side of an ``exec`` request: queue stdin, then ``poll()`` for output and the exit."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.setblocking(False)
        self._pending = bytearray()
        self._reader = FrameReader()
        self.status = None
        self.signal = None
        self.finished = False

    def send(self, data):
        for start in range(0, len(data), IO_CHUNK):
            self._pending += frame(STDIN, bytes(data[start:start + IO_CHUNK]))

    def close_stdin(self):
        self._pending += frame(STDIN_EOF)

    def poll(self, timeout=None):
        """Write what stdin can take, read what arrived: a list of ``(STDOUT|STDERR, bytes)``.

        Sets ``status``/``signal``/``finished`` on EXIT; raises the daemon's error on ERROR.
        """
        if self.finished:
            return []
        readable, writable = select.select([self.sock], [self.sock] if self._pending else [], [], timeout)[:2]
        if writable:
            try:
                sent = self.sock.send(self._pending[:IO_CHUNK * 4])
                del self._pending[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._pending.clear()  # the command stopped reading; its exit follows
        events = []
        if readable:
            try:
                data = self.sock.recv(IO_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.close()
                raise SessionDaemonFailed("the session daemon closed the connection before the command ended")
            for kind, payload in self._reader.feed(data or b""):
                if kind in (STDOUT, STDERR):
                    events.append((kind, payload))
                elif kind == EXIT:
                    result = json.loads(payload.decode("utf-8"))
                    self.status, self.signal = result["status"], result.get("signal")
                    self.finished = True
                    self.close()
                elif kind == ERROR:
                    self.close()
                    raise error_from_payload(payload)
        return events

    def wait(self):
        """Run to the end: ``(status, signal, stdout bytes, stderr bytes)``."""
        out, err = [], []
        while not self.finished:
            for kind, data in self.poll():
                (out if kind == STDOUT else err).append(data)
        return self.status, self.signal, b"".join(out), b"".join(err)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


class MuxClient:
    """Requests to the session of one SshTarget: ``exec``, ``put``, ``get``, ``ping``, ``stop``, ``close``.

    ``persistent`` (default) uses the control directory's daemon, started when missing or stale. Otherwise an
    in-process server over a socketpair, with the session closed by ``close()``.
    """

    def __init__(self, target, control_dir=DEFAULT_CONTROL_DIR, idle_timeout=60, wait_timeout=120, attempt_timeout=10,
                 persistent=True, log=None, before_login=None):
        self.target = target
        self.control_dir = os.path.abspath(os.path.expanduser(control_dir))
        self.identity = target.identity()
        self.paths = ControlPaths(self.control_dir)
        self.idle_timeout = idle_timeout
        self.wait_timeout = wait_timeout
        self.waited = None
        self.attempt_timeout = attempt_timeout
        self.persistent = persistent
        self.log = log or (lambda message: None)
        self.before_login = before_login  # called before a new SSH login (e.g. to fail fast on a stopped VM)
        self._local_server = None
        if persistent and len(self.paths.socket.encode("utf-8")) > SOCKET_PATH_MAX:
            raise SessionDaemonFailed("control socket path %s is longer than %d bytes" % (self.paths.socket, SOCKET_PATH_MAX),
                                      hint="Set the connection option control_path_dir to a shorter directory")

    def _named(self, request):
        return dict(request, session={"identity": self.identity, "target": self.target.to_json()})

    # -- requests -------------------------------------------------------------------------------
    def exec_command(self, command, pty=False, term=None):
        if isinstance(command, bytes):
            command = command.decode("utf-8", "surrogateescape")
        sock = self._request({"op": "exec", "command": command, "pty": bool(pty), "term": term})
        return ExecStream(sock)

    def put(self, local_path, remote_path, mode=None):
        return self._simple({"op": "put", "local": os.path.abspath(local_path), "remote": remote_path, "mode": mode})["bytes"]

    def get(self, remote_path, local_path):
        umask = os.umask(0o022)
        os.umask(umask)
        return self._simple({"op": "get", "remote": remote_path, "local": os.path.abspath(local_path), "umask": umask})["bytes"]

    def ping(self):
        return self._simple({"op": "ping"})

    def wait_ready(self, deadline=None, stall=None, on_progress=None, store_path=None):
        """The readiness wait of a booting VM (``readiness.ReadinessWait``), done by the login that opens this
        session, so that the tasks that follow use the session the wait opened: one login per VM.

        ``on_progress(line)`` gets the wait's progress lines. Returns the seconds waited, 0 when a session
        was already open (the VM was ready before).
        """
        self.waited = None
        store_path = store_path or paths.store_path()  # the daemon's own environment may name another data dir
        if not self.persistent:
            from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import ready_session
            self.close()
            session, self.waited = ready_session(self.target, deadline, stall, on_progress, store_path)
            self._local(session)
            return self.waited
        self._open({"deadline": deadline, "stall": stall, "store": store_path}, on_progress)
        return self.waited or 0.0

    def stop(self):
        """End this VM's session (the daemon and the other VMs' sessions go on); the next request logs in again."""
        if not self.persistent:
            self.close()
            return
        try:
            sock = self._open_socket()
        except OSError:
            return
        try:
            sock.settimeout(ACCEPT_TIMEOUT)
            sock.sendall(json_frame(REQUEST, self._named({"op": "stop"})))
            while read_frame(sock)[0] not in (DONE, ERROR):
                pass
        except (OSError, EOFError):
            pass
        finally:
            sock.close()

    def close(self):
        if self._local_server is not None:
            self._local_server.close_all("connection closed")
            self._local_server = None

    def _simple(self, request):
        sock = self._request(request)
        try:
            sock.settimeout(None)
            kind, payload = read_frame(sock)
        except (OSError, EOFError) as err:
            raise SessionDaemonFailed("VM %s: the session daemon went away during %s (%s)" % (self.target.vm, request["op"], err),
                                      hint="See %s" % self.paths.log, name=self.target.vm)
        finally:
            sock.close()
        if kind == ERROR:
            raise error_from_payload(payload)
        return json.loads(payload.decode("utf-8"))

    def _request(self, request):
        """A socket on which ``request`` was ACCEPTED: the session is opened first when the daemon holds none
        (once), and a daemon that went away before it accepted is replaced (once)."""
        data = json_frame(REQUEST, self._named(request))
        last = None
        opened = replaced = False
        while True:
            sock = self._connect()
            try:
                sock.settimeout(ACCEPT_TIMEOUT)
                sock.sendall(data)
                kind, payload = read_frame(sock)
            except (OSError, EOFError) as err:
                sock.close()
                last = "%s" % (err,)
                if replaced:
                    break
                replaced = True  # a daemon on its way out: the next connect finds (or starts) its successor
                continue
            if kind == ACCEPTED:
                sock.settimeout(None)
                return sock
            sock.close()
            if kind != ERROR:
                last = "unexpected answer %d" % kind
                break
            answer = json.loads(payload.decode("utf-8"))
            if answer.get("login") and not opened:
                opened = True
                self._open()
                continue
            if answer.get("retry") and not replaced:
                replaced = True
                continue
            raise error_from_payload(payload)
        raise SessionDaemonFailed("VM %s: the session daemon did not take the request (%s)" % (self.target.vm, last),
                                  hint="See %s" % self.paths.log, name=self.target.vm)

    def _open(self, readiness=None, on_progress=None):
        """Have the daemon log in to the target (it does nothing if the session is open): sets ``waited``."""
        if self.before_login:
            self.before_login()
        login = {"wait_timeout": self.wait_timeout, "attempt_timeout": self.attempt_timeout,
                 "idle_timeout": self.idle_timeout, "readiness": readiness}
        # the login ends itself at its deadline; this bounds a daemon that never answers
        timeout = ((readiness.get("deadline") or 900) if readiness else self.wait_timeout) + 60
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.settimeout(ACCEPT_TIMEOUT)
                sock.sendall(json_frame(REQUEST, self._named({"op": "open", "login": login})))
                kind, payload = read_frame(sock)
                if kind == ACCEPTED:
                    sock.settimeout(timeout)
                    kind, payload = read_frame(sock)
                    while kind == PROGRESS:
                        if on_progress is not None:
                            on_progress(payload.decode("utf-8", "replace"))
                        kind, payload = read_frame(sock)
            except (OSError, EOFError) as err:
                if attempt == 1:
                    continue
                raise SessionDaemonFailed("VM %s: the session daemon went away while it logged in (%s); its log %s ends "
                                          "with: %s" % (self.target.vm, err, self.paths.log, _tail(self.paths.log)),
                                          name=self.target.vm)
            finally:
                sock.close()
            if kind == ERROR:
                if json.loads(payload.decode("utf-8")).get("retry") and attempt == 1:
                    continue
                raise error_from_payload(payload)
            self.waited = json.loads(payload.decode("utf-8")).get("waited")
            return

    # -- reaching a server ----------------------------------------------------------------------
    def _connect(self):
        if not self.persistent:
            return self._local_pair()
        try:
            return self._open_socket()
        except OSError:
            pass
        ensure_control_dir(self.control_dir)
        with open(self.paths.lock, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    return self._open_socket()  # another starter was first
                except OSError:
                    pass
                self._start_daemon()
                return self._open_socket()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _open_socket(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.paths.socket)
        except OSError:
            sock.close()
            raise
        return sock

    def _local(self, session):
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.server import MuxServer
        self._local_server = MuxServer(self.log)
        self._local_server.adopt(self.target, session)

    def _local_pair(self):
        usable = self._local_server is not None and all(s.usable() for s in self._local_server.sessions())
        if not usable:
            from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import login
            self.close()
            if self.before_login:
                self.before_login()
            self._local(login(self.target, self.wait_timeout, self.attempt_timeout))
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._local_server.handle, args=(theirs,), daemon=True).start()
        return ours

    def _start_daemon(self):
        """Spawn the daemon (under the lock) and wait until it listens."""
        config = {"control_dir": self.control_dir, "idle_timeout": self.idle_timeout}
        read_fd, write_fd = os.pipe()
        config["status_fd"] = write_fd
        root = _collections_root()
        boot = ("import sys; sys.path.insert(0, %r); "
                "from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import server; server.daemon_main()" % root)
        self.log("starting the session daemon (%s)" % self.paths.socket)
        try:
            log_fd = os.open(self.paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=log_fd, stderr=log_fd,
                                        pass_fds=(write_fd,), close_fds=True, cwd="/", start_new_session=True,
                                        env=dict(os.environ, MALLOC_ARENA_MAX="2"))
            finally:
                os.close(log_fd)
            os.close(write_fd)
            write_fd = None
            proc.communicate(json.dumps(config).encode("utf-8"), timeout=60)
            line = self._read_status(read_fd, 60)
        finally:
            if write_fd is not None:
                os.close(write_fd)
            os.close(read_fd)
        if line is None:
            raise SessionDaemonFailed("VM %s: the session daemon exited without a word; its log %s ends with: %s"
                                      % (self.target.vm, self.paths.log, _tail(self.paths.log)),
                                      name=self.target.vm)
        status = json.loads(line)
        if not status.get("ok"):
            raise error_from_payload(json.dumps(status["error"]).encode("utf-8"))
        self.log("session daemon pid %s ready" % status.get("pid"))

    @staticmethod
    def _read_status(fd, timeout):
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([fd], [], [], min(left, 1.0))[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode("utf-8") if b"\n" in data else None


def _collections_root():
    """The directory holding ``ansible_collections`` that this module was loaded from."""
    path = os.path.abspath(__file__)
    for _level in range(7):  # ansible_collections/vmctl/core/plugins/plugin_utils/ssh/client.py
        path = os.path.dirname(path)
    return path


def _tail(path, size=2000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace").strip()[-size:]
    except OSError as err:
        return "(unreadable: %s)" % (os.strerror(err.errno) if err.errno else err)


__all__ = ["MuxClient", "ExecStream", "ControlPaths", "DEFAULT_CONTROL_DIR"]
