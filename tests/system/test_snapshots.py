"""Snapshots on the real Debian guest (one boot for the module): live snapshot and revert through vm_snapshot in a
real playbook (the vm_ssh session and the pinned host key still work), the CLI and vm_info listing them,
disk-only snapshots while stopped, a revert to a RAM snapshot that starts a stopped VM, restart keeping them,
delete and destroy removing them. The guest has its cloud-init seed ISO attached read-only: it must not block
a live snapshot.
"""

import json
import os
import subprocess

import pytest
from support.ansible_run import module
from support.guests import data_home, debian_spec, ssh, ssh_argv, wait_for_ssh
from support.vm_ssh_helpers import daemons, playbook

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = [pytest.mark.slow, pytest.mark.guest]

NAME = "snapdeb"
WAIT = {"ANSIBLE_VMCTL_WAIT_TIMEOUT": "400"}

PLAYBOOK = """
- hosts: %(name)s
  gather_facts: false
  tasks:
    - name: before
      ansible.builtin.command: touch /tmp/before-snapshot
    - name: take
      vmctl.core.vm_snapshot: {name: %(name)s, snapshot: base}
      delegate_to: localhost
    - name: take again
      vmctl.core.vm_snapshot: {name: %(name)s, snapshot: base}
      delegate_to: localhost
    - name: check mode
      vmctl.core.vm_snapshot: {name: %(name)s, snapshot: other}
      delegate_to: localhost
      check_mode: true
    - name: after
      ansible.builtin.command: touch /tmp/after-snapshot
    - name: revert
      vmctl.core.vm_snapshot: {name: %(name)s, snapshot: base, state: reverted}
      delegate_to: localhost
    - name: look
      ansible.builtin.shell: ls /tmp/before-snapshot /tmp/after-snapshot 2>&1; true
"""


@pytest.fixture(scope="module")
def guest_home(test_images, tmp_path_factory):
    """A booted Debian VM (SSH answers) in a store of its own; destroyed at the end."""
    home = tmp_path_factory.mktemp("snap-xdg")
    with data_home(home):
        manager = VmManager()
        try:
            manager.create(debian_spec(test_images, name=NAME, hostname="snap-guest", memory_mb=512))  # less RAM to save
            handle = manager.start(NAME)[0]
            wait_for_ssh(handle, timeout=900)  # a deadline, not a measure: a loaded host boots slowly
            yield home
        finally:
            manager.destroy(NAME)


@pytest.fixture
def manager(guest_home, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(guest_home))
    return VmManager()


def vmctl(*args, timeout=300):
    return subprocess.run(["vmctl"] + list(args), capture_output=True, text=True, timeout=timeout, check=False)


def test_live_snapshot_and_revert_in_a_playbook_keep_ssh_working(manager, tmp_path, control_dir):
    inventory = tmp_path / "vms.vmctl.yml"
    inventory.write_text("plugin: vmctl.core.vms\n")
    book = tmp_path / "snap.yml"
    book.write_text(PLAYBOOK % {"name": NAME})
    tasks, proc = playbook(book, inventory, env=WAIT)
    results = {name: hosts[NAME] for name, hosts in tasks}
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    taken = results["take"]
    assert taken["changed"] and taken["snapshot"]["ram"] and taken["snapshot"]["size"] > 0, taken
    assert taken["state"] == "running"
    assert results["take again"]["changed"] is False
    assert results["check mode"]["changed"] and results["check mode"]["snapshot"] is None
    reverted = results["revert"]
    assert reverted["changed"] and reverted["state"] == "running" and reverted["revert"]["ram"], reverted
    assert reverted["revert"]["started"] is False and reverted["session_reset"] is True
    assert reverted["revert"]["clock_lag_seconds"] >= 0
    # the next task logged in again (pinned host key) and sees the disk as it was at the snapshot
    look = results["look"]["stdout"]
    assert "/tmp/before-snapshot" in look and "No such file" in look and "after-snapshot" in look, look
    assert len(daemons(control_dir)) == 1
    handle = manager.get(NAME)
    assert [s["name"] for s in handle.snapshots] == ["base"]
    # OpenSSH with StrictHostKeyChecking=yes against the VM's known_hosts too
    assert ssh(handle, "hostname").strip() == "snap-guest"
    # only the overlay holds it: the read-only seed ISO has no snapshot
    assert [s["name"] for s in qemu_img.info(handle.overlay_path).get("snapshots", [])] == ["base"]
    assert "snapshots" not in qemu_img.info(handle.seed_iso_path)


def test_list_status_and_vm_info_show_them(manager):
    listing = vmctl("snapshot", "list", NAME)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["NAME", "RAM", "SIZE", "DATE"] and row.split()[:2] == ["base", "yes"]
    assert json.loads(vmctl("snapshot", "list", NAME, "--json").stdout)[0]["name"] == "base"
    status = vmctl("status", NAME).stdout
    assert "Snapshots:" in status and "base (RAM," in status, status
    assert json.loads(vmctl("list", "--json").stdout)[0]["snapshots"][0]["ram"] is True
    info = module("vm_info", {"name": NAME})
    assert info["vms"][0]["snapshots"][0]["name"] == "base"


def test_bad_snapshot_requests_are_refused_clearly(manager):
    """Bad input: an unknown snapshot (exit 3), a bad name (exit 2), a disk-only revert while running (exit 4),
    each with a hint; nothing changes."""
    missing = vmctl("snapshot", "revert", NAME, "nope")
    assert missing.returncode == 3 and "has no snapshot nope" in missing.stderr and "hint:" in missing.stderr
    bad = vmctl("snapshot", "create", NAME, "../x")
    assert bad.returncode == 2 and "invalid snapshot name" in bad.stderr
    failed = module("vm_snapshot", {"name": NAME, "snapshot": "nope", "state": "reverted"})
    assert failed["failed"] and failed["error"]["code"] == "vmctl.snapshot.not_found"
    assert [s["name"] for s in manager.get(NAME).snapshots] == ["base"]


def test_disk_only_snapshot_while_stopped_and_a_ram_revert_starts_the_vm(manager):
    manager.stop(NAME, timeout=60)
    cold = vmctl("snapshot", "create", NAME, "cold")
    assert cold.returncode == 0 and "disk only" in cold.stderr, cold.stderr
    snaps = {s["name"]: s for s in manager.get(NAME).snapshots}
    assert snaps["cold"]["ram"] is False and snaps["cold"]["vm_state_size"] == 0
    assert vmctl("snapshot", "revert", NAME, "cold").returncode == 0  # the disk back, the VM still stopped
    assert manager.live_state(NAME) == "stopped"
    begin_port = manager.get(NAME).ssh_host_port
    handle, changed, details = manager.snapshot_revert(NAME, "base")
    assert changed and details["started"] and handle.state == "running"
    # running at once in the snapshot's state: SSH answers without a boot (the pinned key, same port)
    assert handle.ssh_host_port == begin_port
    result = subprocess.run(ssh_argv(handle, "test -e /tmp/before-snapshot && echo back"), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.stdout.strip() == "back", result.stderr
    # a disk-only snapshot cannot be reverted under a running VM
    refused = vmctl("snapshot", "revert", NAME, "cold")
    assert refused.returncode == 4 and "disk-only" in refused.stderr and "vmctl stop" in refused.stderr


def test_restart_keeps_them_delete_and_destroy_remove_them(manager, test_images):
    restarted = module("vm_state", {"name": NAME, "state": "restarted", "wait_for_ssh": False, "stop_timeout": 60})
    assert not restarted["failed"], restarted
    handle = manager.get(NAME)
    assert sorted(s["name"] for s in handle.snapshots) == ["base", "cold"]
    assert sorted(QemuBackend().snapshot_list(handle)) == ["base", "cold"]  # QEMU's own view of the overlay
    gone = module("vm_snapshot", {"name": NAME, "snapshot": "cold", "state": "absent"})
    assert gone["changed"] and [s["name"] for s in gone["snapshots"]] == ["base"]
    assert module("vm_snapshot", {"name": NAME, "snapshot": "cold", "state": "absent"})["changed"] is False
    assert vmctl("snapshot", "delete", NAME, "base").returncode == 0
    assert manager.get(NAME).snapshots == [] and QemuBackend().snapshot_list(manager.get(NAME)) == {}
    manager.snapshot_create(NAME, "last")
    work_dir = manager.get(NAME).work_dir
    manager.destroy(NAME)
    assert not os.path.exists(work_dir) and manager.find(NAME) is None
