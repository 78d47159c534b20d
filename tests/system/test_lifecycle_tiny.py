"""QEMU backend lifecycle on the busybox guest (boots in seconds, powers off on ACPI)."""

import os
import signal
import socket
import subprocess
import time

import pytest
from support.guests import alive, console_size, tiny_spec, wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import kvm_usable
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmExists
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.qmp import QmpClient
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

pytestmark = pytest.mark.slow


def test_full_lifecycle(test_images, tmp_path):
    manager = VmManager()
    marker = test_images["tiny"]["ready_marker"]
    handle, created = manager.create(tiny_spec(test_images, tmp_path))
    assert created and handle.state == VmState.PREPARED
    assert manager.create(tiny_spec(test_images, tmp_path))[1] is False  # idempotent
    assert oct(os.stat(handle.work_dir).st_mode & 0o777) == "0o700"

    handle, before = manager.start("tiny")
    assert before == VmState.PREPARED and handle.state == VmState.RUNNING and alive(handle.pid)
    wait_for_console(handle, marker, timeout=60)
    pid = handle.pid

    manager.suspend("tiny")
    with QmpClient(handle.qmp_socket) as qmp:
        assert qmp.query_status()["status"] == "paused"
    assert manager.live_state("tiny") == VmState.SUSPENDED
    manager.resume("tiny")
    assert manager.live_state("tiny") == VmState.RUNNING

    begin = time.monotonic()
    handle = manager.stop("tiny", timeout=20)[0]
    assert handle.state == VmState.STOPPED and handle.extra["last_stop"] == "acpi"
    assert time.monotonic() - begin < 20 and not alive(pid)
    assert manager.live_state("tiny") == VmState.STOPPED
    assert manager.stop("tiny")[0].state == VmState.STOPPED  # stopping a stopped VM is fine

    offset = console_size(handle)
    handle, before = manager.start("tiny")
    assert before == VmState.STOPPED and handle.state == VmState.RUNNING
    wait_for_console(handle, marker, timeout=60, start_offset=offset)
    assert console_size(handle) > offset  # console.log kept across restarts, appended

    pid, work_dir = handle.pid, handle.work_dir
    manager.destroy("tiny")
    assert not alive(pid)
    assert not os.path.exists(work_dir)
    assert manager.find("tiny") is None


def test_stale_pidfile_never_signals_another_process(test_images, tmp_path):
    manager = VmManager()
    handle = manager.create(tiny_spec(test_images, tmp_path))[0]
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        with open(handle.pidfile, "w") as f:
            f.write("%d\n" % bystander.pid)
        store_handle = manager.get("tiny")
        manager.store.put(store_handle.replace(state=VmState.RUNNING, pid=bystander.pid))
        assert manager.live_state("tiny") == VmState.STOPPED
        manager.stop("tiny", timeout=1)
        manager.destroy("tiny")
        assert bystander.poll() is None, "vmctl signalled a process that was not its QEMU"
    finally:
        bystander.kill()
        bystander.wait()


def test_crashed_qemu_reads_as_stopped_and_start_recovers(test_images, tmp_path):
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path))
    handle = manager.start("tiny")[0]
    os.kill(handle.pid, signal.SIGKILL)
    for _attempt in range(50):
        if not alive(handle.pid):
            break
        time.sleep(0.1)
    assert manager.live_state("tiny") == VmState.STOPPED
    assert os.path.exists(handle.qmp_socket)  # stale socket left by the crash
    handle = manager.start("tiny")[0]
    assert handle.state == VmState.RUNNING
    wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=60)
    manager.destroy("tiny")


def test_unresponsive_guest_is_terminated_after_the_timeout(test_images, tmp_path):
    """A guest that ignores the power button (no kernel: SeaBIOS spinning) gets SIGTERM."""
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path, kernel=None, initrd=None, kernel_append=None))
    handle = manager.start("tiny")[0]
    begin = time.monotonic()
    handle = manager.stop("tiny", timeout=2)[0]
    assert handle.extra["last_stop"] in ("sigterm", "sigkill")
    assert 2 <= time.monotonic() - begin < 20
    manager.destroy("tiny")


def test_vms_get_distinct_ports_and_macs_and_a_taken_port_moves(test_images, tmp_path):
    manager = VmManager()
    a = manager.create(tiny_spec(test_images, tmp_path, name="a"))[0]
    b = manager.create(tiny_spec(test_images, tmp_path, name="b"))[0]
    assert a.ssh_host_port != b.ssh_host_port and a.mac_addr != b.mac_addr
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", a.ssh_host_port))
    blocker.listen(1)
    try:
        started = manager.start("a")[0]
        assert started.ssh_host_port not in (a.ssh_host_port, b.ssh_host_port)
        assert started.extra["port_moved_from"] == a.ssh_host_port
        assert manager.get("a").ssh_host_port == started.ssh_host_port
        assert "hostfwd=tcp:127.0.0.1:%d-:22" % started.ssh_host_port in open("/proc/%d/cmdline" % started.pid).read()
    finally:
        blocker.close()
    manager.destroy("a")
    manager.destroy("b")


def test_auto_acceleration_picks_one_that_boots(test_images, tmp_path, monkeypatch):
    """``accel: auto`` probes KVM (nested KVM may exist yet abort QEMU) and falls back to TCG."""
    monkeypatch.delenv("VMCTL_ACCEL", raising=False)
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path, accel="auto"))
    handle = manager.start("tiny")[0]
    expected = "kvm" if kvm_usable() else "tcg"
    assert "accel=%s" % expected in open("/proc/%d/cmdline" % handle.pid).read()
    wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=60)
    manager.destroy("tiny")


def test_a_vm_of_one_vmfile_is_not_taken_over_by_another(test_images, tmp_path):
    manager = VmManager()
    mine, theirs = str(tmp_path / "a" / "VMFile.kdl"), str(tmp_path / "b" / "VMFile.kdl")
    handle, created = manager.create(tiny_spec(test_images, tmp_path, name="web", vmfile=mine))
    assert created and handle.vmfile == mine
    with pytest.raises(VmExists) as taken:
        manager.create(tiny_spec(test_images, tmp_path, name="web", vmfile=theirs))
    assert str(taken.value).startswith("VM 'web' already exists, created from %s (not %s)" % (mine, theirs))
    assert "Rename the VM" in taken.value.hint
    assert manager.get("web").vmfile == mine and os.path.exists(handle.work_dir)  # left as it was
    assert manager.create(tiny_spec(test_images, tmp_path, name="web", vmfile=mine)) == (manager.get("web"), False)
    manager.destroy("web")
