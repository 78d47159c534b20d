"""The real Debian cloud image through the engine: cloud-init, pinned host key, lifecycle."""

import os
import subprocess
import time

import pytest
from support.guests import console_size, debian_spec, ssh, ssh_argv, wait_for_ssh

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.qmp import QmpClient
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

pytestmark = [pytest.mark.slow, pytest.mark.guest]


def test_boot_ssh_suspend_resume_stop_start_destroy(test_images, tmp_path, capsys):
    manager = VmManager()
    handle = manager.create(debian_spec(test_images, name="deb", hostname="deb-test"))[0]
    assert os.path.isfile(handle.seed_iso_path) and os.path.isfile(handle.known_hosts)
    assert oct(os.stat(handle.private_key_path).st_mode & 0o777) == "0o600"

    begin = time.monotonic()
    handle = manager.start("deb")[0]
    waited = wait_for_ssh(handle, timeout=300)
    with capsys.disabled():
        accel = os.environ.get("VMCTL_ACCEL", "auto")
        print("\n[measure] Debian guest: start to SSH under %s: %.1fs" % (accel, time.monotonic() - begin))
    assert waited >= 0
    assert ssh(handle, "hostname").strip() == "deb-test"
    # cloud-init applied our seed without an error in any stage (an error also ends its --wait early)
    status = ssh(handle, "cloud-init status --long; sudo cat /run/cloud-init/result.json")
    assert status.startswith("status: done") and '"errors": []' in status, status
    assert ssh(handle, "sudo -n id -u").strip() == "0"
    assert ssh(handle, "getent passwd vm | cut -d: -f7").strip() == "/bin/bash"
    # the host key the guest presents is the one we generated and pinned
    with open(handle.known_hosts) as f:
        pinned = f.readline().split()[2]
    assert ssh(handle, "sudo cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub").strip() == pinned

    # a different known_hosts entry makes strict checking fail: we really pin
    bad = tmp_path / "bad_known_hosts"
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert other.returncode == 0
    bad.write_text("[127.0.0.1]:%d %s\n" % (handle.ssh_host_port, " ".join((tmp_path / "k.pub").read_text().split()[:2])))
    argv = ssh_argv(handle, "true")
    argv[argv.index("UserKnownHostsFile=%s" % handle.known_hosts)] = "UserKnownHostsFile=%s" % bad
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in result.stderr

    manager.suspend("deb")
    with QmpClient(handle.qmp_socket) as qmp:
        assert qmp.query_status()["status"] == "paused"
    assert manager.live_state("deb") == VmState.SUSPENDED
    manager.resume("deb")
    assert ssh(handle, "echo alive").strip() == "alive"

    ssh(handle, "echo persisted | sudo tee /var/tmp/marker >/dev/null && sync")
    begin = time.monotonic()
    stopped = manager.stop("deb", timeout=60)[0]
    assert stopped.extra["last_stop"] == "acpi", "guest did not power off through ACPI within the timeout"
    with capsys.disabled():
        print("[measure] Debian guest: ACPI power-off took %.1fs" % (time.monotonic() - begin))

    offset = console_size(handle)
    handle, before = manager.start("deb")
    assert before == VmState.STOPPED
    wait_for_ssh(handle, timeout=300)
    assert ssh(handle, "cat /var/tmp/marker").strip() == "persisted"  # same disk after restart
    assert console_size(handle) > offset

    pid, work_dir = handle.pid, handle.work_dir
    manager.destroy("deb")
    assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    assert not os.path.exists(work_dir)
    assert manager.find("deb") is None
