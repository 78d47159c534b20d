"""Issue 5 end to end: one playbook creates, starts and uses a real Debian VM (command, shell, copy, fetch,
become over vmctl.core.vm_ssh), another stops and removes it. A second run of each is ``changed: false``
everywhere, and ``--check`` on an empty store touches nothing. One guest boot (a minute or more under TCG).
"""

import os
import sys

import pytest
import yaml
from support.guests import alive
from support.vm_ssh_helpers import playbook

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = [pytest.mark.slow, pytest.mark.guest]

NAME = "pbvm"
HOME = "/home/vm"


def present_play(image, payload, fetched):
    return [
        {"name": "Bring the VM up", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "create", "vmctl.core.vm": {
                "name": NAME, "image": image, "vcpus": 2, "memory": 1024, "vnc": False,
                "cloud_init": {"hostname": "pb-guest"}, "ssh": {"user": "vm"}}},
            {"name": "start", "register": "started", "vmctl.core.vm_state": {
                "name": NAME, "state": "running", "wait_timeout": 400}},
            # in check mode a VM that would only now be started cannot be used yet
            {"name": "add host", "changed_when": False, "when": "not (ansible_check_mode and started is changed)",
             "ansible.builtin.add_host": {"name": NAME, "ansible_connection": "vmctl.core.vm_ssh",
                                          "ansible_python_interpreter": "auto_silent"}},
        ]},
        # read-only commands: never a change, and run in check mode too (check_mode: false)
        {"name": "Use it", "hosts": NAME, "gather_facts": False, "tasks": [
            {"name": "hostname", "ansible.builtin.command": "hostname", "changed_when": False, "check_mode": False},
            {"name": "work dir", "ansible.builtin.command": {
                "cmd": "mkdir %s/work" % HOME, "creates": "%s/work" % HOME}},
            {"name": "stamp", "register": "stamp", "changed_when": "'made' in stamp.stdout_lines",
             "ansible.builtin.shell": "cd ~/work && if [ -e stamp ]; then echo kept; else "
                                      "echo \"$(id -un)@$(hostname)\" > stamp && echo made; fi; cat stamp"},
            {"name": "copy", "ansible.builtin.copy": {
                "src": str(payload), "dest": "%s/work/payload.txt" % HOME, "mode": "0644"}},
            {"name": "fetch", "ansible.builtin.fetch": {
                "src": "%s/work/payload.txt" % HOME, "dest": str(fetched), "flat": True}},
            {"name": "become copy", "become": True, "ansible.builtin.copy": {
                "content": "only root\n", "dest": "/root/vmctl-owned", "mode": "0600"}},
            {"name": "become id", "become": True, "changed_when": False, "check_mode": False,
             "ansible.builtin.command": "id -u"},
            {"name": "root file", "become": True, "changed_when": False, "check_mode": False,
             "ansible.builtin.command": "stat -c '%U %a %s' /root/vmctl-owned"},
        ]},
    ]


ABSENT = [{"name": "Take the VM down", "hosts": "localhost", "gather_facts": False, "tasks": [
    {"name": "stop", "vmctl.core.vm_state": {"name": NAME, "state": "stopped", "stop_timeout": 60}},
    {"name": "remove", "vmctl.core.vm": {"name": NAME, "state": "absent"}},
]}]


def results(tasks):
    """{task name: result} of the one host each task ran on."""
    flat = {}
    for name, hosts in tasks:
        assert len(hosts) == 1, (name, hosts)
        flat[name] = next(iter(hosts.values()))
    return flat


def changed(tasks):
    return sorted(name for name, result in results(tasks).items() if result.get("changed"))


def no_failures(tasks, proc):
    bad = {name: r for name, r in results(tasks).items() if r.get("failed") or r.get("unreachable")}
    assert not bad and proc.returncode == 0, (bad, proc.stdout[-3000:], proc.stderr[-3000:])


def qemu_pids_under(path):
    """PIDs of processes whose command line mentions ``path`` (the VM's work dir is under the data home)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if str(path).encode() in cmdline and alive(int(pid)):
            found.append(int(pid))
    return found


def disk_state(data_home):
    """Every file under the vmctl data directory with its size and mtime (empty when it does not exist)."""
    state = {}
    for root, _dirs, files in os.walk(str(data_home)):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            state[os.path.relpath(path, str(data_home))] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture
def books(test_images, tmp_path, control_dir):
    """(present.yml, absent.yml, inventory, payload, fetched path) with a private session-daemon directory."""
    payload = tmp_path / "payload.txt"
    payload.write_text("".join("line %05d of the payload copied to the guest\n" % i for i in range(1500)))
    fetched = tmp_path / "fetched" / "payload.txt"
    present = tmp_path / "present.yml"
    present.write_text(yaml.safe_dump(present_play(test_images["debian"]["path"], payload, fetched), sort_keys=False))
    absent = tmp_path / "absent.yml"
    absent.write_text(yaml.safe_dump(ABSENT, sort_keys=False))
    inventory = tmp_path / "hosts.ini"  # the venv's python runs the vmctl modules on the controller
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    return present, absent, inventory, payload, fetched


def test_playbook_creates_uses_and_removes_a_vm_idempotently(books, vmctl_data_home):
    present, absent, inventory, payload, fetched = books
    store = vmctl_data_home / "vms.json"

    # --check on an empty store: reports the create and the start, writes nothing, boots nothing
    tasks, proc = playbook(present, inventory, ["--check"], timeout=300)
    no_failures(tasks, proc)
    planned = results(tasks)
    assert changed(tasks) == ["create", "start"], planned
    assert planned["create"]["actions"] == ["create"] and planned["start"]["actions"] == ["start"]
    assert any("does not exist" in w for w in planned["start"].get("warnings", [])), planned["start"]
    assert planned["add host"].get("skipped") and "hostname" not in planned  # the guest play had no host
    assert disk_state(vmctl_data_home) == {} and not store.exists()
    assert not (vmctl_data_home / "vms" / NAME).exists() and not qemu_pids_under(vmctl_data_home)

    # the real run: one boot, every step does its work
    tasks, proc = playbook(present, inventory, timeout=900)
    no_failures(tasks, proc)
    first = results(tasks)
    assert changed(tasks) == ["become copy", "copy", "create", "fetch", "stamp", "start", "work dir"], first
    assert first["start"]["actions"] == ["start", "wait_for_ssh"] and first["start"]["state"] == "running"
    pid = VmManager().get(NAME).pid
    assert alive(pid) and pid in qemu_pids_under(vmctl_data_home)
    assert first["hostname"]["stdout"] == "pb-guest"
    assert first["stamp"]["stdout_lines"] == ["made", "vm@pb-guest"]
    assert first["become id"]["stdout"] == "0"
    assert first["root file"]["stdout"] == "root 600 10"
    assert fetched.read_bytes() == payload.read_bytes() and len(fetched.read_bytes()) > 60 * 1024

    # a second run changes nothing, and neither does --check now
    for extra in ([], ["--check"]):
        tasks, proc = playbook(present, inventory, extra, timeout=600)
        no_failures(tasks, proc)
        assert changed(tasks) == [], (extra, results(tasks))
        again = results(tasks)
        assert again["hostname"]["stdout"] == "pb-guest" and again["become id"]["stdout"] == "0"
        assert again["work dir"].get("skipped") or "skipped, since" in again["work dir"].get("stdout", "")
        assert again["root file"]["stdout"] == "root 600 10"
        if not extra:
            assert again["stamp"]["stdout_lines"] == ["kept", "vm@pb-guest"]
    assert VmManager().get(NAME).pid == pid and alive(pid)
    assert fetched.read_bytes() == payload.read_bytes()

    # down: stop and remove, then nothing left to do
    before = store.read_bytes(), sorted(disk_state(vmctl_data_home))  # the running guest writes its console log
    tasks, proc = playbook(absent, inventory, ["--check"], timeout=300)
    no_failures(tasks, proc)
    assert changed(tasks) == ["remove", "stop"] and alive(pid)
    assert (store.read_bytes(), sorted(disk_state(vmctl_data_home))) == before
    tasks, proc = playbook(absent, inventory, timeout=300)
    no_failures(tasks, proc)
    down = results(tasks)
    assert changed(tasks) == ["remove", "stop"], down
    assert down["stop"]["state"] == "stopped" and down["stop"]["vm"]["last_stop"] == "acpi"
    assert not alive(pid) and not qemu_pids_under(vmctl_data_home)
    assert not (vmctl_data_home / "vms" / NAME).exists() and not VmManager().list()
    tasks, proc = playbook(absent, inventory, timeout=300)
    no_failures(tasks, proc)
    assert changed(tasks) == [], results(tasks)
    assert results(tasks)["stop"]["state"] == "absent"
