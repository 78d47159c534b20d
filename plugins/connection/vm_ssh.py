# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
name: vm_ssh
short_description: Run tasks on vmctl VMs over SSH with the VM's key, its pinned host key and a shared session
version_added: 0.1.0
author:
  - vmctl.core developers (@vmctl)
description:
  - Connects to a VM managed by vmctl (a QEMU or Propolis guest in the vmctl store) with SSH, implemented
    with paramiko on the controller.
  - The VM is found by name (O(vmctl_vm_name), by default the inventory host name) in the vmctl store
    (C($XDG_DATA_HOME/vmctl/vms.json)); its address, port, user, private key and known_hosts file come
    from there. Settings given explicitly (C(ansible_host), C(ansible_port), C(ansible_user),
    C(ansible_ssh_private_key_file), C(ansible_vmctl_known_hosts_file)) override the store. Works for hosts of the
    P(vmctl.core.vms#inventory) inventory and for hosts added with M(ansible.builtin.add_host).
  - The host variables of this plugin's own options begin with C(ansible_vmctl_); the older names
    C(vmctl_vm_name), C(vmctl_data_dir) and C(vmctl_known_hosts) still work.
  - Waits up to O(wait_timeout) seconds for the guest to accept a login (a booting guest refuses
    connections or closes them before the SSH banner), then, for a VM whose cloud-init vmctl wrote,
    until cloud-init has finished (C(/run/cloud-init/result.json) exists, else C(cloud-init status --wait)).
  - The host key the guest offers must be pinned for its address in the VM's known_hosts file, which
    vmctl writes when it creates the VM. Unknown keys are never added; a mismatch fails the host naming
    the VM and both fingerprints.
  - One SSH session per VM (and user, key and known_hosts) is kept by a small daemon on the controller,
    one daemon per O(control_path_dir) holding every VM's session, started by the first task that needs
    it and shared by every later task and fork; it listens on a unix socket (mode 0600) in
    O(control_path_dir). A VM's session ends after O(idle_timeout) seconds without requests or when the
    VM goes away (the next task logs in again); the daemon exits once it holds no session. Set
    O(persistent=false) to log in once per task instead.
  - Pipelining is supported and on by default; files move over SFTP, streamed and pipelined.
requirements:
  - paramiko >= 3.2 on the controller
notes:
  - The session daemon's log is C(<control_path_dir>/sessions-v2.log).
  - O(idle_timeout), O(wait_timeout) and O(timeout) apply to a VM's session when it logs in; a session that is already open keeps its own.
  - A change of the VM's key or known_hosts file starts a new session; the old one idles out.
  - "C(meta: reset_connection) ends the VM's session (the other VMs' sessions go on); the next task logs in again."
options:
  vmctl_vm_name:
    description:
      - Name of the VM in the vmctl store.
    type: string
    vars:
      - name: inventory_hostname
      - name: vmctl_vm_name
      - name: ansible_vmctl_vm_name
  data_dir:
    description:
      - vmctl's data directory, whose C(vms.json) is the store the VM is looked up in. Default
        C($XDG_DATA_HOME/vmctl) (C(~/.local/share/vmctl)). The P(vmctl.core.vms#inventory) inventory sets it when
        its own O(vmctl.core.vms#inventory:data_dir) is set.
    type: path
    vars:
      - name: vmctl_data_dir
      - name: ansible_vmctl_data_dir
  remote_addr:
    description:
      - Address to connect to. Default is the VM's own (C(127.0.0.1) for user-mode networking, the address
        found for its MAC address for TAP networking).
    type: string
    vars:
      - name: ansible_host
      - name: ansible_ssh_host
  port:
    description:
      - SSH port. Default is the VM's forwarded port (user-mode networking) or 22.
    type: integer
    vars:
      - name: ansible_port
      - name: ansible_ssh_port
    keyword:
      - name: port
  remote_user:
    description:
      - User to log in as. Default is the VM's SSH user from the store (C(vm) unless the VMFile says otherwise).
    type: string
    vars:
      - name: ansible_user
      - name: ansible_ssh_user
    keyword:
      - name: remote_user
    cli:
      - name: user
  private_key_file:
    description:
      - Private key to log in with. Default is the VM's key from the store (the key vmctl generated for it,
        or the VMFile's C(ssh { private-key }) ).
    type: path
    vars:
      - name: ansible_private_key_file
      - name: ansible_ssh_private_key_file
    cli:
      - name: private_key_file
        option: "--private-key"
  known_hosts_file:
    description:
      - known_hosts file that pins the VM's host key. Default is the VM's C(known_hosts) in its work directory.
      - Entries may use C([host]:port), C(*) and C(?) patterns, C(!) negation, hashed names and C(@revoked).
    type: path
    vars:
      - name: vmctl_known_hosts
      - name: ansible_vmctl_known_hosts_file
    env:
      - name: ANSIBLE_VMCTL_KNOWN_HOSTS_FILE
  hypervisor:
    description:
      - The VM's hypervisor, when it is another host (the P(vmctl.core.vms#inventory) inventory sets this and the other
        C(hypervisor_*) settings from its O(vmctl.core.vms#inventory:hypervisors) option). The VM's address is then on the hypervisor
        (its SSH forward on the hypervisor's 127.0.0.1, exposed nowhere), and O(private_key_file) and
        O(known_hosts_file) are paths there.
      - The connection logs in to the hypervisor first, checking its host key against O(hypervisor_known_hosts_file),
        reads the VM's key and pins there, and reaches the VM through a C(direct-tcpip) channel, as OpenSSH's
        ProxyJump does; the VM's host key is then checked against its own pins.
    type: string
    vars:
      - name: ansible_vmctl_hypervisor
  hypervisor_host:
    description: Address of O(hypervisor) (default its name).
    type: string
    vars:
      - name: ansible_vmctl_hypervisor_host
  hypervisor_port:
    description: SSH port of O(hypervisor).
    type: integer
    default: 22
    vars:
      - name: ansible_vmctl_hypervisor_port
  hypervisor_user:
    description: User to log in to O(hypervisor) as.
    type: string
    vars:
      - name: ansible_vmctl_hypervisor_user
  hypervisor_private_key_file:
    description: Private key (on the controller) to log in to O(hypervisor) with.
    type: path
    vars:
      - name: ansible_vmctl_hypervisor_private_key_file
  hypervisor_known_hosts_file:
    description: known_hosts file (on the controller) that pins O(hypervisor)'s host key.
    type: path
    default: ~/.ssh/known_hosts
    vars:
      - name: ansible_vmctl_hypervisor_known_hosts_file
  wait_timeout:
    description:
      - Seconds to wait for the VM to accept an SSH login when a session is opened. A guest that is still
        booting is retried every second until then; the error names the VM and its console log.
    type: integer
    default: 120
    vars:
      - name: ansible_vmctl_wait_timeout
    env:
      - name: ANSIBLE_VMCTL_WAIT_TIMEOUT
    ini:
      - section: vmctl_connection
        key: wait_timeout
  timeout:
    description:
      - Seconds for one connection attempt (TCP connect, SSH banner, key exchange, authentication) and for a
        privilege escalation prompt.
    type: integer
    default: 10
    vars:
      - name: ansible_timeout
      - name: ansible_ssh_timeout
      - name: ansible_vmctl_timeout
    env:
      - name: ANSIBLE_TIMEOUT
      - name: ANSIBLE_SSH_TIMEOUT
      - name: ANSIBLE_VMCTL_TIMEOUT
    ini:
      - section: defaults
        key: timeout
      - section: ssh_connection
        key: timeout
      - section: vmctl_connection
        key: timeout
    cli:
      - name: timeout
  persistent:
    description:
      - Keep one SSH session per VM in a daemon shared by all tasks and forks. With V(false), each task
        logs in by itself.
    type: boolean
    default: true
    vars:
      - name: ansible_vmctl_persistent
    env:
      - name: ANSIBLE_VMCTL_PERSISTENT
    ini:
      - section: vmctl_connection
        key: persistent
  idle_timeout:
    description:
      - Seconds without requests after which the session daemon logs out of the VM (and exits when it holds no other session).
    type: integer
    default: 60
    vars:
      - name: ansible_vmctl_idle_timeout
    env:
      - name: ANSIBLE_VMCTL_IDLE_TIMEOUT
    ini:
      - section: vmctl_connection
        key: idle_timeout
  control_path_dir:
    description:
      - Directory (created with mode 0700) for the session daemon's socket, lock and log (one daemon per directory).
    type: path
    default: ~/.ansible/vmctl-cp
    vars:
      - name: ansible_vmctl_control_path_dir
    env:
      - name: ANSIBLE_VMCTL_CONTROL_PATH_DIR
    ini:
      - section: vmctl_connection
        key: control_path_dir
  pipelining:
    description:
      - Send modules to the interpreter's standard input instead of copying them to a file first.
      - On by default; vmctl's guests let the SSH user use sudo without a tty.
    type: boolean
    default: true
    vars:
      - name: ansible_pipelining
      - name: ansible_ssh_pipelining
      - name: ansible_vmctl_pipelining
    env:
      - name: ANSIBLE_PIPELINING
      - name: ANSIBLE_SSH_PIPELINING
      - name: ANSIBLE_VMCTL_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
      - section: ssh_connection
        key: pipelining
      - section: vmctl_connection
        key: pipelining
  use_tty:
    description:
      - Give commands that may escalate privileges, and send no input, a pseudo-terminal (as C(ssh -tt) does
        for the ssh connection plugin), for sudoers files with C(requiretty).
    type: boolean
    default: true
    vars:
      - name: ansible_vmctl_use_tty
    env:
      - name: ANSIBLE_VMCTL_USE_TTY
    ini:
      - section: vmctl_connection
        key: use_tty
"""

EXAMPLES = r"""
# Inventory file vms.vmctl.yml: every VM in the store, reached with this plugin
# plugin: vmctl.core.vms

- name: Work on VMs added in the play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Add the VM called web
      ansible.builtin.add_host:
        name: web
        ansible_connection: vmctl.core.vm_ssh

- name: Provision it
  hosts: web
  gather_facts: false
  vars:
    ansible_vmctl_wait_timeout: 300   # first boot under TCG is slow
  tasks:
    - name: Install nginx
      ansible.builtin.apt:
        name: nginx
      become: true
"""

import codecs
import os
import time

from ansible.errors import AnsibleAuthenticationFailure, AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.vmctl.core.plugins.plugin_utils import hypervisors
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
from ansible_collections.vmctl.core.plugins.module_utils.errors import SshAuthFailed, SshTransferFailed, VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.client import STDOUT, MuxClient
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore

display = Display()

# states of a command that may escalate privileges (as in the ssh connection plugin)
_AWAITING_PROMPT = 0
_AWAITING_ESCALATION = 1
_READY_TO_SEND = 2
_AWAITING_EXIT = 3


def _failure(err):
    """The Ansible exception for an engine error: a failed transfer fails the task, the rest make the host unreachable."""
    if isinstance(err, SshAuthFailed):
        return AnsibleAuthenticationFailure(str(err))
    if isinstance(err, SshTransferFailed):
        return AnsibleError(str(err))
    return AnsibleConnectionFailure(str(err))


class Connection(ConnectionBase):
    """SSH to a vmctl VM through its shared session daemon."""

    transport = "vmctl.core.vm_ssh"
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super(Connection, self).__init__(*args, **kwargs)
        self._client = None
        self._target = None
        self._handle = None

    @property
    def _vm(self):
        return self._target.vm if self._target else self.get_option("vmctl_vm_name")

    def _connect(self):
        if self._connected:
            return self
        data_dir = self.get_option("data_dir")
        jump = self._jump()
        login = dict(host=self.get_option("remote_addr"), port=self.get_option("port"), user=self.get_option("remote_user"),
                     private_key_path=self.get_option("private_key_file"), known_hosts=self.get_option("known_hosts_file"))
        try:
            if jump and not all(login.values()):  # e.g. a host added by the up playbook: ask its hypervisor's store
                found = hypervisors.vm_login(hypervisors.Hypervisor(**jump), self.get_option("vmctl_vm_name"),
                                             timeout=self.get_option("timeout"))
                login = {key: login[key] or found[key.replace("_path", "")] for key in login}
                login["cloud_init"] = found["cloud_init"]
            self._target, self._handle = ssh.resolve_target(
                self.get_option("vmctl_vm_name"), guest_ip_timeout=self.get_option("wait_timeout"),
                store=VmStore(os.path.join(data_dir, "vms.json")) if data_dir else None, jump=jump, **login)
            self._client = MuxClient(
                self._target, control_dir=self.get_option("control_path_dir"), idle_timeout=self.get_option("idle_timeout"),
                wait_timeout=self.get_option("wait_timeout"), attempt_timeout=self.get_option("timeout"),
                persistent=self.get_option("persistent"), before_login=self._before_login,
                log=lambda message: display.vvvv(message, host=self._vm))
        except VmctlError as err:
            raise _failure(err)
        display.vvv("VM %s: %s@%s (session %s)" % (self._target.vm, self._target.user, self._target.address,
                                                   "shared" if self.get_option("persistent") else "per task"), host=self._vm)
        self._connected = True
        return self

    def _jump(self):
        """The VM's hypervisor as the SSH hop, or None for a VM of this host."""
        name = self.get_option("hypervisor")
        if not name or name == "localhost":
            return None
        return {"name": name, "host": self.get_option("hypervisor_host") or name, "port": self.get_option("hypervisor_port"),
                "user": self.get_option("hypervisor_user"), "private_key_file": self.get_option("hypervisor_private_key_file"),
                "known_hosts_file": self.get_option("hypervisor_known_hosts_file")}

    def wait_until_ready(self, deadline=None, stall=None, on_progress=None):
        """The readiness wait of a booting VM (vm_state's O(wait_for_ssh)), done by the login that opens this
        connection's shared session, so the tasks that follow reuse it. Seconds waited; raises the engine's error."""
        self._connect()
        data_dir = self.get_option("data_dir")
        return self._client.wait_ready(deadline, stall, on_progress,
                                       store_path=os.path.join(data_dir, "vms.json") if data_dir else None)

    def _before_login(self):
        if self._handle is not None:
            ssh.require_running(self._handle)

    # --- commands ------------------------------------------------------------------------------
    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % cmd, host=self._vm)
        use_tty = bool(sudoable and not in_data and self.get_option("use_tty"))
        try:
            stream = self._client.exec_command(to_bytes(cmd, errors="surrogate_or_strict"), pty=use_tty,
                                               term=os.environ.get("TERM", "vt100"))
            return self._run(stream, in_data, sudoable)
        except VmctlError as err:
            raise _failure(err)

    def _run(self, stream, in_data, sudoable):
        """ssh-style privilege escalation handshake, then stdin, then output to the end."""
        state = _READY_TO_SEND
        if sudoable and self.become is not None:
            if getattr(self.become, "prompt", None):
                state = _AWAITING_PROMPT
            elif self.become.success:
                state = _AWAITING_ESCALATION
        out, err = bytearray(), bytearray()
        pending = {STDOUT: b"", "err": b""}
        flags = dict(prompt=False, success=False, error=False, nopasswd=False)
        timeout = 2 + self.get_option("timeout")
        deadline = time.monotonic() + timeout
        if state == _READY_TO_SEND:
            if in_data:
                stream.send(in_data)
            stream.close_stdin()
            state = _AWAITING_EXIT
        while not stream.finished:
            left = deadline - time.monotonic() if state < _READY_TO_SEND else None
            if left is not None and left <= 0:
                stream.close()
                raise AnsibleConnectionFailure("VM %s: timeout (%ds) waiting for privilege escalation prompt: %s"
                                               % (self._vm, timeout, to_text(bytes(out))))
            for kind, data in stream.poll(left):
                target, key = (out, STDOUT) if kind == STDOUT else (err, "err")
                if state < _READY_TO_SEND:
                    kept, pending[key] = self._examine(pending[key] + data, sudoable, flags)
                    target += kept
                else:
                    target += data
            if state == _AWAITING_PROMPT:
                if flags["prompt"]:
                    stream.send(to_bytes(self.become.get_option("become_pass", playcontext=self._play_context) or "",
                                         errors="surrogate_or_strict") + b"\n")
                    flags["prompt"] = False
                    state = _AWAITING_ESCALATION
                elif flags["success"]:
                    state = _AWAITING_ESCALATION
            if state == _AWAITING_ESCALATION:
                if flags["success"]:
                    display.vvv("Escalation succeeded", host=self._vm)
                    state = _READY_TO_SEND
                elif flags["error"] or flags["prompt"]:
                    stream.close()
                    raise AnsibleError("Incorrect %s password" % self.become.name)
                elif flags["nopasswd"]:
                    stream.close()
                    raise AnsibleError("Missing %s password" % self.become.name)
            if state == _READY_TO_SEND:
                out += pending[STDOUT]
                err += pending["err"]
                pending = {STDOUT: b"", "err": b""}
                if in_data:
                    stream.send(in_data)
                stream.close_stdin()
                state = _AWAITING_EXIT
        out += pending[STDOUT]
        err += pending["err"]
        status = stream.status if stream.signal is None else 128 + _signal_number(stream.signal)
        return status, bytes(out), bytes(err)

    def _examine(self, data, sudoable, flags):
        """Drop become prompt and success lines (setting flags); keep an unfinished last line for the next chunk."""
        kept = []
        for line in data.splitlines(True):
            if self.become.expect_prompt() and self.become.check_password_prompt(line):
                flags["prompt"] = True
                continue
            if self.become.success and self.become.check_success(line):
                flags["success"] = True
                continue
            if sudoable and self.become.check_incorrect_password(line):
                flags["error"] = True
            elif sudoable and self.become.check_missing_password(line):
                flags["nopasswd"] = True
            kept.append(line)
        rest = kept.pop() if kept and not kept[-1].endswith(b"\n") else b""
        return b"".join(kept), rest

    def exec_command_streaming(self, command, on_output):
        """Run ``command`` (no privilege escalation), passing its output (text) to ``on_output`` as it arrives.

        Returns ``(exit status, signal name or None)``; used by the vm_provision action.
        """
        self._connect()
        display.vvv("EXEC (streaming) %s" % command, host=self._vm)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            stream = self._client.exec_command(to_bytes(command, errors="surrogate_or_strict"))
            stream.close_stdin()
            while not stream.finished:
                for _kind, data in stream.poll():
                    text = decoder.decode(data)
                    if text:
                        on_output(text)
        except VmctlError as err:
            raise _failure(err)
        tail = decoder.decode(b"", final=True)
        if tail:
            on_output(tail)
        return stream.status, stream.signal

    # --- files ---------------------------------------------------------------------------------
    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._vm)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        try:
            self._client.put(in_path, out_path)
        except VmctlError as err:
            raise _failure(err)

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._vm)
        try:
            self._client.get(in_path, out_path)
        except VmctlError as err:
            raise _failure(err)

    # --- lifetime ------------------------------------------------------------------------------
    def reset(self):
        """End the VM's shared session; the next command logs in again."""
        if not self._connected:
            self._connect()
        display.vvv("RESET: ending the session to VM %s" % self._vm, host=self._vm)
        self._client.stop()

    def close(self):
        if self._client is not None:
            self._client.close()
        self._connected = False


def _signal_number(name):
    import signal as signals
    number = getattr(signals, "SIG" + str(name), None)
    return int(number) if number is not None else 0
