"""Issue 11 items 2, 4 and 8 on the busybox guest: a process is ours only if it proves it, a hung
monitor degrades that VM alone, and the VM's sockets are the user's alone."""

import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest
from support.guests import alive, tiny_spec, wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuProcess
from ansible_collections.vmctl.core.plugins.module_utils.errors import MonitorNotAnswering
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

pytestmark = pytest.mark.slow

VMCTL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bin", "vmctl")
VICTIM_FILES = ("qmp.sock", "console.sock", "qemu.pid")


def _boot(manager, images, tmp_path, name):
    handle = manager.create(tiny_spec(images, tmp_path, name=name))[0]
    handle = manager.start(name)[0]
    wait_for_console(handle, images["tiny"]["ready_marker"], timeout=90)
    return handle


def _cli(*argv):
    """``vmctl ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    result = subprocess.run([VMCTL] + list(argv),
                            capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout, result.stderr


def _decoy(args, lock=None):
    """A harmless process (sleep); with ``lock``, it holds the POSIX lock on that file as QEMU would."""
    code = "import fcntl, os, sys, time\n"
    if lock:
        code += "f = open(%r, 'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n" % lock
    code += "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(300)\n"
    proc = subprocess.Popen([sys.executable, "-c", code] + list(args), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_attacker_record_naming_the_victims_files_never_touches_the_victim(test_images, tmp_path):
    """Bad input: the attacker's record holds the victim's pidfile, QMP and console sockets (and the
    victim's PID). Gets: destroy/stop of the attacker never signal the victim and delete none of its
    files; the victim keeps running."""
    manager = VmManager()
    victim = _boot(manager, test_images, tmp_path, "victim")
    manager.create(tiny_spec(test_images, tmp_path, name="attacker"))
    attacker = manager.get("attacker")
    manager.store.put(attacker.replace(state=VmState.RUNNING, pid=victim.pid, pidfile=victim.pidfile,
                                       qmp_socket=victim.qmp_socket, console_socket=victim.console_socket))
    # and the attacker's own pidfile names the victim's PID
    with open(os.path.join(attacker.work_dir, "qemu.pid"), "w") as f:
        f.write("%d\n" % victim.pid)
    assert manager.live_state("attacker") == VmState.STOPPED
    manager.stop("attacker", timeout=1)
    manager.start("attacker")  # its start cleans its own stale files only
    manager.destroy("attacker")
    assert alive(victim.pid), "destroying the attacker signalled the victim's QEMU"
    for name in VICTIM_FILES:
        assert os.path.exists(os.path.join(victim.work_dir, name)), name
    assert manager.live_state("victim") == VmState.RUNNING
    manager.destroy("victim")
    assert not alive(victim.pid)


def test_decoys_without_proof_are_never_signalled(test_images, tmp_path):
    """Bad input: the VM's own pidfile names (a) a process that holds its lock but is not QEMU for this
    work dir, (b) a process whose command line names the pidfile but holds no lock. Gets: the VM reads
    as stopped, and stop/destroy signal neither."""
    manager = VmManager()
    handle = manager.create(tiny_spec(test_images, tmp_path))[0]
    pidfile = os.path.join(handle.work_dir, "qemu.pid")
    open(pidfile, "w").close()
    holder = _decoy([], lock=pidfile)               # holds the lock, command line does not name the pidfile
    namer = _decoy(["-pidfile", pidfile])           # names the pidfile, holds no lock
    try:
        for decoy in (holder, namer):
            with open(pidfile, "r+") as f:  # not truncated through a new open: the holder's lock stays
                f.write("%d\n" % decoy.pid)
            assert QemuProcess(handle.work_dir).pid() is None
            store_handle = manager.get("tiny")
            manager.store.put(store_handle.replace(state=VmState.RUNNING, pid=decoy.pid))
            assert manager.live_state("tiny") == VmState.STOPPED
            manager.stop("tiny", timeout=1)
        manager.destroy("tiny")
        assert holder.poll() is None and namer.poll() is None, "vmctl signalled a process that did not prove to be its QEMU"
    finally:
        for decoy in (holder, namer):
            decoy.kill()
            decoy.wait()


def test_sigstopped_qemu_degrades_that_vm_alone(test_images, tmp_path):
    """Bad input: one VM's QEMU is SIGSTOPped (its monitor never answers). Gets: list shows it as
    `unknown (monitor not answering)` and the other VM as running; status names the problem with a
    hint; suspend is a clear error; stop ends it with SIGTERM/SIGKILL; the other VM is untouched."""
    manager = VmManager()
    hung = _boot(manager, test_images, tmp_path, "hung")
    other = _boot(manager, test_images, tmp_path, "other")
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        code, out, err = _cli("list")
        assert code == 0, err
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert " unknown (monitor not answering) " in rows["hung"] + " ", out  # the STATE column, FORWARDS after it
        assert " running " in rows["other"] + " ", out
        code, out, err = _cli("status", "hung")
        assert code == 0, err
        assert "unknown (monitor not answering)" in out and "kill -CONT %d" % hung.pid in out and "vmctl stop hung" in out
        with pytest.raises(MonitorNotAnswering) as caught:
            manager.suspend("hung")
        assert "monitor not answering" in caught.value.message and caught.value.hint
        code, out, err = _cli("stop", "hung", "--timeout", "2")
        assert code == 0, err
        assert "stopped VM hung" in out
    finally:
        if alive(hung.pid):
            os.kill(hung.pid, signal.SIGKILL)
    assert not alive(hung.pid)
    assert manager.live_state("hung") == VmState.STOPPED
    assert alive(other.pid) and manager.live_state("other") == VmState.RUNNING


def test_silent_monitor_and_missing_socket(test_images, tmp_path):
    """Bad input: a live QEMU whose qmp.sock is (a) gone, (b) replaced by a unix socket that accepts and
    never says a word. Gets: the VM reads `unknown` with the reason, list carries on, stop kills it."""
    manager = VmManager()
    handle = _boot(manager, test_images, tmp_path, "silent")
    qmp_path = os.path.join(handle.work_dir, "qmp.sock")
    os.unlink(qmp_path)
    info = manager.describe("silent")
    assert (info["state"], info["state_reason"]) == ("unknown", "monitor socket missing")

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(qmp_path)
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])  # kept open, never answered
            except socket.timeout:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        info = manager.describe("silent")
        assert (info["state"], info["state_reason"]) == ("unknown", "monitor not answering")
        code, out, err = _cli("list")
        assert code == 0 and "unknown (monitor not answering)" in out, out + err
        handle_after, before = manager.stop("silent", timeout=2)
        assert before == "unknown" and handle_after.extra["last_stop"] in ("sigterm", "sigkill")
        assert not alive(handle.pid)
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in accepted:
            conn.close()


def test_sockets_are_private_and_vnc_is_a_unix_socket(test_images, tmp_path):
    """The work dir is 0700; QMP, console and VNC sockets, pidfile and console.log are 0600; VNC listens
    on a unix socket by default and on no TCP port."""
    manager = VmManager()
    handle = manager.create(tiny_spec(test_images, tmp_path, name="private", vnc=True))[0]
    handle = manager.start("private")[0]
    assert stat.S_IMODE(os.stat(handle.work_dir).st_mode) == 0o700
    for name in ("qmp.sock", "console.sock", "vnc.sock", "qemu.pid", "console.log"):
        mode = os.stat(os.path.join(handle.work_dir, name)).st_mode
        assert stat.S_IMODE(mode) == 0o600, "%s is %o" % (name, stat.S_IMODE(mode))
    assert stat.S_ISSOCK(os.stat(os.path.join(handle.work_dir, "vnc.sock")).st_mode)
    assert handle.vnc_addr == "unix:%s" % os.path.join(handle.work_dir, "vnc.sock")
    argv = open("/proc/%d/cmdline" % handle.pid, "rb").read().split(b"\0")
    assert b"-vnc" in argv and argv[argv.index(b"-vnc") + 1].startswith(b"unix:")
    with socket.socket(socket.AF_UNIX) as sock:  # it is a VNC server: RFB greeting
        sock.settimeout(5)
        sock.connect(os.path.join(handle.work_dir, "vnc.sock"))
        assert sock.recv(12).startswith(b"RFB ")


def test_tcp_vnc_needs_the_password(test_images, tmp_path):
    """vnc_tcp: VNC on 127.0.0.1 requires VNC authentication (security type 2), never 'None' (1); the
    password file is 0600."""
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path, name="tcpvnc", vnc=True, vnc_tcp=True))
    handle = manager.start("tcpvnc")[0]
    host, port = handle.vnc_addr.rsplit(":", 1)
    assert host == "127.0.0.1"
    password_file = os.path.join(handle.work_dir, "vnc.password")
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600 and len(open(password_file).read().strip()) == 8
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        version = sock.recv(12)
        assert version.startswith(b"RFB 003.")
        sock.sendall(b"RFB 003.008\n")
        count = sock.recv(1)[0]
        types = sock.recv(count)
        assert 2 in types and 1 not in types, types
