"""Fault injection against real QEMU (busybox guest): kill -9 of QEMU and of the `vmctl` process at
observed points of start, stop, destroy and create, SIGSTOP of QEMU (CLI and modules), and a full data
dir (CLI and modules). After each fault the next command converges, and a bystander VM in the same
store keeps running, unchanged. Kills at exact steps (CLI, module process and QEMU) are in
test_kill_points.py."""

import contextlib
import os
import signal
import subprocess
import time

import pytest
from support.guests import alive, tiny_spec, wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


def vmctl(*args):
    return subprocess.run([VMCTL] + [str(a) for a in args], capture_output=True, text=True, timeout=180, check=False,
                          stdin=subprocess.DEVNULL)


def wait_until(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


@pytest.fixture
def bystander(test_images, tmp_path):
    """A running VM that no fault may touch; checked unchanged after the test."""
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path, name="bystander"))
    handle = manager.start("bystander")[0]
    before = manager.get("bystander").to_json()
    yield handle
    assert alive(handle.pid), "a fault on another VM killed the bystander"
    assert manager.live_state("bystander") == VmState.RUNNING
    assert manager.get("bystander").to_json() == before, "the bystander's record changed"


def _tiny(manager, images, tmp_path, name="victim", start=True):
    manager.create(tiny_spec(images, tmp_path, name=name))
    return manager.start(name)[0] if start else manager.get(name)


def test_kill_9_of_qemu_then_start_converges(test_images, tmp_path, bystander):
    """Fault: QEMU killed with SIGKILL (stale pidfile and sockets left). Gets: the VM reads stopped and
    the next start boots it."""
    manager = VmManager()
    handle = _tiny(manager, test_images, tmp_path)
    os.kill(handle.pid, signal.SIGKILL)
    wait_until(lambda: not alive(handle.pid), what="QEMU gone")
    result = vmctl("list")
    assert result.returncode == 0 and "victim" in result.stdout
    assert manager.live_state("victim") == VmState.STOPPED
    handle = manager.start("victim")[0]
    assert alive(handle.pid)
    wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=90)


def test_sigstop_of_qemu_then_stop_converges(test_images, tmp_path, bystander):
    """Fault: QEMU SIGSTOPped. Gets: list still works (victim `unknown`), `vmctl stop` ends it, start boots it."""
    manager = VmManager()
    handle = _tiny(manager, test_images, tmp_path)
    os.kill(handle.pid, signal.SIGSTOP)
    result = vmctl("list")
    assert result.returncode == 0 and "unknown (monitor not answering)" in result.stdout and "bystander" in result.stdout
    result = vmctl("stop", "victim", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert not alive(handle.pid)
    assert manager.start("victim")[0].state == VmState.RUNNING


@pytest.mark.parametrize("command,ready", [
    ("start", lambda work_dir: os.path.exists(os.path.join(work_dir, "qemu.pid"))),
    ("stop", lambda work_dir: True),
    ("destroy", lambda work_dir: True),
])
def test_kill_9_of_the_cli_mid_command_then_rerun_converges(test_images, tmp_path, bystander, command, ready):
    """Fault: the `vmctl` process killed with SIGKILL while it runs `start` (once QEMU wrote its pidfile),
    `stop` or `destroy` (as soon as it runs). Gets: running the same command again finishes the job."""
    manager = VmManager()
    handle = _tiny(manager, test_images, tmp_path, start=command != "start")
    if command != "start":
        wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=90)
    proc = subprocess.Popen([VMCTL, command, "victim"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: ready(handle.work_dir) or proc.poll() is not None, what="the observed point")
    time.sleep(0.3 if command != "start" else 0)
    proc.kill()
    proc.wait()
    result = vmctl(command, "victim")
    if command == "destroy":
        assert result.returncode in (0, 3), result.stderr  # 3: the killed run had already finished
        assert manager.find("victim") is None and not os.path.exists(handle.work_dir)
        assert not handle.pid or not alive(handle.pid)
    else:
        assert result.returncode == 0, result.stderr
        assert manager.live_state("victim") == (VmState.RUNNING if command == "start" else VmState.STOPPED)


def test_kill_9_of_the_cli_during_create_then_rerun_converges(test_images, tmp_path, bystander):
    """Fault: `vmctl create` killed with SIGKILL once the VM's work dir exists. Gets: the next create of
    the same name finishes it (or says it exists), and destroy removes everything."""
    disk = tiny_spec(test_images, tmp_path, name="victim").image_path
    argv = [VMCTL, "create", "--name", "victim", "--image", disk, "--no-cloud-init", "--memory", "256"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: os.path.isdir(paths.vm_dir("victim")) or proc.poll() is not None, what="the work dir")
    proc.kill()
    proc.wait()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode in (0, 4), result.stderr  # 4: the killed run had finished (the VM exists)
    manager = VmManager()
    assert manager.get("victim").state == VmState.PREPARED
    assert vmctl("destroy", "victim").returncode == 0
    assert manager.find("victim") is None and not os.path.exists(paths.vm_dir("victim"))


def test_a_full_data_dir_fails_create_cleanly(test_images, tmp_path, monkeypatch, tmpfs):
    """Fault: the data dir is a 1 MB tmpfs, too small for a VM's overlay and seed. Gets: create fails
    with an error, leaves no record and no work dir; once space is there, create works."""
    mount = tmpfs.mount("1m")
    monkeypatch.setenv("XDG_DATA_HOME", str(mount))
    filler = tmpfs.fill(mount)
    manager = VmManager()
    result = vmctl("create", "--name", "full", "--image", tiny_spec(test_images, tmp_path, name="full").image_path)
    assert result.returncode != 0 and "error:" in result.stderr and "internal error" not in result.stderr, result.stderr
    os.unlink(filler)
    assert manager.find("full") is None and not os.path.exists(paths.vm_dir("full"))
    result = vmctl("create", "--name", "full", "--no-cloud-init",
                   "--image", tiny_spec(test_images, tmp_path, name="full").image_path)
    assert result.returncode == 0, result.stderr
    assert vmctl("destroy", "full").returncode == 0


def test_a_corrupt_store_is_an_error_and_nothing_is_lost(test_images, tmp_path, bystander):
    """Fault: vms.json cut in half (a torn write by another tool). Gets: list fails naming the file, the
    bystander keeps running; restoring the file makes everything work again."""
    store = paths.store_path()
    with open(store, "rb") as f:
        good = f.read()
    with open(store, "wb") as f:
        f.write(good[:len(good) // 2])
    result = vmctl("list")
    assert result.returncode != 0 and store in result.stderr and "internal error" not in result.stderr, result.stderr
    with open(store, "rb") as f:
        assert f.read() == good[:len(good) // 2]  # never overwritten
    assert alive(bystander.pid)
    with open(store, "wb") as f:
        f.write(good)
    assert vmctl("list").returncode == 0


def test_a_disk_that_fills_under_a_running_vm_fails_cleanly_and_converges(test_images, tmp_path, monkeypatch, tmpfs):
    """Fault: the data dir (a 16 MB tmpfs) is full while a bystander VM runs. Gets: a change of the
    victim's record through the vm module (real `ansible` run) fails with "no space left on the device",
    code vmctl.disk_full and a hint (never an internal error); `vmctl start` of the victim and a module
    create of a new VM fail cleanly too and leave nothing behind; the store is unchanged and readable and
    the bystander keeps running; once space is freed, the same commands converge."""
    from support import ansible_run
    mount = tmpfs.mount("16m")
    try:
        monkeypatch.setenv("XDG_DATA_HOME", str(mount))
        manager = VmManager()
        bystander = _tiny(manager, test_images, tmp_path, name="bystander")
        before = manager.get("bystander").to_json()
        spec = tiny_spec(test_images, tmp_path, name="victim")
        manager.create(spec)
        module_args = {"name": "victim", "image": spec.image_path, "memory": 300, "vnc": False,
                       "kernel": spec.kernel, "initrd": spec.initrd, "kernel_append": spec.kernel_append}
        with open(paths.store_path(), "rb") as f:
            store = f.read()
        filler = tmpfs.fill(mount)
        result = ansible_run.module("vm", module_args)
        assert result["failed"] and "no space left on the device" in result["msg"], result
        assert "internal error" not in result["msg"] and result["error"]["code"] == "vmctl.disk_full"
        assert "Free space in %s" % os.path.join(str(mount), "vmctl") in result["error"]["hint"]
        result = vmctl("start", "victim")
        assert result.returncode == 1 and "error:" in result.stderr and "internal error" not in result.stderr, result.stderr
        result = ansible_run.module("vm", dict(module_args, name="third"))
        assert result["failed"] and "internal error" not in result["msg"], result
        assert manager.find("third") is None and not os.path.lexists(paths.vm_dir("third"))
        with open(paths.store_path(), "rb") as f:
            assert f.read() == store  # the failed writes changed nothing
        assert vmctl("list").returncode == 0 and alive(bystander.pid)
        os.unlink(filler)
        result = ansible_run.module("vm", module_args)
        assert not result["failed"] and result["changed"], result
        assert vmctl("start", "victim").returncode == 0
        assert manager.get("victim").memory_mb == 300 and manager.live_state("victim") == VmState.RUNNING
        assert alive(bystander.pid) and manager.get("bystander").to_json() == before
        assert vmctl("destroy", "victim").returncode == 0 and vmctl("destroy", "bystander").returncode == 0
    finally:
        for name in ("victim", "bystander", "third"):
            with contextlib.suppress(Exception):
                VmManager().destroy(name)


def test_sigstop_of_qemu_under_the_modules(test_images, tmp_path, bystander):
    """Fault: QEMU SIGSTOPped, seen through the modules (real `ansible` runs). Gets: vm_info lists every
    VM (the victim `unknown`, the bystander running); a settings change through the vm module is refused
    (a hung QEMU still runs: never "changed" behind its back); vm_state stopped ends the victim
    (SIGTERM/SIGKILL of its proven pid, never "already stopped"); a SIGSTOPped VM is destroyed by the vm
    module (state=absent)."""
    from support import ansible_run
    manager = VmManager()
    handle = _tiny(manager, test_images, tmp_path)
    os.kill(handle.pid, signal.SIGSTOP)
    result = ansible_run.module("vm_info", {})
    assert not result["failed"], result
    states = {vm["name"]: vm["state"] for vm in result["vms"]}
    assert states == {"victim": "unknown", "bystander": "running"}, states
    spec = tiny_spec(test_images, tmp_path, name="victim")
    result = ansible_run.module("vm", {"name": "victim", "image": spec.image_path, "memory": 300, "vnc": False,
                                       "kernel": spec.kernel, "initrd": spec.initrd, "kernel_append": spec.kernel_append})
    assert result["failed"] and "VM victim is unknown; memory_mb can only change while it is stopped" in result["msg"], result
    assert manager.get("victim").memory_mb == 256
    result = ansible_run.module("vm_state", {"name": "victim", "state": "stopped", "stop_timeout": 1})
    assert not result["failed"] and result["state"] == "stopped", result
    assert not alive(handle.pid) and manager.get("victim").state == VmState.STOPPED
    handle = manager.start("victim")[0]
    os.kill(handle.pid, signal.SIGSTOP)
    result = ansible_run.module("vm", {"name": "victim", "state": "absent"})
    assert not result["failed"] and result["changed"], result
    assert not alive(handle.pid) and manager.find("victim") is None and not os.path.lexists(handle.work_dir)


def test_a_vm_with_a_bad_record_is_destroyed_from_its_name_alone(test_images, tmp_path, bystander):
    """Bad input: a hand-edited record of a running VM (``vcpus: "lots"``), whose ``pid`` names another process
    (a decoy ``sleep``). Gets: ``list`` names the bad field and its hint says destroy works; ``vmctl destroy``
    ends the QEMU that proves to run from the VM's own folder, removes the folder and the entry, and leaves
    the decoy and the bystander alone."""
    import json
    manager = VmManager()
    victim = _tiny(manager, test_images, tmp_path)
    decoy = subprocess.Popen(["sleep", "300"])
    try:
        store = paths.store_path()
        with open(store) as f:
            data = json.load(f)
        data["victim"].update(vcpus="lots", pid=decoy.pid)
        with open(store, "w") as f:
            json.dump(data, f)
        listed = vmctl("list")
        assert listed.returncode == 1 and "field vcpus" in listed.stderr, listed.stderr
        assert "vmctl destroy victim" in vmctl("status", "victim").stderr
        result = vmctl("destroy", "victim")
        assert result.returncode == 0 and "from its name alone" in result.stdout, result.stdout + result.stderr
        wait_until(lambda: not alive(victim.pid), what="the victim's QEMU gone")
        assert decoy.poll() is None, "destroy signalled the pid the bad record named"
        assert not os.path.lexists(victim.work_dir) and "victim" not in json.load(open(store))
        assert vmctl("list").returncode == 0
    finally:
        decoy.kill()
        decoy.wait()
