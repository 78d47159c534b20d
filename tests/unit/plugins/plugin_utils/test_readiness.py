"""The readiness wait fails a stuck guest (stall window), not a slow one (it waits while the guest shows
progress, until the deadline), and says which limit it hit, with the console's last lines.

No guest here: the "guest" is a port nothing listens on (or a TCP listener that never speaks SSH) and a
console.log a thread writes to; the real-guest side is in tests/system/test_first_try.py.
"""

import socket
import threading
import time

import pytest

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, InvalidState, SshWaitTimeout
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def vm(tmp_path):
    """A handle and an SSH target whose port nobody answers on; its console.log is in tmp."""
    key = str(tmp_path / "id")
    pair = keys.generate_ed25519("test")
    keys.write_keypair(pair, key)
    known = tmp_path / "known_hosts"
    known.write_text(keys.known_hosts_line("127.0.0.1", 2222, pair.public_openssh))
    console = tmp_path / "console.log"
    console.write_text("SeaBIOS\r\n[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[1mBasic System\x1b[0m.\r\n")
    handle = VmHandle(id="x", name="slow", backend="noop", work_dir=str(tmp_path), console_log=str(console))
    target = SshTarget("slow", "127.0.0.1", closed_port(), "vm", key, str(known), str(console), cloud_init=True)
    return handle, target, console


class Running:
    """A backend stand-in for the wait's liveness check: says ``state`` (a list: the test may change it)."""

    def __init__(self, state="running"):
        self.states = [state]

    def state(self, handle):
        return self.states[-1]

    def alive(self, handle):
        return self.states[-1] == "running"


def test_a_silent_guest_fails_as_stalled_long_before_the_deadline(vm):
    """Nothing answers and the console is silent: WaitStalled after the stall window, naming the limit,
    the setting to raise and the last console line (escape sequences removed)."""
    handle, target, _console = vm
    begin = time.monotonic()
    with pytest.raises(readiness.WaitStalled) as caught:
        readiness.ReadinessWait(handle, deadline=300, stall=2, target=target, backend=Running()).run()
    assert time.monotonic() - begin < 60  # far from the 300 s deadline (a bound, not a speed figure)
    err = caught.value
    assert err.code == "vmctl.ssh.stalled" and err.details["limit"] == "stall"
    assert "stalled: no sign of progress for 2 s" in err.message and "SSH: no TCP connection" in err.message
    assert "[  OK  ] Reached target Basic System." in err.message
    assert "stall-timeout" in err.hint and "stall_timeout" in err.hint


def test_a_guest_that_prints_keeps_the_wait_alive_until_the_deadline(vm):
    """The console grows all the time: never stalled (stall 2 s), but the 5 s deadline ends it, and says so."""
    handle, target, console = vm
    stop = threading.Event()

    def boot():
        n = 0
        while not stop.is_set():
            n += 1
            with open(console, "a") as f:
                f.write("[  %d.000] still booting\n" % n)
            time.sleep(0.2)

    writer = threading.Thread(target=boot, daemon=True)
    writer.start()
    lines = []
    try:
        with pytest.raises(SshWaitTimeout) as caught:
            readiness.ReadinessWait(handle, deadline=5, stall=2, target=target, backend=Running(),
                                    on_progress=lines.append, interval=1).run()
    finally:
        stop.set()
        writer.join()
    err = caught.value
    assert not isinstance(err, readiness.WaitStalled)
    assert err.details["limit"] == "deadline" and "deadline of 5 s" in err.message
    assert "boot-timeout" in err.hint and "ssh_timeout" in err.hint
    assert lines and all(line.startswith("slow: waiting for SSH, ") for line in lines)
    assert any("console: [  " in line and "still booting" in line for line in lines)


def test_a_tcp_listener_that_never_speaks_ssh_counts_once_as_progress(vm):
    """QEMU's forward accepts before sshd runs: getting a TCP connection is progress once, not forever."""
    handle, closed, _console = vm
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        accepted = []
        stop = threading.Event()

        def accept_and_close():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn = listener.accept()[0]
                except OSError:
                    continue
                accepted.append(conn)
                conn.close()

        thread = threading.Thread(target=accept_and_close, daemon=True)
        thread.start()
        target = SshTarget("slow", "127.0.0.1", listener.getsockname()[1], "vm", closed.private_key_path,
                           closed.known_hosts, handle.console_log, cloud_init=True)
        try:
            with pytest.raises(readiness.WaitStalled) as caught:
                readiness.ReadinessWait(handle, deadline=300, stall=3, target=target, backend=Running()).run()
        finally:
            stop.set()
            thread.join()
    assert len(accepted) >= 2  # it kept trying
    assert "SSH: no SSH handshake" in caught.value.message


def test_a_vm_that_stops_while_waited_for_fails_at_once(vm, monkeypatch):
    """The guest powered off (or QEMU died): say so, instead of waiting for the stall window."""
    handle, target, _console = vm
    monkeypatch.setattr(readiness, "STATE_CHECK_INTERVAL", 0.5)
    backend = Running()
    threading.Timer(1.0, backend.states.append, ("stopped",)).start()
    with pytest.raises(InvalidState) as caught:
        readiness.ReadinessWait(handle, deadline=300, stall=120, target=target, backend=backend).run()
    assert "VM slow is stopped: it stopped while vmctl waited" in caught.value.message


@pytest.mark.parametrize("value", [0, -5, "10", True, 1.5])
def test_limits_must_be_whole_seconds(vm, value):
    """A zero, negative or non-integer limit is refused with the VM's name (not a wait that never ends)."""
    handle, target, _console = vm
    with pytest.raises(InvalidSpec) as caught:
        readiness.ReadinessWait(handle, deadline=value, target=target)
    assert "VM slow: the wait timeout (deadline) must be a whole number of seconds" in caught.value.message


def test_default_deadline_follows_the_acceleration(monkeypatch):
    """600 s under TCG, 300 s with KVM (and on propolis, which is always hardware-accelerated)."""
    handle = VmHandle(id="x", name="a", backend="qemu", accel="tcg")
    assert readiness.default_deadline(handle) == 600
    assert readiness.default_deadline(handle.replace(accel="kvm")) == 300
    assert readiness.default_deadline(handle.replace(backend="propolis")) == 300
    monkeypatch.setenv("VMCTL_ACCEL", "tcg")
    assert readiness.default_deadline(handle.replace(accel="auto")) == 600


def test_console_lines_strip_escapes_and_keep_the_last_lines(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"one\r\n\x1b[?25l\x1b[2Jtwo\x07\r\n\r\n" + b"x" * 300 + b"\nthree\n")
    assert readiness.console_lines(str(log), 3) == ["two", "x" * 200, "three"]
    assert readiness.console_lines(str(tmp_path / "missing")) == []
