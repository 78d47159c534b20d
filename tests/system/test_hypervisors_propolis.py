"""A Propolis hypervisor beside a QEMU one, in one VMFile (issue 16: "a hypervisor can be illumos with backend
propolis").

``hvp`` stands in for an illumos host: a network namespace with its own sshd and user (support/hypervisors.py), whose
sshd gives every session of that user ``VMCTL_PROPOLIS_COMMAND_PREFIX`` (``SetEnv``, as an admin sets ``pfexec`` for
the vmctl user of a real host), pointing the propolis backend at the fake illumos commands
(support/propolis_fake.py ``illumos STATE.json``: zoneadm, zonecfg, dladm, zlogin, arp, its zones in a state file
the hypervisor's user owns). The fake propolis-server (API 5.0.0, every request and answer checked against the
OpenAPI document) listens inside hvp's namespace, on the backend's default 127.0.0.1:12400, where nothing outside the
namespace reaches it. ``hvq`` is a QEMU hypervisor running the tiny busybox guest. The vm, vm_state and vm_info
modules run on each through Ansible's ssh connection, with the hypervisors' Debian python3 and only
requirements-hypervisor.txt installed there.

Bad inputs and what they get: zone commands that fail on hvp fail that VM with the command's error, naming the VM
and its hypervisor, while the VM on hvq comes up.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

from support.hypervisors import NetnsHypervisor
from support.propolis_fake import FakeIllumos, FakePropolis
import test_hypervisors
from test_hypervisors import _netns_works, ansible_inventory, inventory_source, listing, recap, vmfile_playbook

pytestmark = [pytest.mark.slow]

tiny_vm = test_hypervisors.tiny_vm  # the tiny guest's VMFile block (a fixture), shared with test_hypervisors
FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "propolis_fake.py")
PROPOLIS_VM = """vm "%(name)s" {
  image "%(image)s"
  memory 512
  vcpus 2
  backend "propolis"
  network "vnic" { name "vnic0"; }
  hypervisor "hvp"
}
"""


@pytest.fixture(scope="module")
def fleet():
    """hvp (the illumos stand-in, with its fake propolis-server inside its namespace) and hvq (QEMU)."""
    if os.geteuid() != 0 or not _netns_works():
        pytest.skip("network namespaces and users need root")
    started, server = [], None
    try:
        hvp = NetnsHypervisor(3, name="hvp")
        started.append(hvp)
        illumos = os.path.join(hvp.root, "illumos")  # the fake host's zones and VNICs, written by hvp's user
        os.makedirs(illumos)
        state = os.path.join(illumos, "state.json")
        host = FakeIllumos()
        host.add_vnic("vnic0", "02:08:20:ab:cd:01")
        with open(state, "w") as f:
            json.dump(host.state, f)
        hvp.env["VMCTL_PROPOLIS_COMMAND_PREFIX"] = "/usr/bin/python3 %s illumos %s" % (FAKE, state)  # the host's own python
        hvp.start()
        hvp.own(illumos)
        server = hvp.in_netns(lambda: FakePropolis(port=12400, vnics={"vnic0"}).start())
        started.append(NetnsHypervisor(4, name="hvq").start())
        yield {"hvp": hvp, "hvq": started[1], "server": server, "state": state}
    finally:
        if server is not None:
            server.stop()
        for hv in started:
            hv.stop()


@pytest.fixture
def scratch_disk():
    """A qcow2 disk that the hypervisors' users can read (pytest's tmp is not), removed after the test."""
    shared = tempfile.mkdtemp(prefix="vmctl-pdisk-")
    os.chmod(shared, 0o755)
    disk = os.path.join(shared, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    os.chmod(disk, 0o644)
    yield disk
    shutil.rmtree(shared, ignore_errors=True)


def illumos_state(fleet):
    with open(fleet["state"]) as f:
        return json.load(f)


def set_failing(fleet, failing):
    """The fake illumos host's injected command failures (``{command: stderr}``)."""
    state = illumos_state(fleet)
    state["failing"] = failing
    with open(fleet["state"], "w") as f:
        json.dump(state, f)


def qemu_runs(hv, name):
    return hv.run(["pgrep", "-f", "-u", hv.user, "qemu-system-x86_64 -name %s" % name]).returncode == 0


def test_a_propolis_vm_and_a_qemu_vm_in_one_vmfile_up_listed_and_down(fleet, scratch_disk, tiny_vm, tmp_path):
    """up creates and starts pz on hvp through the delegated modules (its zone installed and booted by the fake
    illumos commands, the VM Running in the fake propolis-server inside hvp's namespace) and tq on hvq (QEMU); a
    second up leaves both alone; the vms inventory reading both hypervisors lists each VM with its hypervisor and
    backend; down -e destroy=true halts, uninstalls and deletes pz's zone and removes tq. Every request the backend
    sent carried api-version 5.0.0 and validated. down -e name=pz stops only pz (zone halted, its propolis VM
    destroyed) and up -e name=pz starts it again. What breaks it: a prefix that does not reach the module's
    session fails pz with zoneadm not found; a server outside hvp's namespace, with vmctl.propolis.unreachable."""
    hvp, hvq, server = fleet["hvp"], fleet["hvq"], fleet["server"]
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text(PROPOLIS_VM % {"name": "pz", "image": scratch_disk} + tiny_vm("tq", "hvq"))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory([hvp, hvq])))

    up = vmfile_playbook(hosts, "up", vmfile)
    assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-2000:]
    zones = illumos_state(fleet)["zones"]
    assert list(zones) == ["vmctl-pz"] and zones["vmctl-pz"]["state"] == "running", zones
    assert "set physical=vnic0" in zones["vmctl-pz"]["config"]
    assert server.state() == (3, "Running")
    spec = server.vm.spec
    assert (spec["board"]["cpus"], spec["board"]["memory_mb"]) == (2, 512)
    disk = spec["components"]["disk0-backend"]["component"]["path"]
    assert disk == os.path.join(hvp.data_dir, "vms", "pz", "disk0.raw") and os.path.exists(disk)
    assert qemu_runs(hvq, "tq") and not qemu_runs(hvp, "pz")
    assert not os.path.exists(os.path.join(hvq.data_dir, "vms", "pz"))

    again = vmfile_playbook(hosts, "up", vmfile)
    assert again.returncode == 0, again.stdout[-3000:]
    lines = recap(again.stdout, "pz", "tq")
    assert len(lines) == 2 and all(" changed=0 " in line for line in lines), again.stdout.split("PLAY RECAP")[-1]
    assert server.state() == (3, "Running"), "a running propolis VM is left alone"

    source = inventory_source(tmp_path / "fleet.vmctl.yml", [hvp.mapping(), hvq.mapping()])
    proc, data = listing(source)
    assert proc.returncode == 0, proc.stderr
    hostvars = data["_meta"]["hostvars"]
    seen = {name: (hostvars[name]["vmctl_hypervisor"], hostvars[name]["vmctl_backend"], hostvars[name]["vmctl_state"])
            for name in ("pz", "tq")}
    assert seen == {"pz": ("hvp", "propolis", "running"), "tq": ("hvq", "qemu", "running")}, seen
    assert hostvars["pz"]["vmctl_network"] == "vnic" and hostvars["pz"]["vmctl_mac"] == "02:08:20:ab:cd:01"
    assert data["vmctl_hypervisor_hvp"]["hosts"] == ["pz"] and data["vmctl_hypervisor_hvq"]["hosts"] == ["tq"]

    stop = vmfile_playbook(hosts, "down", vmfile, "-e", "name=pz")  # stopped: the zone halted, its VM destroyed
    assert stop.returncode == 0, stop.stdout[-5000:] + stop.stderr[-2000:]
    assert illumos_state(fleet)["zones"]["vmctl-pz"]["state"] == "installed"
    assert server.state()[1] == "Destroyed" and qemu_runs(hvq, "tq")
    start = vmfile_playbook(hosts, "up", vmfile, "-e", "name=pz")  # a new instance on the same server
    assert start.returncode == 0, start.stdout[-5000:] + start.stderr[-2000:]
    assert server.state() == (3, "Running") and illumos_state(fleet)["zones"]["vmctl-pz"]["state"] == "running"

    down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-5000:] + down.stderr[-2000:]
    state = illumos_state(fleet)
    assert state["zones"] == {}, state["zones"]
    verbs = [argv[3] for argv in state["log"] if argv[0] == "zoneadm" and argv[1] == "-z"]
    assert verbs == ["install", "boot", "halt", "boot", "halt", "uninstall"], verbs
    assert ["zonecfg", "-z", "vmctl-pz", "delete", "-F"] in state["log"]
    assert server.state()[1] == "Destroyed"
    assert not os.path.exists(os.path.join(hvp.data_dir, "vms", "pz"))
    assert not qemu_runs(hvq, "tq") and not os.path.exists(os.path.join(hvq.data_dir, "vms", "tq"))
    for record in server.requests:
        assert record["headers"].get("api-version") == "5.0.0" and record["errors"] == [], record
    assert server.contract_errors == []
    proc, data = listing(source)
    assert proc.returncode == 0 and not {"pz", "tq"} & set(data["_meta"]["hostvars"]), proc.stderr


def test_failing_zone_commands_fail_the_vm_naming_it_and_its_hypervisor(fleet, scratch_disk, tiny_vm, tmp_path):
    """Bad input: every zonecfg on hvp fails (as for a user without the zone privileges). up fails pb with the
    command's error, naming pb and hvp, and hints at the privileges it needs; tb on hvq still comes up. Once zonecfg
    works again, up converges and down -e destroy=true removes both (no zone left)."""
    hvp, hvq, server = fleet["hvp"], fleet["hvq"], fleet["server"]
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text(PROPOLIS_VM % {"name": "pb", "image": scratch_disk} + tiny_vm("tb", "hvq"))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory([hvp, hvq])))
    set_failing(fleet, {"zonecfg": "zonecfg: permission denied (injected)"})
    try:
        up = vmfile_playbook(hosts, "up", vmfile)
    finally:
        set_failing(fleet, {})
    assert up.returncode != 0
    summary = [line for line in up.stdout.splitlines() if '"msg": "pb: FAILED - zonecfg -z vmctl-pb <' in line]
    assert len(summary) == 1, up.stdout[-5000:]
    assert " characters> failed (exit 1): zonecfg: permission denied (injected) (hint: " in summary[0], summary[0]
    assert "vmctl needs root or the matching RBAC profiles" in summary[0], summary[0]
    assert summary[0].endswith(' (on hypervisor hvp)"'), summary[0]
    assert '"msg": "tb: ok"' in up.stdout, up.stdout[-4000:]
    assert qemu_runs(hvq, "tb")
    assert illumos_state(fleet)["zones"] == {}

    again = vmfile_playbook(hosts, "up", vmfile)
    assert again.returncode == 0, again.stdout[-5000:]
    assert illumos_state(fleet)["zones"]["vmctl-pb"]["state"] == "running"
    assert server.state()[1] == "Running"
    down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-5000:]
    assert illumos_state(fleet)["zones"] == {}
    assert not qemu_runs(hvq, "tb")
    assert server.contract_errors == []


def test_a_second_propolis_vm_on_one_hypervisor_is_refused_naming_the_first(fleet, scratch_disk, tmp_path):
    """Bad input: two propolis VMs on hvp, whose propolis-server address is host-wide (its sshd's environment). One
    comes up; the other fails, its summary naming the address, the VM that holds it and hvp, and no zone of its
    own is made. down -e destroy=true removes the one that came up and passes over the other."""
    hvp, server = fleet["hvp"], fleet["server"]
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text(PROPOLIS_VM % {"name": "pa", "image": scratch_disk} + PROPOLIS_VM % {"name": "pc", "image": scratch_disk})
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory([hvp])))
    up = vmfile_playbook(hosts, "up", vmfile)
    assert up.returncode != 0
    zones = illumos_state(fleet)["zones"]
    assert len(zones) == 1, zones
    first = list(zones)[0][len("vmctl-"):]
    second = {"pa": "pc", "pc": "pa"}[first]
    refused = '"msg": "%s: FAILED - VM %s: propolis-server address 127.0.0.1:12400 is already used by VM %s' % (second, second, first)
    lines = [line for line in up.stdout.splitlines() if refused in line]
    assert len(lines) == 1 and lines[0].endswith('(on hypervisor hvp)"'), up.stdout[-4000:]
    assert '"msg": "%s: ok"' % first in up.stdout
    assert server.state()[1] == "Running"
    down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-5000:]
    assert illumos_state(fleet)["zones"] == {}
    assert not os.path.exists(os.path.join(hvp.data_dir, "vms", first))
