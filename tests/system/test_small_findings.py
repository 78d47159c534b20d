"""Issue 11 item 12: the smaller findings, each through the real command."""

import os
import socket
import subprocess
import sys
import threading

import pytest
from support import ansible_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


def vmctl(*args, cwd=None):
    return subprocess.run([VMCTL] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, stdin=subprocess.DEVNULL)


def test_an_image_that_is_not_a_file_says_what_it_is(tmp_path):
    """Bad input: a FIFO, a directory and /dev/zero as --image. Gets: an error saying what the path is
    (never 'does not exist', and the FIFO is never opened, so nothing hangs), with a hint."""
    fifo = tmp_path / "pipe.qcow2"
    os.mkfifo(str(fifo))
    folder = tmp_path / "folder.qcow2"
    folder.mkdir()
    for path, kind in ((fifo, "is a FIFO (named pipe)"), (folder, "is a directory"), ("/dev/zero", "is a character device")):
        result = vmctl("create", "--name", "x", "--image", path)
        assert result.returncode == 1, result.stderr
        assert "error: image %s %s, not a disk image file" % (path, kind) in result.stderr
        assert "does not exist" not in result.stderr and "hint: Give the path of a qcow2 or raw image file" in result.stderr
    result = vmctl("create", "--name", "x", "--image", tmp_path / "missing.qcow2")
    assert result.returncode == 3 and "does not exist" in result.stderr
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 65536)
    result = vmctl("create", "--name", "x", "--image", image, "--no-cloud-init", "--kernel", fifo)
    assert result.returncode == 1 and "error: kernel %s is a FIFO (named pipe), not a regular file" % fifo in result.stderr
    assert not os.path.exists(os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "vms", "x"))


def _not_files(tmp_path):
    fifo = tmp_path / "pipe.qcow2"
    os.mkfifo(str(fifo))
    folder = tmp_path / "folder.qcow2"
    folder.mkdir()
    return ((fifo, "is a FIFO (named pipe)"), (folder, "is a directory"), ("/dev/zero", "is a character device"))


def test_a_vmfile_image_that_is_not_a_file_says_what_it_is(tmp_path):
    """Bad input: a VMFile whose image is a FIFO, a directory or /dev/zero. Gets: the VMFile problem at
    the image line saying what the path is (never 'does not exist'; the FIFO is never opened)."""
    for path, kind in _not_files(tmp_path):
        (tmp_path / "VMFile.kdl").write_text('vm "demo" {\n    image "%s"\n}\n' % path)
        result = vmctl("up", cwd=str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert "VMFile.kdl:2:11: error: image %s %s, not a disk image file" % (path, kind) in result.stderr, result.stderr
        assert "does not exist" not in result.stderr and "hint: Give the path of a qcow2 or raw image file" in result.stderr


@pytest.mark.slow
def test_a_vm_module_image_that_is_not_a_file_says_what_it_is(tmp_path):
    """Bad input: the vm module's image is a FIFO, a directory or /dev/zero (real `ansible` run). Gets: a
    failed task saying what the path is, never 'does not exist', without blocking on the FIFO."""
    for path, kind in _not_files(tmp_path):
        result = ansible_run.module("vm", {"name": "demo", "image": str(path)})
        assert result["failed"], result
        assert "image %s %s, not a disk image file" % (path, kind) in result["msg"], result["msg"]
        assert "does not exist" not in result["msg"]


def test_vmctl_up_prints_a_vmfile_hint_once(tmp_path):
    """Bad input: a VMFile naming a missing image. Gets: the problem with its hint, printed once."""
    (tmp_path / "VMFile.kdl").write_text('vm "demo" {\n    image "./missing.qcow2"\n}\n')
    result = vmctl("up", cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("Paths are relative to the VMFile's directory") == 1, result.stderr


def test_retried_ssh_logins_print_no_paramiko_tracebacks(tmp_path):
    """Bad input: an SSH port that accepts and hangs up at once (QEMU's forward while the guest boots),
    waited on for a few seconds as `vmctl ssh --wait` does. Gets: one clear timeout error on stderr,
    no paramiko 'Traceback' or 'Exception (client)' lines."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except socket.timeout:
                continue
            conn.sendall(b"not ssh\r\n")  # a bad banner: paramiko logs it with a traceback
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "known_hosts").write_text("")
    code = """
import sys
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import main as cli
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import login
cli._configure_logging(0)  # as `vmctl ssh` sets it up
target = SshTarget("booting", "127.0.0.1", int(sys.argv[1]), "vm", sys.argv[2], sys.argv[3])
try:
    login(target, 4, attempt_timeout=1)
except VmctlError as err:
    sys.stderr.write("error: %s\\n" % err.message)
"""
    try:
        result = subprocess.run([sys.executable, "-c", code, str(server.getsockname()[1]), str(key), str(tmp_path / "known_hosts")],
                                capture_output=True, text=True, timeout=120, check=False)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert "error:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Exception (client)" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
