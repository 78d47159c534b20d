"""The vm, vm_state and vm_info modules through real ``ansible`` runs, on a real QEMU guest
(the busybox guest boots in seconds and powers off on the ACPI button)."""

import os
import subprocess

import pytest
from support.ansible_run import module
from support.guests import alive, wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_args(test_images, tmp_path):
    disk = tmp_path / "tiny-disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    tiny = test_images["tiny"]
    return dict(name="mod", image=str(disk), memory=256, kernel=tiny["kernel"], initrd=tiny["initrd"],
                kernel_append="console=ttyS0", vnc=False)


def manager_handle(name):
    return VmManager().get(name)


def store_bytes(data_home):
    path = data_home / "vms.json"
    return path.read_bytes() if path.exists() else None


def test_vm_present_is_idempotent_and_check_mode_touches_nothing(tiny_args, vmctl_data_home):
    planned = module("vm", tiny_args, check=True)
    assert planned["changed"] and planned["actions"] == ["create"] and not planned["failed"]
    assert store_bytes(vmctl_data_home) is None and not (vmctl_data_home / "vms" / "mod").exists()

    created = module("vm", tiny_args, diff=True)
    assert created["changed"] and created["vm"]["state"] == "prepared"
    assert os.path.isfile(created["vm"]["overlay_path"])
    assert module("vm", tiny_args)["changed"] is False

    # an applicable change: vCPUs and memory of a VM that is not running, shown in the diff
    bigger = dict(tiny_args, vcpus=2, memory=384)
    before = store_bytes(vmctl_data_home)
    planned = module("vm", bigger, check=True, diff=True)
    assert planned["changed"] and store_bytes(vmctl_data_home) == before
    assert sorted(planned["actions"]) == ["set memory_mb 256 -> 384", "set vcpus 1 -> 2"]
    assert '-    "vcpus": 1,' in planned["_stdout"] and '+    "vcpus": 2,' in planned["_stdout"]
    applied = module("vm", bigger)
    assert applied["changed"] and applied["vm"]["vcpus"] == 2 and applied["vm"]["memory_mb"] == 384
    assert module("vm", bigger)["changed"] is False

    # a bigger disk is grown in place
    grown = module("vm", dict(bigger, disk=2))
    assert grown["changed"] and grown["actions"] == ["resize disk to 2 GB"]
    out = subprocess.run(["qemu-img", "info", "--output=json", grown["vm"]["overlay_path"]], capture_output=True, text=True, check=False).stdout
    assert '"virtual-size": 2147483648' in out

    # a change that needs a new disk is refused with a hint, unless recreate
    other = str(vmctl_data_home.parent / "other.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", other, "1G"], check=True)
    refused = module("vm", dict(bigger, disk=2, image=other))
    assert refused["failed"] and "cannot be changed in place" in refused["msg"]
    assert "recreate: true" in refused["error"]["hint"]
    recreated = module("vm", dict(bigger, disk=2, image=other, recreate=True))
    assert recreated["changed"] and recreated["actions"] == ["destroy", "create"]
    assert recreated["vm"]["image_path"] == other

    gone = module("vm", {"name": "mod", "state": "absent"}, check=True)
    assert gone["changed"] and (vmctl_data_home / "vms" / "mod").exists()
    assert module("vm", {"name": "mod", "state": "absent"})["changed"] is True
    assert not (vmctl_data_home / "vms" / "mod").exists()
    assert module("vm", {"name": "mod", "state": "absent"})["changed"] is False


def test_vm_state_waits_for_each_state(tiny_args, vmctl_data_home):
    module("vm", tiny_args)
    assert module("vm_state", {"name": "mod", "state": "running"}, check=True)["actions"] == ["start"]
    started = module("vm_state", {"name": "mod", "state": "running"})
    assert started["changed"] and started["state"] == "running" and started["previous_state"] == "prepared"
    assert "wait_for_ssh" not in started["actions"]  # no ssh settings: nothing to wait for
    pid = started["vm"]["pid"]
    assert alive(pid)
    wait_for_console(manager_handle("mod"), "VMCTL-TINY-READY")
    assert module("vm_state", {"name": "mod", "state": "running"})["changed"] is False

    # changing vcpus of a running VM is refused with what to do
    refused = module("vm", dict(tiny_args, vcpus=2))
    assert refused["failed"] and "stop it" in refused["error"]["hint"].lower()

    suspended = module("vm_state", {"name": "mod", "state": "suspended"})
    assert suspended["changed"] and suspended["state"] == "suspended"
    info = module("vm_info", {"name": "mod"})
    assert info["vms"][0]["state"] == "suspended" and info["changed"] is False
    assert [vm["name"] for vm in module("vm_info", {})["vms"]] == ["mod"]  # all VMs

    stopped = module("vm_state", {"name": "mod", "state": "stopped", "stop_timeout": 20})
    # a stop returns only when QEMU is gone (the guest powers off on the ACPI button)
    assert stopped["changed"] and stopped["state"] == "stopped" and not alive(pid)
    assert stopped["vm"]["last_stop"] == "acpi"
    assert module("vm_state", {"name": "mod", "state": "stopped"})["changed"] is False
    bad = module("vm_state", {"name": "mod", "state": "suspended"})
    assert bad["failed"] and bad["error"]["code"] == "vmctl.vm.invalid_state"

    restarted = module("vm_state", {"name": "mod", "state": "restarted"})
    assert restarted["changed"] and restarted["actions"] == ["start"]
    again = module("vm_state", {"name": "mod", "state": "restarted"})
    assert again["actions"] == ["stop", "start"] and again["vm"]["pid"] != restarted["vm"]["pid"]
    module("vm", {"name": "mod", "state": "absent"})
    assert not alive(again["vm"]["pid"])


def test_errors_name_the_vm_and_say_what_to_do(vmctl_data_home):
    missing = module("vm_state", {"name": "nope", "state": "running"})
    assert missing["failed"] and "nope" in missing["msg"] and missing["error"]["code"] == "vmctl.vm.not_found"
    # check mode: an earlier vm task may only have planned to create it, so the start is planned
    planned = module("vm_state", {"name": "nope", "state": "running"}, check=True)
    assert planned["changed"] and planned["actions"] == ["start"] and not planned["failed"], planned
    assert planned["previous_state"] == "absent" and "vm" not in planned
    # a VM that does not exist is not running: stopped is already true
    stopped = module("vm_state", {"name": "nope", "state": "stopped"})
    assert stopped["changed"] is False and not stopped["failed"] and stopped["state"] == "absent", stopped
    assert module("vm_state", {"name": "nope", "state": "suspended"})["error"]["code"] == "vmctl.vm.not_found"
    bad_name = module("vm", {"name": "bad name!", "image": "/nonexistent"})
    assert bad_name["failed"] and bad_name["error"]["code"] == "vmctl.vm.invalid_name"
    no_image = module("vm", {"name": "x", "image": "/nonexistent.qcow2"})
    assert no_image["failed"] and "/nonexistent.qcow2" in no_image["msg"]
    assert module("vm_info", {})["vms"] == []


@pytest.mark.guest
def test_running_waits_for_ssh_on_a_real_guest_and_a_wrong_host_key_is_refused(test_images, vmctl_data_home):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    from ansible_collections.vmctl.core.plugins.module_utils.errors import HostKeyMismatch
    args = dict(name="web", image=test_images["debian"]["path"], vcpus=2, memory=1024, vnc=False,
                cloud_init={"hostname": "web-guest"}, ssh={"user": "admin"})
    assert module("vm", args)["changed"]
    started = module("vm_state", {"name": "web", "state": "running", "wait_timeout": 300})
    assert started["actions"] == ["start", "wait_for_ssh"] and started["ssh_wait"] > 0, started
    handle = manager_handle("web")
    session = ssh.connect(handle)
    try:
        status, out, _err, _signal = session.run("hostname; id -un")
        assert status == 0 and out.decode().split() == ["web-guest", "admin"]
    finally:
        session.close()
    info = module("vm_info", {"name": "web"})["vms"][0]
    assert info["ssh"]["port"] == handle.ssh_host_port and info["ssh"]["user"] == "admin"
    # a known_hosts that pins another key: refused, naming the VM
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(vmctl_data_home.parent / "other")], check=True)
    pub = (vmctl_data_home.parent / "other.pub").read_text().split()
    with open(handle.known_hosts, "w") as f:
        f.write("[127.0.0.1]:%d %s %s\n" % (handle.ssh_host_port, pub[0], pub[1]))
    with pytest.raises(HostKeyMismatch) as err:
        ssh.connect(handle)
    assert "VM web" in str(err.value)
    assert module("vm", {"name": "web", "state": "absent"})["changed"]


def test_settings_blocks_given_as_booleans(tiny_args, vmctl_data_home):
    """``cloud_init: false`` means no seed (as omitting it), ``true`` a seed with the defaults; a boolean for a block
    without that meaning (``network``) is a clear error. Bad input: ansible-core's own check failed on all three
    with "argument of type 'bool' is not iterable" before the module ran."""
    none = module("vm", dict(tiny_args, cloud_init=False))
    assert none["changed"] and not none["failed"], none
    assert none["vm"]["seed_iso_path"] is None, none["vm"]
    assert module("vm", dict(tiny_args, state="absent"))["changed"]
    default = module("vm", dict(tiny_args, cloud_init=True))
    assert default["changed"] and not default["failed"] and os.path.isfile(default["vm"]["seed_iso_path"]), default
    bad = module("vm", dict(tiny_args, name="other", network=False), check=True)
    assert bad["failed"] and "network must be a dict of its settings, got False" in bad["msg"], bad
