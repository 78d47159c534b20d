# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH to a VM with its own key, its host key pinned in the VM's known_hosts (never auto-added)."""

from __future__ import annotations

__metaclass__ = type

import socket
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import HostKeyMismatch, SshError, Timeout

try:
    import paramiko
    HAS_PARAMIKO = True
except ImportError:  # pragma: no cover - reported when SSH is needed
    HAS_PARAMIKO = False

RETRY_INTERVAL = 2.0


def _require_paramiko():
    if not HAS_PARAMIKO:
        raise SshError("SSH needs the Python 'paramiko' package", hint="Install it: pip install paramiko")


def endpoint(handle, host=None):
    """``(host, port)`` to reach the VM: the SLIRP forward on 127.0.0.1, or ``host`` (a TAP guest's IP) on 22."""
    if handle.network.type == "user":
        return "127.0.0.1", handle.ssh_host_port
    return host, 22


def connect(handle, host=None, timeout=10):
    """A connected, authenticated paramiko client; HostKeyMismatch when the guest offers another key."""
    _require_paramiko()
    addr, port = endpoint(handle, host)
    client = paramiko.SSHClient()
    if handle.known_hosts:
        client.load_host_keys(handle.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(addr, port=port, username=handle.ssh_user or "vm", key_filename=handle.private_key_path,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                       look_for_keys=False)
    except paramiko.BadHostKeyException as err:
        client.close()
        raise HostKeyMismatch("VM %s offered host key %s, but %s pins %s" % (
            handle.name, err.key.get_fingerprint().hex(), handle.known_hosts, err.expected_key.get_fingerprint().hex()),
            hint="The VM was replaced or the key file was changed; recreate the VM or fix %s" % handle.known_hosts,
            name=handle.name)
    except paramiko.SSHException as err:
        client.close()
        if "not found in known_hosts" in str(err):
            raise HostKeyMismatch("VM %s offered a host key that %s does not know" % (handle.name, handle.known_hosts),
                                  hint="Recreate the VM so its host key is pinned again", name=handle.name)
        raise
    return client


def wait_until_ready(handle, timeout=120, host=None):
    """Seconds until an SSH login works and cloud-init has finished (it restarts sshd while it runs)."""
    begin = time.monotonic()
    last = None
    while True:
        try:
            client = connect(handle, host, timeout=10)
            try:
                if handle.cloud_init:
                    left = max(timeout - (time.monotonic() - begin), 5)
                    _stdin, stdout, _stderr = client.exec_command("cloud-init status --wait >/dev/null 2>&1; true", timeout=left)
                    stdout.channel.recv_exit_status()
                return time.monotonic() - begin
            finally:
                client.close()
        except HostKeyMismatch:
            raise
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as err:
            last = err
        if time.monotonic() - begin >= timeout:
            raise Timeout("VM %s: no SSH login within %d s (last error: %s)" % (handle.name, timeout, last),
                          hint="See what the guest printed in %s" % handle.console_log, name=handle.name)
        time.sleep(RETRY_INTERVAL)
