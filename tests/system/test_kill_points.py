"""Fault injection at exact steps (issue 11): kill -9 of the `vmctl` CLI and of the module process (a real
`ansible` run: the AnsiballZ process of vmctl.core.vm / vm_state) at each step of create, start, stop
and destroy of a busybox guest under real QEMU. The kill comes from tests/system/support/kill_hook (a
sitecustomize that SIGKILLs the process at the entry or return of a named engine function; no hook in
the engine). After each kill, running the same command again converges, the victim has exactly the
QEMU processes it should (none orphaned, none doubled), and a running bystander VM in the same store
is untouched: same process, still running, its record unchanged."""

import contextlib
import os
import shutil
import subprocess
import tempfile

import pytest
from support import ansible_run
from support.guests import alive, tiny_spec, wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "kill_hook")

STORE_WRITE = "module_utils/store.py:VmStore._write"
QEMU = "backends/qemu/backend.py:"
# (operation, step, kill point "file:qualname:call|return:nth"): each step is a state on disk that a kill
# can leave behind.
POINTS = [
    ("create", "record-reserved", STORE_WRITE + ":return:1"),          # record 'preparing', no directory
    ("create", "dir-made", "module_utils/paths.py:make_vm_dir:return:1"),  # empty work dir
    ("create", "overlay-made", "images/qemu_img.py:create_overlay:return:1"),  # overlay.tmp, not renamed
    ("create", "before-save", STORE_WRITE + ":call:2"),                # files made, record still 'preparing'
    ("create", "saved", STORE_WRITE + ":return:2"),                    # done, killed before exiting
    ("start", "entered", QEMU + "QemuBackend.start:call:1"),
    ("start", "qemu-up", QEMU + "QemuBackend._make_private:call:1"),  # QEMU running, not recorded
    ("start", "before-save", STORE_WRITE + ":call:1"),                 # QMP answered, record says stopped
    ("stop", "entered", QEMU + "QemuBackend.stop:call:1"),
    ("stop", "after-first-wait", "module_utils/proc.py:ProvenProcess.wait_gone:return:1"),  # power button pressed
    ("stop", "before-save", STORE_WRITE + ":call:1"),                  # QEMU gone, record says running
    ("destroy", "entered", QEMU + "QemuBackend.destroy:call:1"),
    ("destroy", "qemu-gone", "module_utils/proc.py:ProvenProcess.wait_gone:return:1"),  # files and record still there
    ("destroy", "files-removed", "module_utils/paths.py:remove_vm_dir:return:1"),  # record still there
    ("destroy", "before-forget", STORE_WRITE + ":call:1"),
]


def qemu_pids(work_dir):
    """Live QEMU processes whose command line names ``work_dir`` (the victim's own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
            if argv and b"qemu-system" in argv[0] and any(work_dir.encode() in a for a in argv) and alive(int(entry)):
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory, test_images):
    """One data dir for the module, with a running bystander VM (booted once)."""
    home = tmp_path_factory.mktemp("kill-points")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(home))
        manager = VmManager()
        manager.create(tiny_spec(test_images, home, name="bystander"))
        handle = manager.start("bystander")[0]
        wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=120)
        yield home, manager.get("bystander")
        with contextlib.suppress(Exception):
            manager.destroy("bystander")


@pytest.fixture
def home(shared_home, monkeypatch):
    """This test runs in the shared data dir; afterwards the bystander must be exactly as it was."""
    path, before = shared_home
    monkeypatch.setenv("XDG_DATA_HOME", str(path))
    yield path
    manager = VmManager()
    for name in manager.list():
        if name != "bystander":
            with contextlib.suppress(Exception):
                manager.destroy(name)
    assert alive(before.pid), "a fault on another VM killed the bystander"
    assert manager.live_state("bystander") == VmState.RUNNING
    assert manager.get("bystander").to_json() == before.to_json(), "the bystander's record changed"
    assert qemu_pids(before.work_dir) == [before.pid]


def cli_command(operation, spec):
    if operation == "create":
        return ["create", "--name", spec.name, "--image", spec.image_path, "--no-cloud-init", "--no-vnc",
                "--memory", str(spec.memory_mb), "--kernel", spec.kernel, "--initrd", spec.initrd,
                "--kernel-append", spec.kernel_append]
    if operation == "stop":
        return ["stop", spec.name, "--timeout", "20"]
    return [operation, spec.name]


def module_call(operation, spec):
    if operation == "create":
        return "vm", {"name": spec.name, "image": spec.image_path, "memory": spec.memory_mb, "vnc": False,
                      "kernel": spec.kernel, "initrd": spec.initrd, "kernel_append": spec.kernel_append}
    if operation == "destroy":
        return "vm", {"name": spec.name, "state": "absent"}
    return "vm_state", {"name": spec.name, "state": "running" if operation == "start" else "stopped", "stop_timeout": 20}


@pytest.fixture(scope="module", autouse=True)
def kill_tmp():
    """A TMPDIR for the killed processes: a SIGKILLed module cannot remove its AnsiballZ payload folder, so
    those stay here and go with the module's tests instead of piling up in /tmp."""
    path = tempfile.mkdtemp(prefix="vmctl-kill-")
    os.environ["VMCTL_TEST_KILL_TMP"] = path
    yield path
    os.environ.pop("VMCTL_TEST_KILL_TMP", None)
    shutil.rmtree(path, ignore_errors=True)


def run(front_end, operation, spec, kill_at=None, mark=None, pidfile=None):
    """Run the operation through the CLI or the module; with ``kill_at``, SIGKILLed at that point (or,
    with ``pidfile``, the QEMU it names is). Returns ``(exit code, output)``."""
    env = {}
    if kill_at:
        env = {"PYTHONPATH": HOOK + os.pathsep + os.environ.get("PYTHONPATH", ""), "VMCTL_TEST_KILL_AT": kill_at,
               "VMCTL_TEST_KILL_WHO": front_end, "VMCTL_TEST_KILL_MARK": mark, "TMPDIR": os.environ["VMCTL_TEST_KILL_TMP"]}
        if pidfile:
            env["VMCTL_TEST_KILL_PIDFILE"] = pidfile
    if front_end == "cli":
        proc = subprocess.run([VMCTL] + cli_command(operation, spec), capture_output=True, text=True, timeout=300,
                              check=False, stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
        return proc.returncode, proc.stdout + proc.stderr
    name, args = module_call(operation, spec)
    result = ansible_run.module(name, args, env=env, timeout=300)
    return (1 if result["failed"] else 0), str(result)


def prepare_victim(operation, spec, test_images):
    """The victim in the state the operation starts from: absent (create), stopped (start), running
    and booted (stop, destroy)."""
    if operation == "create":
        return None
    manager = VmManager()
    manager.create(spec)
    if operation == "start":
        return manager.get(spec.name)
    handle = manager.start(spec.name)[0]
    wait_for_console(handle, test_images["tiny"]["ready_marker"], timeout=120)
    return handle


@pytest.mark.parametrize("front_end", ["cli", "module"])
@pytest.mark.parametrize("operation,step,kill_at", POINTS, ids=["%s-%s" % (p[0], p[1]) for p in POINTS])
def test_kill_9_at_an_exact_step_then_the_same_command_converges(home, test_images, tmp_path, front_end,
                                                                 operation, step, kill_at):
    """Fault: the CLI or the module process SIGKILLed at this step. Gets: the process died there (the
    hook's mark names the point); the same command run again succeeds and leaves the VM, and its record,
    as the command promises (created: prepared with its overlay; started: running with one QEMU, whose
    pid the record holds; stopped: no QEMU, no pid; destroyed: no record, no directory, no QEMU); the
    bystander is untouched (checked by ``home``)."""
    spec = tiny_spec(test_images, tmp_path, name="victim")
    handle = prepare_victim(operation, spec, test_images)
    mark = str(tmp_path / "killed")
    rc, output = run(front_end, operation, spec, kill_at, mark)
    assert os.path.exists(mark), "the kill point %s was never reached: %s" % (kill_at, output[-2000:])
    assert rc != 0, output[-2000:]
    rc, output = run(front_end, operation, spec)
    exists_already = front_end == "cli" and operation == "create" and step == "saved"
    assert rc == (4 if exists_already else 0), output[-2000:]  # 4: the killed create had finished
    manager = VmManager()
    work_dir = paths.vm_dir("victim")
    if operation == "create":
        victim = manager.get("victim")
        assert victim.state == VmState.PREPARED and os.path.exists(victim.overlay_path)
        assert not os.path.exists(victim.overlay_path + ".tmp")
    elif operation == "start":  # the record as the re-run left it (manager.state would refresh it)
        victim = manager.get("victim")
        assert victim.state == VmState.RUNNING and qemu_pids(work_dir) == [victim.pid], "an orphaned or second QEMU"
        assert manager.live_state("victim") == VmState.RUNNING
    elif operation == "stop":
        victim = manager.get("victim")
        assert victim.state == VmState.STOPPED and victim.pid is None and qemu_pids(work_dir) == []
    else:
        assert manager.find("victim") is None and not os.path.lexists(work_dir)
        assert qemu_pids(handle.work_dir) == []
    if operation != "destroy":
        assert run(front_end, "destroy", spec)[0] == 0
        assert manager.find("victim") is None and not os.path.lexists(work_dir) and qemu_pids(work_dir) == []


# (operation, step, point) at which the victim's QEMU is SIGKILLed while the command carries on.
QEMU_POINTS = [
    ("start", "spawned", QEMU + "QemuBackend._make_private:call:1"),  # QEMU daemonized, QMP not yet asked
    ("start", "before-save", STORE_WRITE + ":call:1"),                 # the command believes it runs
    ("stop", "entered", QEMU + "QemuBackend.stop:call:1"),
    ("stop", "power-button", "module_utils/proc.py:ProvenProcess.wait_gone:call:1"),   # while waiting for the guest
    ("destroy", "entered", QEMU + "QemuBackend.destroy:call:1"),
]


@pytest.mark.parametrize("front_end", ["cli", "module"])
@pytest.mark.parametrize("operation,step,kill_at", QEMU_POINTS, ids=["%s-%s" % (p[0], p[1]) for p in QEMU_POINTS])
def test_kill_9_of_qemu_at_an_exact_step_then_the_same_command_converges(home, test_images, tmp_path, front_end,
                                                                         operation, step, kill_at):
    """Fault: the victim's QEMU SIGKILLed at this step of the command (which carries on). Gets: the
    command succeeds or fails with a clear error (never an internal error); the same command run again
    succeeds and converges (started: running with one QEMU; stopped: no QEMU; destroyed: nothing left);
    the bystander is untouched."""
    spec = tiny_spec(test_images, tmp_path, name="victim")
    prepare_victim(operation, spec, test_images)
    work_dir = paths.vm_dir("victim")
    mark = str(tmp_path / "killed")
    first, output = run(front_end, operation, spec, kill_at, mark, pidfile=os.path.join(work_dir, "qemu.pid"))
    assert os.path.exists(mark), "the kill point %s was never reached: %s" % (kill_at, output[-2000:])
    assert "internal error" not in output and "Traceback" not in output, output[-2000:]
    rc, output = run(front_end, operation, spec)
    gone_already = front_end == "cli" and operation == "destroy" and first == 0
    assert rc == (3 if gone_already else 0), output[-2000:]  # 3: `vmctl destroy` of a VM that is gone
    manager = VmManager()
    if operation == "start":
        victim = manager.get("victim")
        assert victim.state == VmState.RUNNING and qemu_pids(work_dir) == [victim.pid]
    elif operation == "stop":
        assert manager.get("victim").state == VmState.STOPPED and qemu_pids(work_dir) == []
    else:
        assert manager.find("victim") is None and not os.path.lexists(work_dir) and qemu_pids(work_dir) == []
