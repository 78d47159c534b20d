# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The readiness wait: until a VM accepts an SSH login and cloud-init has finished.

It fails a *stuck* guest, not a slow one. While the guest shows progress it keeps waiting: the
console log grows, a login attempt gets further than before (TCP, then the SSH handshake, then the
login), cloud-init's log grows. It fails when nothing has changed for the stall window, or at the
overall deadline, whichever comes first, and says which limit it hit, with the last console lines
and the setting to raise. About every ``interval`` seconds it reports a progress line.
"""

from __future__ import annotations

__metaclass__ = type

import os
import re
import select
import time

from ansible_collections.vmctl.core.plugins.module_utils.checks import check_wait_limits
from ansible_collections.vmctl.core.plugins.module_utils.reconcile import DEFAULT_DEADLINE, default_deadline
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, InvalidState, SshWaitTimeout, WaitStalled

DEFAULT_STALL = 120  # seconds without any sign of progress
PROGRESS_INTERVAL = 10
ATTEMPT_TIMEOUT = 10
RETRY_INTERVAL = 1.0
STATE_CHECK_INTERVAL = 5.0

# Once logged in: wait for cloud-init, printing the size of its logs twice a second (its progress).
# result.json is on /run, so per boot: its appearance ends the wait at once; `cloud-init status --wait`
# covers a cloud-init that ends without one (disabled, no datasource). No cloud-init: ready at once.
CLOUD_INIT_WAIT = (
    "r=/run/cloud-init/result.json; test -e $r && exit 0; "
    "command -v cloud-init >/dev/null 2>&1 || exit 0; "
    "cloud-init status --wait >/dev/null 2>&1 & w=$!; "
    "while kill -0 $w 2>/dev/null && ! test -e $r; do "
    "echo log $(stat -c %s /var/log/cloud-init.log /var/log/cloud-init-output.log 2>/dev/null); "
    "sleep 0.5; done; exit 0")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def console_lines(path, count=5, max_bytes=16384):
    """The last ``count`` printable lines of a console log (escape sequences and control characters removed)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return []
    text = _ANSI.sub("", data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_CONTROL.sub("", line).strip() for line in text.split("\n")]
    lines = [line[:200] for line in lines if line]
    return lines[-count:]


def _size(path):
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return 0


class ReadinessWait:
    """``ReadinessWait(handle, ...).run()``: seconds until the VM is ready, or WaitStalled / SshWaitTimeout.

    ``on_progress(line)`` is called about every ``interval`` seconds. ``target`` (an SshTarget) overrides the one
    derived from the handle; ``backend`` is asked now and then whether the VM still runs.
    """

    def __init__(self, handle, deadline=None, stall=None, on_progress=None, interval=PROGRESS_INTERVAL,
                 target=None, backend=None, clock=time.monotonic, attempt_timeout=ATTEMPT_TIMEOUT, deadline_setting=None):
        if handle is None and (target is None or not deadline):
            raise InvalidSpec("a wait without the VM's record needs a target and a deadline")
        self.name = handle.name if handle is not None else target.vm
        self.console_log = handle.console_log if handle is not None else target.console_log
        check_wait_limits(self.name, deadline, stall)
        self.handle = handle
        self.deadline = deadline or default_deadline(handle)
        self.attempt_timeout = attempt_timeout
        self.deadline_setting = deadline_setting  # how to raise the deadline, with %d for a suggestion (default: up's)
        self.stall = stall or DEFAULT_STALL
        # A VM on another hypervisor has its console there: with nothing to watch but the SSH phases (the forward
        # takes the TCP connection at once, then nothing changes until sshd answers), only the deadline applies.
        self.watch_stall = not (handle is None and target is not None and target.jump)
        self.on_progress = on_progress
        self.interval = interval
        self.target = target
        self.backend = backend
        self.clock = clock
        self.begin = clock()
        self.last_change = self.begin
        self.last_report = self.begin
        self.last_state_check = self.begin
        self.console_size = _size(self.console_log)
        self.phase = -1  # the furthest a login attempt got (ssh_session.PHASES)
        self.cloud_init_log = None
        self.waiting_for = "SSH"
        self.last_error = None
        self.last_hint = None  # what a login attempt said to do, e.g. the host-key opt-in

    # -- progress bookkeeping ----------------------------------------------------------------------
    def elapsed(self):
        return self.clock() - self.begin

    def _changed(self):
        self.last_change = self.clock()

    def tick(self):
        """Look for progress; report; raise when a limit is hit or the VM is gone."""
        now = self.clock()
        size = _size(self.console_log)
        if size != self.console_size:
            self.console_size = size
            self._changed()
        if self.backend is not None and now - self.last_state_check >= STATE_CHECK_INTERVAL:
            self.last_state_check = now
            self._check_running()
        if now - self.begin >= self.deadline:
            raise self._failure("not ready within the deadline of %d s" % self.deadline, deadline=True)
        if self.watch_stall and now - self.last_change >= self.stall:
            raise self._failure("stalled: no sign of progress for %d s (the stall window)" % self.stall, deadline=False)
        if self.on_progress is not None and now - self.last_report >= self.interval:
            self.last_report = now
            self.on_progress(self.progress_line())

    def _check_running(self):
        from ansible_collections.vmctl.core.plugins.module_utils.model import VmState
        try:
            if self.backend.alive(self.handle):
                return
            state = self.backend.state(self.handle)
        except Exception:  # a monitor that does not answer is not a reason to give up the wait
            return
        if state not in (VmState.RUNNING,):
            raise InvalidState("VM %s is %s: it stopped while vmctl waited %d s for %s"
                               % (self.name, state, round(self.elapsed()), self.waiting_for),
                               hint="See what the guest printed in %s" % self.console_log,
                               name=self.name, state=state, console=console_lines(self.console_log))

    def progress_line(self):
        lines = console_lines(self.console_log, 1)
        line = "%s: waiting for %s, %d s" % (self.name, self.waiting_for, round(self.elapsed()))
        if lines:
            text = lines[-1]
            line += ", console: %s" % (text if len(text) <= 80 else text[:79] + "…")
        return line

    def _failure(self, what, deadline):
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import PHASES
        name = self.name
        got = PHASES[self.phase] if self.phase >= 0 else "no login attempt finished"
        message = "VM %s: %s, after %d s waiting for %s (SSH: %s%s)" % (
            name, what, round(self.elapsed()), self.waiting_for, got,
            "; last error: %s" % self.last_error if self.last_error and self.waiting_for == "SSH" else "")
        tail = console_lines(self.console_log)
        if tail:
            message += "\nlast console lines (%s):\n  %s" % (self.console_log, "\n  ".join(tail))
        elif self.console_log:
            message += "; nothing on its console (%s)" % self.console_log
        if deadline and self.deadline_setting:
            hint = "If the guest is just slow, raise the deadline: " + self.deadline_setting % (self.deadline * 2)
            cls = SshWaitTimeout
        elif deadline:
            hint = ("If the guest is just slow, raise the deadline: ssh { boot-timeout %d } in the VMFile, "
                    "-e ssh_timeout=%d, vmctl up --timeout %d, or wait_timeout of vmctl.core.vm_state"
                    % ((self.deadline * 2,) * 3))
            cls = SshWaitTimeout
        else:
            hint = ("The guest printed nothing and SSH got no further for %d s. If it is just slow, raise the stall "
                    "window: ssh { stall-timeout %d } in the VMFile, -e stall_timeout=%d, vmctl up --stall-timeout %d, "
                    "or stall_timeout of vmctl.core.vm_state" % ((self.stall,) + (self.stall * 2,) * 3))
            cls = WaitStalled
        if self.last_hint and self.waiting_for == "SSH":
            hint = "%s. %s" % (self.last_hint, hint)
        return cls(message, hint=hint, name=name, console_log=self.console_log, console=tail,
                   limit="deadline" if deadline else "stall", waited=round(self.elapsed(), 1))

    # -- the wait ------------------------------------------------------------------------------------
    def run(self):
        """Seconds until the VM was ready (the login used for the wait is closed)."""
        self.session().close()
        return self.elapsed()

    def session(self):
        """The logged-in session, once the VM is ready: the session daemon keeps it for the tasks that follow."""
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import Retryable, SshSession
        target = self.target or self._target()
        pkey = SshSession.credentials(target)
        self._changed()  # the stall window counts the guest's silence, not our own start-up (paramiko's import)
        while True:
            self.waiting_for = "SSH"
            session = self._login(SshSession, Retryable, target, pkey)
            if not target.cloud_init:
                return session
            self.waiting_for = "cloud-init"
            try:
                if self._cloud_init(session):
                    return session
            except BaseException:
                session.close()
                raise
            session.close()

    def _target(self):
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
        if self.handle.network.type != "tap":
            return ssh.target_for(self.handle)
        from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for
        from ansible_collections.vmctl.core.plugins.module_utils.errors import IpDiscoveryTimeout
        self.waiting_for = "an IP address"
        while True:
            try:
                return ssh.target_for(self.handle, host=backend_for(self.handle.backend).guest_ip(self.handle, 2))
            except IpDiscoveryTimeout as err:
                self.last_error = err.message
            self.tick()

    def _login(self, session_class, retryable, target, pkey):
        while True:
            self.tick()
            left = self.deadline - self.elapsed()
            try:
                session = session_class.attempt(target, pkey, max(1.0, min(self.attempt_timeout, left)))
                phase = 3
            except retryable as err:
                session, phase, self.last_error = None, err.phase, err.args[0]
                self.last_hint = err.hint
            if phase > self.phase:
                self.phase = phase
                self._changed()
            if session is not None:
                return session
            time.sleep(RETRY_INTERVAL)

    def _cloud_init(self, session):
        """True once cloud-init has finished; False when the session dropped (log in again)."""
        channel = session.open_command(CLOUD_INIT_WAIT)
        try:
            channel.shutdown_write()
            pending = b""
            while True:
                self.tick()
                ready, _w, _x = select.select([channel], [], [], 1.0)
                if ready or channel.recv_ready():
                    data = channel.recv(4096)
                    if not data:
                        break
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip() and line.strip() != self.cloud_init_log:
                            self.cloud_init_log = line.strip()
                            self._changed()
                if channel.exit_status_ready():
                    break
            channel.status_event.wait(2)  # the exit status follows the end of output
            return channel.exit_status_ready() and channel.recv_exit_status() == 0
        finally:
            channel.close()


def wait_until_ready(handle, deadline=None, stall=None, on_progress=None, target=None):
    """Seconds until the VM accepts an SSH login and cloud-init has finished (see ReadinessWait)."""
    from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for
    return ReadinessWait(handle, deadline=deadline, stall=stall, on_progress=on_progress, target=target,
                         backend=backend_for(handle.backend)).run()


def login(target, wait_timeout, attempt_timeout=ATTEMPT_TIMEOUT, on_progress=None):
    """A session to ``target`` once its VM is ready, waiting up to ``wait_timeout`` seconds (the connection's own
    wait, for a VM nobody waited for): the same wait as ``vm_state``'s, from the target alone."""
    wait = ReadinessWait(None, deadline=max(1, int(wait_timeout)), stall=min(DEFAULT_STALL, max(1, int(wait_timeout))),
                         on_progress=on_progress, target=target, attempt_timeout=attempt_timeout,
                         deadline_setting="the vmctl.core.vm_ssh connection's wait_timeout (ansible_vmctl_wait_timeout=%d)")
    return wait.session()


def ready_session(target, deadline=None, stall=None, on_progress=None, store_path=None):
    """``(session, seconds)``: the readiness wait for ``target``'s VM, keeping the session it logged in with.

    The session daemon opens its session this way when a task asks it to wait for a booting VM, so the
    wait's login is the one every later task uses.
    """
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
    if target.jump:  # a VM on another hypervisor: its record and its console are there; the target says it all
        wait = ReadinessWait(None, deadline=deadline, stall=stall, on_progress=on_progress, target=target)
        return wait.session(), wait.elapsed()
    manager = VmManager(VmStore(store_path) if store_path else None)
    handle = manager.get(target.vm)
    wait = ReadinessWait(handle, deadline=deadline, stall=stall, on_progress=on_progress, target=target,
                         backend=manager.backend(handle))
    return wait.session(), wait.elapsed()


__all__ = ["ReadinessWait", "WaitStalled", "wait_until_ready", "ready_session", "login", "default_deadline", "console_lines",
           "DEFAULT_STALL", "DEFAULT_DEADLINE"]
