"""The vm and vm_state modules with ``backend: propolis`` through real ``ansible`` runs, against the
fake propolis-server; the illumos commands go to the fake host through VMCTL_PROPOLIS_COMMAND_PREFIX."""

import json
import os
import subprocess
import sys

import pytest
from support.ansible_run import module
from support.propolis_fake import FakeIllumos, FakePropolis

pytestmark = pytest.mark.slow

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "propolis_fake.py")


@pytest.fixture
def propolis_env(tmp_path):
    state = tmp_path / "illumos.json"
    host = FakeIllumos()
    host.add_vnic("vnic0", "02:08:20:ab:cd:01")
    state.write_text(json.dumps(host.state))
    with FakePropolis(vnics={"vnic0"}) as server:
        env = {"VMCTL_PROPOLIS_ADDRESS": server.address,
               "VMCTL_PROPOLIS_COMMAND_PREFIX": "%s %s illumos %s" % (sys.executable, FAKE, state)}
        yield server, env, state


def test_vm_and_vm_state_drive_propolis(propolis_env, tmp_path):
    server, env, state = propolis_env
    image = str(tmp_path / "image.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1G"], check=True)
    args = dict(name="pvm", image=image, backend="propolis", vcpus=2, memory=512,
                network={"type": "vnic", "name": "vnic0"}, cloud_init={"hostname": "pvm"})

    created = module("vm", args, env=env)
    assert created["changed"] and not created["failed"], created
    assert created["vm"]["backend"] == "propolis" and created["vm"]["propolis"]["address"] == server.address
    unchanged = module("vm", args, env=env)
    assert unchanged["changed"] is False, unchanged["actions"]

    started = module("vm_state", {"name": "pvm", "state": "running"}, env=env)
    assert started["changed"] and started["state"] == "running" and started["previous_state"] == "prepared", started
    assert server.state() == (3, "Running")
    assert module("vm_state", {"name": "pvm", "state": "running"}, env=env)["changed"] is False

    refused = module("vm_state", {"name": "pvm", "state": "suspended"}, env=env)
    assert refused["failed"] and refused["error"]["code"] == "vmctl.propolis.unsupported", refused

    stopped = module("vm_state", {"name": "pvm", "state": "stopped"}, env=env)
    assert stopped["changed"] and stopped["state"] == "stopped", stopped
    assert server.state()[1] == "Destroyed"

    again = module("vm_state", {"name": "pvm", "state": "running"}, env=env)  # a new ensure on the same server
    assert again["changed"] and again["state"] == "running", again
    assert server.state() == (3, "Running")

    assert module("vm", {"name": "pvm", "state": "absent"}, env=env)["changed"] is True
    log = json.loads(state.read_text())["log"]
    zone_verbs = [c[3] for c in log if c[0] == "zoneadm" and c[1] == "-z"]
    assert zone_verbs == ["install", "boot", "halt", "boot", "halt", "uninstall"]
    assert json.loads(state.read_text())["zones"] == {}
    for record in server.requests:
        assert record["headers"].get("api-version") == "5.0.0" and record["errors"] == [], record
    assert server.contract_errors == []
