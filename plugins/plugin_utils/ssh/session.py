# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An SSH session to a VM with paramiko: the VM's key, its host key pinned in its known_hosts (never added).

``PinnedHostKeys`` reads an OpenSSH known_hosts file; ``SshSession.attempt`` is one login attempt that
checks the offered host key against the pins (what is normal while a guest boots is ``Retryable``, with
how far it got; ``readiness`` retries).  A session runs commands (exit status *and* the signal
that killed them) and moves files over a pool of SFTP channels, streamed and pipelined.
"""

from __future__ import annotations

__metaclass__ = type

import base64
import collections
import contextlib
import hashlib
import hmac
import logging
import os
import re
import select
import socket
import threading
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    HostKeyMismatch, ParamikoMissing, SshAuthFailed, SshDisconnected, SshError, SshNotConfigured, SshTransferFailed,
    Timeout)

# Channel window and packet size: larger than paramiko's defaults (2 MiB, 32 KiB) to keep the
# pipe full on bulk transfers.
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET_SIZE = 32768
# Ciphers in our order of preference: AES-GCM needs no separate MAC pass and is the fastest in
# paramiko; the rest are paramiko's defaults.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")
TRANSFER_CHUNK = 256 * 1024
READ_WINDOW = 8 * 1024 * 1024  # bytes of pipelined SFTP reads in flight at most (bounded memory)

_paramiko = None


def _require_paramiko():
    """The paramiko module, imported on first use."""
    global _paramiko
    if _paramiko is None:
        try:
            import paramiko
        except ImportError:
            raise ParamikoMissing("SSH needs the Python 'paramiko' package")
        _paramiko = paramiko
        # paramiko logs every failed banner read with a traceback; while a guest boots those are expected
        # and our own errors carry the last one. Without a handler of its own, keep them off stderr.
        logger = logging.getLogger("paramiko")
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    return _paramiko


def _record_exit_signal(transport):
    """Make ``transport``'s channels keep RFC 4254 ``exit-signal`` (paramiko drops it, so a command killed by a
    signal would read as a plain -1): the signal name lands in ``channel.vmctl_exit_signal``."""
    from paramiko.common import MSG_CHANNEL_REQUEST
    table = dict(transport._channel_handler_table)
    original = table[MSG_CHANNEL_REQUEST]

    def handle_request(channel, m):
        start = m.packet.tell()
        if m.get_text() == "exit-signal":
            m.get_boolean()  # want_reply: never set for exit-signal
            channel.vmctl_exit_signal = m.get_text()
            channel.exit_status = -1
            channel.status_event.set()
            return
        m.packet.seek(start)
        return original(channel, m)

    table[MSG_CHANNEL_REQUEST] = handle_request
    transport._channel_handler_table = table


def fingerprint(key_type, blob):
    """OpenSSH's ``SHA256:…`` fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return "%s SHA256:%s" % (key_type, digest)


_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")

PinnedKey = collections.namedtuple("PinnedKey", "key_type blob line")


class PinnedHostKeys:
    """An OpenSSH known_hosts file: ``[host]:port``, ``*``/``?`` patterns, ``!negation``, hashed ``|1|`` names,
    ``@revoked`` markers (``@cert-authority`` lines are not used: we pin keys, not CAs)."""

    def __init__(self, path, missing_ok=False, text=None):
        self.path = path
        self.entries = []  # (marker, patterns, PinnedKey)
        try:
            if text is not None:  # the file's contents, read elsewhere (on the VM's hypervisor)
                lines = text.splitlines()
            else:
                with open(path, "r", encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
        except FileNotFoundError:
            if not missing_ok:
                raise SshNotConfigured("known_hosts file %s does not exist" % path, path=path)
            lines = []
        except OSError as err:
            raise SshNotConfigured("cannot read known_hosts file %s: %s" % (path, err.strerror), path=path)
        for number, line in enumerate(lines, 1):
            fields = line.strip().split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = None
            if fields[0].startswith("@"):
                marker, fields = fields[0], fields[1:]
            if len(fields) < 3:
                continue
            try:
                blob = base64.b64decode(fields[2].encode("ascii"), validate=True)
            except ValueError:
                continue
            self.entries.append((marker, fields[0].split(","), PinnedKey(fields[1], blob, number)))

    @staticmethod
    def host_name(host, port):
        return host if int(port) == 22 else "[%s]:%d" % (host, int(port))

    @staticmethod
    def _matches(pattern, name):
        if pattern.startswith("|1|"):
            try:
                salt, digest = [base64.b64decode(part) for part in pattern[3:].split("|", 1)]
            except (ValueError, TypeError):
                return False
            return hmac.compare_digest(hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest(), digest)
        # OpenSSH patterns know only '*' and '?' ('[' is literal, as in [host]:port)
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
        return re.fullmatch(regex, name.lower(), re.DOTALL) is not None

    def _entry_matches(self, patterns, name):
        matched = False
        for pattern in patterns:
            if pattern.startswith("!"):
                if self._matches(pattern[1:], name):
                    return False
            elif self._matches(pattern, name):
                matched = True
        return matched

    def lookup(self, host, port):
        """``(pinned keys, revoked keys)`` for ``host:port``."""
        name = self.host_name(host, port)
        pinned, revoked = [], []
        for marker, patterns, key in self.entries:
            if marker not in (None, "@revoked") or not self._entry_matches(patterns, name):
                continue
            (revoked if marker == "@revoked" else pinned).append(key)
        return pinned, revoked

    def key_algorithms(self, host, port):
        """Host key algorithms to ask for, pinned ones first (so the server shows the key we pinned)."""
        algorithms = []
        for key in self.lookup(host, port)[0]:
            for algorithm in (_RSA_ALGORITHMS if key.key_type == "ssh-rsa" else (key.key_type,)):
                if algorithm not in algorithms:
                    algorithms.append(algorithm)
        return algorithms

    def verify(self, vm, host, port, key_type, blob):
        """Raise HostKeyMismatch unless the offered key is pinned (and not revoked) for ``host:port``."""
        pinned, revoked = self.lookup(host, port)
        offered = fingerprint(key_type, blob)
        name = self.host_name(host, port)
        if any(k.blob == blob for k in revoked):
            raise HostKeyMismatch("VM %s: the host key offered at %s (%s) is marked @revoked in %s" % (vm, name, offered, self.path),
                                  name=vm, offered=offered, known_hosts=self.path)
        if any(k.blob == blob for k in pinned):
            return
        if not pinned:
            raise HostKeyMismatch(
                "VM %s: %s pins no host key for %s; refusing the offered key %s" % (vm, self.path, name, offered),
                hint="vmctl pins the key it generated for the VM; a VM created from user-supplied user-data has none. "
                     "Point known_hosts_file (vmctl_known_hosts) at a file with the guest's key",
                name=vm, offered=offered, expected=[], known_hosts=self.path)
        expected = [fingerprint(k.key_type, k.blob) for k in pinned]
        raise HostKeyMismatch(
            "VM %s: HOST KEY MISMATCH at %s: the guest offered %s, but %s pins %s (line %s)" % (
                vm, name, offered, self.path, " or ".join(expected), ", ".join(str(k.line) for k in pinned)),
            name=vm, offered=offered, expected=expected, known_hosts=self.path)


# --- the session ---------------------------------------------------------------------------

class _Retryable(Exception):
    """A failure that is normal while a guest boots; ``phase`` is how far the attempt got (a PHASES index),
    ``hint`` what to do if it never stops."""

    def __init__(self, message, phase=0, hint=None):
        super().__init__(message)
        self.phase = phase
        self.hint = hint


# How far a login attempt got: the readiness wait counts a later phase as progress.
PHASES = ("no TCP connection", "no SSH handshake", "login refused", "logged in")


def _load_private_key(target, data=None):
    """The target's private key, from its file (or from ``data``, the file's bytes read on the VM's hypervisor)."""
    paramiko = _require_paramiko()
    if data is not None:
        import shutil
        import tempfile
        directory = tempfile.mkdtemp(prefix="vmctl-key-")  # 0700: paramiko detects a key's type from a path
        try:
            path = os.path.join(directory, "key")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
            return _load_private_key(SshTargetPath(target, path))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    try:
        return paramiko.PKey.from_path(target.private_key_path)
    except paramiko.PasswordRequiredException:
        raise SshAuthFailed("VM %s: private key %s is encrypted" % (target.vm, target.private_key_path),
                            hint="Use an unencrypted key for the VM (vmctl generates one) or load it into no agent: "
                                 "agents are not used", name=target.vm)
    except (OSError, paramiko.SSHException, ValueError) as err:
        raise SshAuthFailed("VM %s: cannot load private key %s: %s" % (target.vm, target.private_key_path, err),
                            name=target.vm)


def _describe(err):
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err) or type(err).__name__
    return text


class SshTargetPath:
    """A target seen with another private key path (for a key read from the hypervisor into a private file)."""

    def __init__(self, target, private_key_path):
        self.vm, self.private_key_path = target.vm, private_key_path


class _Hop:
    """The VM's hypervisor as an SSH hop (OpenSSH's ProxyJump): its own host key checked against its known_hosts,
    the VM's key and pins read there, and a ``direct-tcpip`` channel to the VM's forward on its 127.0.0.1."""

    LIMIT = 1 << 20

    def __init__(self, target, session):
        self.target, self.session = target, session

    @classmethod
    def connect(cls, target, timeout):
        jump = target.jump  # the hypervisor as an SshTarget of its own (type(): target imports this module)
        hop = type(target)(jump["name"], jump["host"], jump.get("port") or 22, jump["user"], jump["private_key_file"],
                           jump["known_hosts_file"])
        try:
            session = SshSession.attempt(hop, _load_private_key(hop), timeout)
        except _Retryable as err:
            raise _Retryable("hypervisor %s (%s): %s" % (hop.vm, hop.address, err.args[0]), 0, err.hint)
        except SshError as err:
            raise err.with_message("VM %s: through hypervisor %s: %s" % (target.vm, hop.vm, without_vm_prefix(err.message, hop.vm)))
        return cls(target, session)

    def read(self, path, what):
        """A small file of the VM's on the hypervisor (its key, its known_hosts)."""
        try:
            with self.session.sftp() as sftp:
                with sftp.open(path, "rb") as f:
                    data = f.read(self.LIMIT + 1)
        except (OSError, IOError) as err:
            raise SshNotConfigured("VM %s: cannot read its %s %s on hypervisor %s: %s" % (
                self.target.vm, what, path, self.session.target.vm, _describe(err)),
                hint="Was the VM destroyed? Check the vms inventory", name=self.target.vm, path=path)
        if len(data) > self.LIMIT:
            raise SshNotConfigured("VM %s: its %s %s on hypervisor %s is larger than %d bytes" % (
                self.target.vm, what, path, self.session.target.vm, self.LIMIT), name=self.target.vm, path=path)
        return data

    def channel(self, host, port, timeout):
        paramiko = _require_paramiko()
        try:
            return self.session.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as err:  # nothing listens yet: the VM boots, or is down
            raise _Retryable("%s:%d through hypervisor %s: %s" % (host, port, self.session.target.vm, _describe(err)), 0)

    def close(self):
        self.session.close()


def without_vm_prefix(message, name):
    """``message`` without the ``VM <name>: `` this layer starts it with (for a peer that is not a VM)."""
    prefix = "VM %s: " % name
    return message[len(prefix):] if message.startswith(prefix) else message


class SshSession:
    """One authenticated SSH transport to a VM: ``run``, ``open_command``, ``put``, ``get``, ``close``."""

    def __init__(self, target, transport):
        self.target = target
        self.transport = transport
        self._sftp_pool = []
        self._sftp_lock = threading.Lock()

    # -- connecting -------------------------------------------------------------------------------
    @staticmethod
    def credentials(target):
        """The target's private key, checked (with the rest of its settings) before any network traffic."""
        _require_paramiko()
        target.check()
        return None if target.jump else _load_private_key(target)  # through a hypervisor: read there, at login

    @classmethod
    def attempt(cls, target, pkey, timeout):
        """One login attempt: a session, or ``Retryable`` (with how far it got) for what is normal while a guest boots."""
        return cls(target, cls._connect_once(target, pkey, timeout))

    @staticmethod
    def _pins(target):
        """The pins for this attempt: the known_hosts file, after pinning what the console printed meanwhile."""
        target.pin_console_keys()
        return PinnedHostKeys(target.known_hosts, missing_ok=bool(target.learn_host_keys))

    @classmethod
    def _verify_host_key(cls, target, pins, server_key):
        """HostKeyMismatch for a key other than the pinned one; with nothing at all pinned yet in the VM's own file,
        ``accept-new`` pins the offered key, else the login waits for the console to print the keys."""
        from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
        key_type, blob = server_key.get_name(), server_key.asbytes()
        if target.learn_host_keys and not pins.entries and not host_keys.pinned_keys(target.known_hosts):
            if target.learn_host_keys != "accept-new":
                raise _Retryable(
                    "no host key pinned yet: the guest has not printed cloud-init's SSH HOST KEY KEYS block on its "
                    "console (%s) since it started (it offers %s)" % (target.console_log, fingerprint(key_type, blob)), 1,
                    "An image that prints no host keys on its serial console needs the opt-in "
                    "ssh { host-key-checking \"accept-new\" } (pins the first key seen, refuses any change after it)")
            host_keys.pin(target.known_hosts, ["%s %s" % (key_type, base64.b64encode(blob).decode("ascii"))],
                          target.forward_port)
            pins = PinnedHostKeys(target.known_hosts)  # a pin written meanwhile by someone else wins
        pins.verify(target.vm, target.host, target.port, key_type, blob)

    @classmethod
    def _connect_once(cls, target, pkey, timeout):
        if not target.jump:
            pins = cls._pins(target)
            try:
                sock = socket.create_connection((target.host, target.port), timeout=timeout)
            except OSError as err:
                raise _Retryable("%s: %s" % (target.address, _describe(err)), 0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls._handshake(target, pins, pkey, sock, timeout, None)
        hop = _Hop.connect(target, timeout)
        try:
            pins = PinnedHostKeys(target.known_hosts, text=hop.read(target.known_hosts, "known_hosts file").decode("utf-8", "replace"))
            pkey = _load_private_key(target, hop.read(target.private_key_path, "private key"))
            return cls._handshake(target, pins, pkey, hop.channel(target.host, target.port, timeout), timeout, hop)
        except BaseException:
            hop.close()
            raise

    @classmethod
    def _handshake(cls, target, pins, pkey, sock, timeout, hop):
        paramiko = _require_paramiko()
        transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        transport.vmctl_hop = hop  # closed with the transport's session
        try:
            _record_exit_signal(transport)
            options = transport.get_security_options()
            supported = tuple(options.ciphers)
            options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in supported) + tuple(c for c in supported if c not in PREFERRED_CIPHERS)
            wanted = [a for a in pins.key_algorithms(target.host, target.port) if a in options.key_types]
            if wanted:
                options.key_types = tuple(wanted) + tuple(a for a in options.key_types if a not in wanted)
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            try:
                transport.start_client(timeout=timeout)
                server_key = transport.get_remote_server_key()
            except (paramiko.SSHException, EOFError, OSError) as err:
                # a booting guest: QEMU's forward accepts and closes, or sshd restarts under cloud-init
                raise _Retryable("%s: %s" % (target.address, _describe(err)), 1)
            cls._verify_host_key(target, pins, server_key)
            try:
                transport.auth_publickey(target.user, pkey)
            except paramiko.AuthenticationException as err:
                # cloud-init may not have installed the key yet: retried until the deadline
                raise _Retryable("authentication as %s with %s failed (%s)" % (target.user, target.private_key_path, _describe(err)), 2)
            except (paramiko.SSHException, EOFError, OSError) as err:
                raise _Retryable("%s: %s" % (target.address, _describe(err)), 2)
            transport.set_keepalive(15)
            return transport
        except BaseException:
            transport.close()
            raise

    # -- state ----------------------------------------------------------------------------------
    def is_active(self):
        return self.transport is not None and self.transport.is_active()

    def close(self):
        with self._sftp_lock:
            pool, self._sftp_pool = self._sftp_pool, []
        for sftp in pool:
            try:
                sftp.close()
            except Exception:
                pass
        if self.transport is not None:
            self.transport.close()
            hop = getattr(self.transport, "vmctl_hop", None)
            if hop is not None:
                hop.close()

    def _channel_failed(self, what, err):
        if not self.is_active():
            return SshDisconnected("VM %s: the SSH connection to %s is gone (%s)" % (self.target.vm, self.target.address, _describe(err)),
                                   hint=self.target.console_hint(), name=self.target.vm)
        return SshError("VM %s: cannot %s: %s" % (self.target.vm, what, _describe(err)), name=self.target.vm)

    # -- commands -------------------------------------------------------------------------------
    def open_command(self, command, pty=False, term="xterm", width=80, height=24):
        """A paramiko channel running ``command`` (bytes or text); read it, then ``exit_of(channel)``."""
        paramiko = _require_paramiko()
        try:
            channel = self.transport.open_session(timeout=30)
            if pty:
                channel.get_pty(term=term, width=width, height=height)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise self._channel_failed("start a command", err)
        return channel

    @staticmethod
    def exit_of(channel):
        """``(exit status, signal name or None)`` once the command ended."""
        status = channel.recv_exit_status()
        signal = getattr(channel, "vmctl_exit_signal", None)
        return (status if signal is None else -1), signal

    def run(self, command, stdin=None, timeout=None, pty=False):
        """Run a command to its end: ``(exit status, stdout bytes, stderr bytes, signal)``."""
        channel = self.open_command(command, pty=pty)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = [], []
            while True:
                while channel.recv_ready():
                    out.append(channel.recv(65536))
                while channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(65536))
                if channel.eof_received or channel.closed:
                    if not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout("VM %s: command did not finish within %s s" % (self.target.vm, timeout), name=self.target.vm)
                select.select([channel], [], [], left)
            if deadline is not None:
                channel.status_event.wait(max(0.1, deadline - time.monotonic()))
            status, signal = self.exit_of(channel)
            return status, b"".join(out), b"".join(err), signal
        finally:
            channel.close()

    # -- files ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def sftp(self):
        """An SFTP client from the session's pool for the duration (for listings, folders, stat)."""
        client = self._sftp()
        healthy = False
        try:
            yield client
            healthy = True
        finally:
            self._release(client, healthy)

    def _sftp(self):
        paramiko = _require_paramiko()
        with self._sftp_lock:
            if self._sftp_pool:
                return self._sftp_pool.pop()
        try:
            return paramiko.SFTPClient.from_transport(self.transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise self._channel_failed("open an SFTP session", err)

    def _release(self, sftp, healthy):
        if healthy and self.is_active():
            with self._sftp_lock:
                self._sftp_pool.append(sftp)
        else:
            try:
                sftp.close()
            except Exception:
                pass

    def _transfer_error(self, verb, path, err):
        if isinstance(err, SshError):
            return err
        if isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        else:
            reason = _describe(err)
        if not self.is_active():
            return self._channel_failed("%s %s" % (verb, path), err)
        return SshTransferFailed("VM %s: cannot %s %s: %s" % (self.target.vm, verb, path, reason), name=self.target.vm, path=path)

    def put(self, local_path, remote_path, mode=None):
        """Upload ``local_path`` to ``remote_path`` in pipelined SFTP writes; returns bytes sent."""
        try:
            source = open(local_path, "rb")
        except OSError as err:
            raise SshTransferFailed("VM %s: cannot read %s: %s" % (self.target.vm, local_path, err.strerror),
                                    name=self.target.vm, path=local_path)
        sftp = self._sftp()
        healthy = False
        try:
            with source:
                sent = 0
                with sftp.open(remote_path, "wb") as remote:
                    remote.set_pipelined(True)
                    while True:
                        chunk = source.read(TRANSFER_CHUNK)
                        if not chunk:
                            break
                        remote.write(chunk)
                        sent += len(chunk)
                    if mode is not None:
                        remote.chmod(mode)
                size = sftp.stat(remote_path).st_size
                if size != sent:
                    raise SshTransferFailed("VM %s: %s has %d bytes after upload, sent %d" % (self.target.vm, remote_path, size, sent),
                                            name=self.target.vm, path=remote_path)
            healthy = True
            return sent
        except Exception as err:
            raise self._transfer_error("write", remote_path, err)
        finally:
            self._release(sftp, healthy)

    def get(self, remote_path, local_path, file_mode=0o644):
        """Download ``remote_path`` to ``local_path``: windows of pipelined reads, never the whole file in memory."""
        sftp = self._sftp()
        healthy = False
        try:
            with sftp.open(remote_path, "rb") as remote:
                size = remote.stat().st_size
                fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode)
                with os.fdopen(fd, "wb") as out:
                    offset = 0
                    while offset < size:
                        end = min(size, offset + READ_WINDOW)
                        chunks = [(o, min(remote.MAX_REQUEST_SIZE, end - o)) for o in range(offset, end, remote.MAX_REQUEST_SIZE)]
                        for data in remote.readv(chunks):
                            out.write(data)
                        offset = end
                    # a file that grew while we read it: the rest, sequentially
                    while True:
                        data = remote.read(TRANSFER_CHUNK)
                        if not data:
                            break
                        out.write(data)
                        offset += len(data)
            healthy = True
            return offset
        except Exception as err:
            raise self._transfer_error("read", remote_path, err)
        finally:
            self._release(sftp, healthy)


Retryable = _Retryable

__all__ = ["SshSession", "PinnedHostKeys", "fingerprint", "Retryable", "PHASES"]
