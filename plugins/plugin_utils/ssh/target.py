# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where and as whom to log in to a VM over SSH: ``SshTarget``, built from a store handle (explicit settings
override it), and the engine's one-call helper ``connect`` (the readiness wait is ``readiness``).

This module is light on purpose: the connection plugin's worker processes (one per task) import it to
find the VM, then talk to the session daemon (``ssh_mux``). The SSH implementation itself, with paramiko,
is ``ssh_session`` and is imported only where a session is opened.
"""

from __future__ import annotations

__metaclass__ = type

import hashlib
import json
import os

from ansible_collections.vmctl.core.plugins.module_utils.errors import SshNotConfigured, VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager


class SshTarget:
    """Everything needed to log in to one VM; ``vm`` names it in every message."""

    FIELDS = ("vm", "host", "port", "user", "private_key_path", "known_hosts", "console_log", "cloud_init",
              "learn_host_keys", "console_offset", "forward_port", "jump")
    JUMP_FIELDS = ("name", "host", "port", "user", "private_key_file", "known_hosts_file")

    def __init__(self, vm, host, port, user, private_key_path, known_hosts, console_log=None, cloud_init=False,
                 learn_host_keys=None, console_offset=0, forward_port=None, jump=None):
        self.vm = vm
        self.host = host
        self.port = int(port) if port is not None else 22
        self.user = user
        self.private_key_path = private_key_path
        self.known_hosts = known_hosts
        self.console_log = console_log
        self.cloud_init = bool(cloud_init)
        # The VM's own known_hosts may be filled: None (never), "yes" (from the console), "accept-new" (or the first key seen)
        self.learn_host_keys = learn_host_keys
        self.console_offset = console_offset or 0
        self.forward_port = forward_port  # the SLIRP forward the pins name, beside "*"
        # The VM's hypervisor, when it is another host: {name, host, port, user, private_key_file, known_hosts_file}.
        # Then the address is on the hypervisor, and the key and known_hosts paths are files there.
        self.jump = dict(jump) if jump else None

    def pin_console_keys(self):
        """Pin what the guest printed on its console since its latest start (nothing if a key is pinned)."""
        if self.learn_host_keys:
            from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
            host_keys.pin_from_console(self.known_hosts, self.console_log, self.console_offset, self.forward_port)

    def to_json(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_json(cls, data):
        return cls(**{name: data.get(name) for name in cls.FIELDS})

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port) if ":" not in self.host else "[%s]:%d" % (self.host, self.port)

    def identity(self):
        """A digest of who we talk to *and* the trust material: a changed key or known_hosts file never reuses a session."""
        material = [self.vm, self.host, self.port, self.user, self.private_key_path, self.known_hosts,
                    self.cloud_init, self.jump]
        local = [self.jump["private_key_file"], self.jump["known_hosts_file"]] if self.jump else [self.private_key_path, self.known_hosts]
        material += [_file_digest(path) for path in local]
        return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()

    def check(self):
        """Raise SshError naming what is missing before any network traffic."""
        missing = [what for what, value in (("address", self.host), ("user", self.user),
                                            ("private key", self.private_key_path), ("known_hosts file", self.known_hosts))
                   if not value]
        if missing:
            raise SshNotConfigured("VM %s: no %s to log in with" % (self.vm, " and no ".join(missing)),
                                   hint="Create the VM with cloud-init (it generates a key and pins the host key), or set the "
                                        "connection's remote_addr/port/remote_user/private_key_file/known_hosts_file",
                                   name=self.vm)
        from ansible_collections.vmctl.core.plugins.module_utils.checks import file_kind, validate_login_user
        validate_login_user(self.user)  # a user reaches ssh's argv and paramiko: never an option
        local = (("private key", self.private_key_path), ("known_hosts file", self.known_hosts))
        if self.jump:  # the VM's files are on its hypervisor (read there at login); the hypervisor's are here
            self._check_jump()
            local = (("hypervisor's private key", self.jump["private_key_file"]),
                     ("hypervisor's known_hosts file", self.jump["known_hosts_file"]))
        for what, path in local:
            try:
                kind = file_kind(path)
            except OSError as err:
                raise SshNotConfigured("VM %s: cannot read %s %s: %s" % (self.vm, what, path, err.strerror),
                                       name=self.vm, path=path)
            if kind == "missing" and not (what == "known_hosts file" and self.learn_host_keys):
                raise SshNotConfigured("VM %s: %s %s does not exist" % (self.vm, what, path),
                                       hint="Was the VM destroyed? Check 'vmctl list' or the connection settings",
                                       name=self.vm, path=path)
            if kind not in (None, "missing"):  # a FIFO would block ssh (and us) opening it
                raise SshNotConfigured("VM %s: %s %s is %s, not a regular file" % (self.vm, what, path, kind),
                                       hint="Point the connection's setting at the file itself",
                                       name=self.vm, path=path)

    def _check_jump(self):
        from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_login_user
        missing = [key for key in ("host", "user", "private_key_file", "known_hosts_file") if not self.jump.get(key)]
        if missing:
            raise SshNotConfigured("VM %s: its hypervisor %s has no %s to log in with" % (
                self.vm, self.jump.get("name"), " and no ".join(missing)),
                hint="Set hypervisor_host, hypervisor_user, hypervisor_private_key_file and hypervisor_known_hosts_file "
                     "(the vms inventory sets them from its hypervisors option)", name=self.vm)
        validate_login_user(self.jump["user"])

    def console_hint(self):
        if self.console_log:
            return "See what the guest printed in %s" % self.console_log
        return "Check that the guest is running and sshd listens on %s" % self.address


def _file_digest(path):
    if not path:
        return None
    from ansible_collections.vmctl.core.plugins.module_utils.checks import read_small_file
    try:  # never blocks on a FIFO nor streams /dev/zero; check() names what is wrong with such a file
        return hashlib.sha256(read_small_file(path, "file", limit=1 << 20, binary=True)).hexdigest()
    except VmctlError:
        return None


def target_for(handle, host=None, port=None, user=None, private_key_path=None, known_hosts=None, guest_ip_timeout=0):
    """The SshTarget of a store handle; each given argument overrides what the handle says.

    The address comes from ``VmManager.endpoint``: a TAP guest's is looked up by its MAC (waiting up to
    ``guest_ip_timeout``) unless ``host`` is given.
    """
    if host and handle.network.type == "tap":
        default_host, default_port = None, 22
    else:
        default_host, default_port = VmManager().endpoint(handle, guest_ip_timeout)
    known_hosts = os.path.expanduser(known_hosts) if known_hosts else handle.known_hosts
    own = bool(known_hosts and handle.known_hosts) and os.path.abspath(known_hosts) == os.path.abspath(handle.known_hosts)
    return SshTarget(
        vm=handle.name, host=host or default_host, port=port or default_port, user=user or handle.ssh_user or "vm",
        private_key_path=os.path.expanduser(private_key_path) if private_key_path else handle.private_key_path,
        known_hosts=known_hosts, console_log=handle.console_log, cloud_init=handle.cloud_init,
        learn_host_keys=(handle.host_key_checking or "yes") if own else None,  # never into a file the user gave
        console_offset=handle.console_offset, forward_port=handle.ssh_host_port)


def resolve_target(vm_name, host=None, port=None, user=None, private_key_path=None, known_hosts=None, store=None,
                   guest_ip_timeout=0, jump=None, cloud_init=False):
    """``(target, handle)`` for the VM called ``vm_name`` in the store; given settings override the handle's.

    A name that is not in the store still works when the settings are complete (handle is then None). With
    ``jump`` (the VM's hypervisor) the local store is not read: the VM and its files are on that host, and
    ``cloud_init`` says whether the readiness wait also waits for cloud-init there.
    """
    from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
    from ansible_collections.vmctl.core.plugins.module_utils.checks import NAME_RE
    if jump:
        if not (host and port and user and private_key_path and known_hosts):
            raise SshNotConfigured("VM %s on hypervisor %s: no address, port, user, private key or known_hosts file "
                                   "(paths on the hypervisor) to log in with" % (vm_name, jump.get("name")),
                                   hint="List the VM with the vms inventory (hypervisors option), which sets them",
                                   name=vm_name)
        return SshTarget(vm=vm_name, host=host, port=port, user=user, private_key_path=private_key_path,
                         known_hosts=known_hosts, jump=jump, cloud_init=cloud_init), None
    store = store or VmStore()
    handle = store.find(vm_name) if isinstance(vm_name, str) and NAME_RE.fullmatch(vm_name) else None
    if handle is not None:
        return target_for(handle, host=host, port=port, user=user, private_key_path=private_key_path,
                          known_hosts=known_hosts, guest_ip_timeout=guest_ip_timeout), handle
    if host and user and private_key_path and known_hosts:
        return SshTarget(vm=vm_name, host=host, port=port or 22, user=user, private_key_path=os.path.expanduser(private_key_path),
                         known_hosts=os.path.expanduser(known_hosts)), None
    from ansible_collections.vmctl.core.plugins.module_utils.errors import VmNotFound
    raise VmNotFound("VM %r is not in the vmctl store %s" % (vm_name, store.path),
                     hint="Create it (vmctl.core.vm), set vmctl_vm_name to the VM's name, or give remote_addr, "
                          "remote_user, private_key_file and known_hosts_file", name=vm_name)


def require_running(handle):
    """Fail fast, naming the VM, when its backend says it is not running (SSH would only time out)."""
    from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for
    from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidState
    from ansible_collections.vmctl.core.plugins.module_utils.model import VmState
    state = backend_for(handle.backend).state(handle)
    if state == VmState.RUNNING:
        return
    command = "resume" if state == VmState.SUSPENDED else "start"
    raise InvalidState("VM %s is %s: no SSH to it" % (handle.name, state),
                       hint="%s it first: vmctl %s %s, or vmctl.core.vm_state name=%s state=running"
                            % (command.capitalize(), command, handle.name, handle.name),
                       name=handle.name, state=state)


# --- one-call helpers (used by modules) ----------------------------------------------------------

def connect(handle, host=None, timeout=10):
    """A logged-in SshSession to a store handle's VM (one attempt, no wait; HostKeyMismatch on a foreign key)."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import Retryable, SshSession
    from ansible_collections.vmctl.core.plugins.module_utils.errors import SshWaitTimeout
    target = target_for(handle, host=host)
    try:
        return SshSession.attempt(target, SshSession.credentials(target), timeout)
    except Retryable as err:
        raise SshWaitTimeout("VM %s: SSH at %s not ready: %s" % (target.vm, target.address, err.args[0]),
                             hint=err.hint or target.console_hint(), name=target.vm, console_log=target.console_log)


__all__ = ["SshTarget", "target_for", "resolve_target", "require_running", "connect"]
