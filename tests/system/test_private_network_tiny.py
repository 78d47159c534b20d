"""The private networks' switch lifecycle with real QEMUs (the busybox guest: no SSH needed, the NIC exists
without an address): started with the first VM, shared, stopped with the last; two VMFiles' `lab` are two
switches; a killed switch is started again by the next start; a crashed QEMU does not keep its switch alive
once its stop (or another VM's) has run; a failed QEMU start does not leave a switch behind."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from support.guests import alive, tiny_spec

from ansible_collections.vmctl.core.plugins.module_utils import private_network
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import switch as switches
from ansible_collections.vmctl.core.plugins.module_utils.errors import SpawnFailed
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def short_data_dir(monkeypatch):
    """A data dir with a short path: the switches' sockets must fit a unix socket path (107 bytes), which the
    per-test folders of pytest (under /tmp/pytest-of-…/test_…) do not leave room for."""
    path = tempfile.mkdtemp(prefix="vl")
    monkeypatch.setenv("XDG_DATA_HOME", path)
    yield path
    manager = VmManager()  # a failed test leaves nothing running: its VMs go, and the switches with the last one
    for name in list(manager.list()):
        manager.destroy(name)
    for switch_id in running_switches(os.path.join(path, "vmctl")):
        with switches.Switch(os.path.join(path, "vmctl"), switch_id).locked() as s:
            s.stop()
    shutil.rmtree(path, ignore_errors=True)


def wait_dead(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def switch_of(handle):
    """The Switch of the VM's first private NIC."""
    return switches.Switch(switches.data_dir_of(handle.work_dir), private_network.nics_of(handle)[0]["switch"])


def link(manager, name):
    """What status says of the VM's first private NIC's link."""
    return manager.describe(name)["private_networks"][0]["link"]


def running_switches(data_dir):
    """Pids of the switches under ``data_dir`` that prove to run."""
    root = os.path.join(data_dir, "switches")
    found = {}
    for switch_id in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        pid = switches.Switch(data_dir, switch_id).pid()
        if pid is not None:
            found[switch_id] = pid
    return found


def test_switch_starts_with_the_first_vm_and_stops_with_the_last(test_images, tmp_path):
    manager = VmManager()
    one, two = str(tmp_path / "one" / "VMFile.kdl"), str(tmp_path / "two" / "VMFile.kdl")
    lab = [{"name": "lab"}]
    for name, vmfile in (("a", one), ("b", one), ("c", two)):
        manager.create(tiny_spec(test_images, tmp_path, name=name, vmfile=vmfile, private_networks=lab))
    a = manager.start("a")[0]
    lab_one = switch_of(a)
    pid = lab_one.pid()
    assert pid is not None and lab_one.users() == ["a"]
    cmdline = open("/proc/%d/cmdline" % a.pid).read()
    assert "vde,id=priv0,sock=%s" % lab_one.ctl in cmdline and private_network.nics_of(a)[0]["mac"] in cmdline
    b = manager.start("b")[0]
    assert lab_one.pid() == pid and lab_one.users() == ["a", "b"]  # one switch for the VMFile's `lab`
    c = manager.start("c")[0]
    lab_two = switch_of(c)
    assert lab_two.id != lab_one.id and lab_two.pid() not in (None, pid)  # another VMFile's `lab`: its own switch

    manager.stop("a", timeout=0)
    assert lab_one.pid() == pid and lab_one.users() == ["b"]  # b still uses it
    manager.stop("b", timeout=0)
    assert lab_one.pid() is None and not alive(pid) and not os.path.exists(lab_one.ctl)  # the last one stopped it
    assert lab_two.pid() is not None
    manager.destroy("c")
    assert running_switches(switches.data_dir_of(b.work_dir)) == {}
    for name in ("a", "b"):
        manager.destroy(name)


def test_killed_switch_and_crashed_qemu_converge(test_images, tmp_path):
    """SIGKILL of the switch: the next start on it starts a new one. SIGKILL of every QEMU on it: the switch runs
    on until a stop (of the crashed VMs, as `vmctl down` does) finds no live user, then it is stopped."""
    manager = VmManager()
    vmfile = str(tmp_path / "VMFile.kdl")
    for name in ("a", "b"):
        manager.create(tiny_spec(test_images, tmp_path, name=name, vmfile=vmfile, private_networks=[{"name": "lab"}]))
    a = manager.start("a")[0]
    lab = switch_of(a)
    first = lab.pid()
    assert link(manager, "a") == "up"
    os.kill(first, signal.SIGKILL)
    wait_dead(first)
    assert lab.pid() is None and link(manager, "a") == "down"  # status shows it
    b = manager.start("b")[0]
    second = lab.pid()
    assert second not in (None, first) and lab.users() == ["a", "b"]
    assert (link(manager, "a"), link(manager, "b")) == ("cut off", "up")  # a rejoins at its next start

    for vm in (a, b):
        os.kill(vm.pid, signal.SIGKILL)
        wait_dead(vm.pid)
    assert lab.pid() == second  # nobody has noticed yet
    manager.stop("a", timeout=0)  # a's QEMU is gone; b's too: no live user is left
    assert lab.pid() is None and not alive(second) and lab.users() == []
    manager.stop("b", timeout=0)  # nothing left to do, and no error
    for name in ("a", "b"):
        manager.destroy(name)


def test_a_failed_qemu_start_leaves_no_switch(test_images, tmp_path):
    """QEMU refuses to start (its disk is not a qcow2 image): the switch started for it is stopped again."""
    manager = VmManager()
    broken = tmp_path / "broken-disk.qcow2"
    manager.create(tiny_spec(test_images, tmp_path, name="x", private_networks=[{"name": "lab"}]))
    handle = manager.get("x")
    with open(handle.overlay_path, "r+b") as f:  # a copy the test owns: the VM's own overlay, overwritten
        f.write(b"not a qcow2 image" * 64)
    broken.write_bytes(b"")
    with pytest.raises(SpawnFailed):
        manager.start("x")
    lab = switch_of(handle)
    assert lab.pid() is None and lab.users() == []
    manager.destroy("x")


VMCTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin", "vmctl")
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "kill_hook")


@pytest.mark.parametrize("kill_at", [
    "backends/qemu/switch.py:Switch.ensure_running:return:1",  # switch started, not marked, no QEMU yet
    "backends/qemu/backend.py:QemuBackend._make_private:call:1",  # QEMU on the switch, record not written
])
def test_vmctl_start_killed_mid_way_converges(test_images, tmp_path, kill_at):
    """Fault: `vmctl start` SIGKILLed after the switch started (before QEMU), or with QEMU up but the record not
    written. Gets: `vmctl start` again runs one QEMU on one switch; `vmctl stop` then ends the switch too."""
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path, name="a", private_networks=[{"name": "lab"}]))
    lab = switch_of(manager.get("a"))
    mark = str(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=HOOK + os.pathsep + os.environ.get("PYTHONPATH", ""), VMCTL_TEST_KILL_AT=kill_at,
               VMCTL_TEST_KILL_WHO="cli", VMCTL_TEST_KILL_MARK=mark)
    killed = subprocess.run([VMCTL, "start", "a"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert os.path.exists(mark) and killed.returncode != 0, killed.stdout + killed.stderr
    first = lab.pid()
    assert first is not None and lab.users() in ([], ["a"])  # a switch left without users, or marked for a
    again = subprocess.run([VMCTL, "start", "a"], capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert lab.pid() == first and link(manager, "a") == "up"
    stopped = subprocess.run([VMCTL, "stop", "a", "--timeout", "0"], capture_output=True, text=True, timeout=120, check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert lab.pid() is None and not alive(first) and lab.users() == []
    manager.destroy("a")
