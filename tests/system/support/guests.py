"""Helpers for tests that boot real QEMU guests (importable: ``from guests import ...``)."""

import contextlib
import os
import subprocess
import time

from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.model import CloudInitConfig, SshConfig, VmSpec


def alive(pid):
    """The process exists and is not a zombie (a daemonized QEMU is reaped by init, maybe later)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tiny_spec(images, tmp_path, name="tiny", **overrides):
    """A VmSpec for the busybox guest: direct kernel boot, a scratch disk, no cloud-init."""
    disk = str(tmp_path / ("%s-disk.qcow2" % name))
    if not os.path.exists(disk):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    tiny = images["tiny"]
    values = dict(name=name, image_path=disk, memory_mb=256, kernel=tiny["kernel"], initrd=tiny["initrd"],
                  kernel_append="console=ttyS0", vnc=False)
    values.update(overrides)
    return VmSpec(**values)


def debian_spec(images, name="deb", hostname=None, **overrides):
    values = dict(name=name, image_path=images["debian"]["path"], vcpus=2, memory_mb=1024,
                  cloud_init=CloudInitConfig(hostname=hostname, generate_key=True), ssh=SshConfig(user="vm"))
    values.update(overrides)
    return VmSpec(**values)


def wait_for_console(handle, marker, timeout=120, start_offset=0):
    """Wait until ``marker`` appears in the VM's console.log after ``start_offset``; return seconds waited."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        try:
            with open(handle.console_log, "rb") as f:
                f.seek(start_offset)
                if marker.encode() in f.read():
                    return time.monotonic() - begin
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise AssertionError("%r not seen on %s's console within %ss" % (marker, handle.name, timeout))


def console_size(handle):
    try:
        return os.path.getsize(handle.console_log)
    except OSError:
        return 0


def ssh_argv(handle, command, host="127.0.0.1", port=None):
    """OpenSSH with the VM's key, pinned known_hosts and StrictHostKeyChecking=yes."""
    return ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=%s" % handle.known_hosts,
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes",
            "-i", handle.private_key_path, "-p", str(port or handle.ssh_host_port),
            "%s@%s" % (handle.ssh_user or "vm", host), command]


def wait_for_ssh(handle, timeout=240):
    """Retry until an SSH login works and cloud-init has finished; return seconds waited.

    cloud-init restarts sshd while it configures it (ssh_pwauth), so the first successful login
    is not yet "ready": ``cloud-init status --wait`` over SSH is.
    """
    begin = time.monotonic()
    last = None
    while time.monotonic() - begin < timeout:
        result = subprocess.run(ssh_argv(handle, "cloud-init status --wait >/dev/null; true"),
                                capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode == 0:
            return time.monotonic() - begin
        last = result.stderr
        time.sleep(2)
    raise AssertionError("no SSH to %s within %ss: %s" % (handle.name, timeout, last))


def ssh(handle, command):
    result = subprocess.run(ssh_argv(handle, command), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def overlay_backing(handle):
    return qemu_img.info(handle.overlay_path).get("full-backing-filename")


@contextlib.contextmanager
def data_home(home):
    """XDG_DATA_HOME set to ``home`` for the block (a module-scoped guest's own store), restored after."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = saved
