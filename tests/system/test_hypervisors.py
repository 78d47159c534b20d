"""VMs on other hosts: two hypervisors that are network namespaces, each with its own sshd, user, home and
data directory (support/hypervisors.py), and the tiny busybox guest (no SSH needed).

The ``vm`` and ``vm_state`` modules run on each hypervisor through Ansible's own ssh connection, with the
hypervisor's Debian python3 and no vmctl or Ansible installed there; QEMU really runs inside the namespace.
Then the ``vms`` inventory reads both stores (one SSH command each) and this host's. Bad inputs and what they
get: an unreachable hypervisor is a warning naming it while the other still lists (``strict``: an error); a
tampered hypervisor host key is refused; a forged answer (a record naming a path outside the hypervisor's
store) is checked here as any store is. A VM whose files the hypervisor's user cannot read is made from copies
staged there by up (once, by checksum), which its destroy removes.
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest
import yaml

from support.ansible_run import _env
from support.hypervisors import running
from test_inventory_vms import plain

pytestmark = [pytest.mark.slow]

HYPERVISOR_PYTHON = os.path.join(os.environ.get("VMCTL_HYPERVISOR_VENV", "/nonexistent"), "bin", "python")


def _netns_works():
    probe = subprocess.run(["ip", "netns", "add", "vmctl-probe-%d" % os.getpid()], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", "vmctl-probe-%d" % os.getpid()], capture_output=True, check=False)
    return probe.returncode == 0 and shutil.which("runuser") is not None


@pytest.fixture(scope="module")
def hypervisors():
    if os.geteuid() != 0 or not _netns_works():
        pytest.skip("network namespaces and users need root")
    with running(2) as started:
        yield started


def ansible_inventory(hvs):
    """The hypervisors as ordinary Ansible hosts (ssh connection, their host keys checked), whose Python has only
    the run-time packages of requirements-hypervisor.txt (no vmctl, no Ansible)."""
    hosts = {}
    for hv in hvs:
        hosts[hv.name] = {
            "ansible_host": hv.address, "ansible_user": hv.user, "ansible_ssh_private_key_file": hv.user_key,
            "ansible_python_interpreter": HYPERVISOR_PYTHON, "vmctl_known_hosts_file": hv.known_hosts,
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % hv.known_hosts}
    return {"all": {"children": {"hypervisors": {"hosts": hosts}}}}


def vmfile_playbook(hosts, name, vmfile, *extra, timeout=600, env=None):
    """``ansible-playbook -i hosts vmctl.core.<name> -e vmfile=...`` with the default callback."""
    return subprocess.run(["ansible-playbook", "-i", str(hosts), "vmctl.core.%s" % name, "-e", "vmfile=%s" % vmfile]
                          + list(extra), capture_output=True, text=True, timeout=timeout, check=False,
                          env=_env(dict({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}, **(env or {}))))


def recap(output, *hosts):
    return [line for line in output.split("PLAY RECAP")[-1].splitlines() if line.startswith(tuple(h + " " for h in hosts))]


@pytest.fixture(scope="module")
def placed(hypervisors, test_images, tmp_path_factory):
    """A tiny VM created and started on each hypervisor by the vm and vm_state modules run there."""
    base = tmp_path_factory.mktemp("placed")
    inventory = base / "hosts.yml"
    inventory.write_text(yaml.safe_dump(ansible_inventory(hypervisors)))
    tiny = test_images["tiny"]
    play = [{
        "hosts": "hypervisors", "gather_facts": False,
        "tasks": [
            {"name": "a scratch disk", "ansible.builtin.command": {"cmd": "qemu-img create -q -f qcow2 tiny.qcow2 16M",
                                                                   "creates": "tiny.qcow2"}},
            {"name": "the VM", "vmctl.core.vm": {
                "name": "tiny-{{ inventory_hostname }}", "image": "{{ ansible_env.HOME | default('~') }}/tiny.qcow2",
                "kernel": tiny["kernel"], "initrd": tiny["initrd"], "kernel_append": "console=ttyS0",
                "memory": 256, "cloud_init": False, "ssh": False, "vnc": False}},
            {"name": "running", "vmctl.core.vm_state": {"name": "tiny-{{ inventory_hostname }}", "state": "running"}},
        ]}]
    playbook = base / "place.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook)], capture_output=True, text=True,
                          env=_env(None), timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"inventory": inventory, "base": base, "output": proc.stdout}


@pytest.fixture
def tiny_vm(test_images):
    """``tiny_vm(name, hypervisor)``: a VMFile block of the tiny guest on a scratch disk that the hypervisors'
    users can read (pytest's tmp is not), placed on ``hypervisor``; the disk goes after the test."""
    shared = tempfile.mkdtemp(prefix="vmctl-hvdisk-")
    os.chmod(shared, 0o755)
    disk = os.path.join(shared, "tiny.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    os.chmod(disk, 0o644)
    tiny = test_images["tiny"]

    def block(name, hypervisor):
        return ('vm "%s" {\n  image "%s"\n  memory 256\n  hypervisor "%s"\n  kernel "%s" {\n    initrd "%s"\n'
                '    append "console=ttyS0"\n  }\n}\n') % (name, disk, hypervisor, tiny["kernel"], tiny["initrd"])
    yield block
    shutil.rmtree(shared, ignore_errors=True)


def inventory_source(path, hypervisors, **options):
    config = {"plugin": "vmctl.core.vms", "hypervisors": hypervisors}
    config.update(options)
    path.write_text(yaml.safe_dump(config))
    return path


def listing(source, extra=()):
    proc = subprocess.run(["ansible-inventory"] + list(extra) + ["-i", str(source), "--list"], capture_output=True,
                          text=True, env=_env(None), timeout=120, check=False)
    return proc, (plain(json.loads(proc.stdout)) if proc.returncode == 0 else None)


def test_vms_placed_on_two_hypervisors_are_listed_with_their_hypervisor(hypervisors, placed, tmp_path):
    """The vm module ran on each hypervisor (QEMU in its namespace, its store in its user's home); the inventory
    lists both VMs as running, each with its hypervisor, its group and how to reach it through that host."""
    hv1, hv2 = hypervisors
    for hv in hypervisors:
        store = os.path.join(hv.home, ".local", "share", "vmctl", "vms.json")
        assert os.path.exists(store), "the VM's record lives on its hypervisor"
        assert hv.run(["pgrep", "-f", "-u", hv.user, "qemu-system-x86_64 -name tiny-" + hv.name]).returncode == 0, "QEMU runs as the hypervisor's user"
    before = [hv.logins() for hv in hypervisors]
    source = inventory_source(tmp_path / "fleet.vmctl.yml", ["localhost", hv1.mapping(), hv2.mapping()])
    proc, data = listing(source)
    assert proc.returncode == 0, proc.stderr
    hostvars = data["_meta"]["hostvars"]
    assert [hv.logins() - b for hv, b in zip(hypervisors, before)] == [1, 1], "one SSH login per hypervisor"
    for hv in hypervisors:
        vm = hostvars["tiny-" + hv.name]
        assert vm["vmctl_hypervisor"] == hv.name
        assert vm["vmctl_state"] == "running", vm
        assert vm["ansible_vmctl_hypervisor_host"] == hv.address
        assert vm["ansible_vmctl_hypervisor_user"] == hv.user
        assert vm["vmctl_work_dir"] == os.path.join(hv.home, ".local", "share", "vmctl", "vms", "tiny-" + hv.name)
        assert sorted(data["vmctl_hypervisor_" + hv.name]["hosts"]) == ["tiny-" + hv.name]
    assert "tiny-hv1" not in data.get("vmctl_hypervisor_localhost", {}).get("hosts", [])


def test_an_unreachable_hypervisor_is_a_warning_naming_it_and_the_other_still_lists(hypervisors, placed, tmp_path):
    """hv1's sshd is stopped: without strict, a warning names hv1 and hv2's VM is listed; with strict, an error."""
    hv1, hv2 = hypervisors
    hv1.stop_sshd()
    try:
        source = inventory_source(tmp_path / "fleet.vmctl.yml", [hv1.mapping(), hv2.mapping()], hypervisor_timeout=5)
        proc, data = listing(source)
        assert proc.returncode == 0, proc.stderr
        assert "hypervisor hv1" in proc.stderr and hv1.address in proc.stderr, proc.stderr
        assert list(data["_meta"]["hostvars"]) == ["tiny-hv2"]
        strict = inventory_source(tmp_path / "strict.vmctl.yml", [hv1.mapping(), hv2.mapping()], strict=True,
                                  hypervisor_timeout=5)
        proc, data = listing(strict)
        # the whole source fails: ansible-inventory reports it and lists none of its hosts (hv2's included)
        assert "hypervisor hv1" in proc.stderr, proc.stderr
        assert data is None or data["_meta"]["hostvars"] == {}, data
    finally:
        hv1.start_sshd()


def test_a_tampered_hypervisor_host_key_is_refused(hypervisors, placed, tmp_path):
    """The known_hosts file pins another key for hv2's address: the login is refused before any command runs."""
    hv2 = hypervisors[1]
    forged = tmp_path / "known_hosts"
    decoy = tmp_path / "decoy_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(decoy)], check=True)
    key_type, blob = open(str(decoy) + ".pub").read().split()[:2]
    forged.write_text("%s %s %s\n" % (hv2.address, key_type, blob))
    before = hv2.logins()
    source = inventory_source(tmp_path / "forged.vmctl.yml", [hv2.mapping(known_hosts_file=str(forged))])
    proc, data = listing(source)
    assert proc.returncode == 0, proc.stderr
    assert "HOST KEY MISMATCH" in proc.stderr and "hv2" in proc.stderr, proc.stderr
    assert data["_meta"]["hostvars"] == {}
    assert hv2.logins() == before, "no login with a key that is not pinned"


def test_a_forged_answer_is_checked_like_a_store(hypervisors, placed, tmp_path):
    """hv2's python is a script that prints a view whose record names /etc as its work dir and a bad port:
    the work dir is derived from the name under the hypervisor's store, the bad record is left out with a warning."""
    hv2 = hypervisors[1]
    fake = os.path.join(hv2.home, "fake-python")
    good = {"id": "x", "name": "good", "backend": "qemu", "state": "running", "work_dir": "/etc", "ssh_host_port": 2222}
    bad = dict(good, name="evil", ssh_host_port="abc")
    store = os.path.join(hv2.home, "data", "vms.json")
    answer = {"vms": [{"name": r["name"], "record": r, "state": "running", "state_error": None, "host": "127.0.0.1",
                       "port": 2222} for r in (good, bad)], "bad": {}, "store": store}
    with open(fake, "w") as f:
        f.write("#!/bin/sh\ncat >/dev/null\necho '%s'\n" % json.dumps(answer))
    os.chmod(fake, 0o755)
    source = inventory_source(tmp_path / "fake.vmctl.yml", [hv2.mapping(python=fake)])
    proc, data = listing(source)
    assert proc.returncode == 0, proc.stderr
    hostvars = data["_meta"]["hostvars"]
    assert list(hostvars) == ["good"]
    assert hostvars["good"]["vmctl_work_dir"] == os.path.join(hv2.home, "data", "vms", "good")
    assert "evil" in proc.stderr and "ssh_host_port" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def remote_vm(hypervisors):
    """A stand-in VM (an sshd) on hv2's 127.0.0.1:2222, its key and pins kept on hv2 as vmctl keeps a VM's."""
    return hypervisors[1].fake_vm("web")


def jump_target(hv, vm, **jump_changes):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
    jump = dict(hv.jump(), **jump_changes)
    return SshTarget("web", vm["host"], vm["port"], vm["user"], vm["private_key"], vm["known_hosts"], jump=jump)


def test_a_vm_is_reached_through_its_hypervisor_with_both_host_keys_checked(hypervisors, remote_vm, tmp_path):
    """The VM's forward is on hv2's 127.0.0.1 only: the controller cannot connect to it, directly or on hv2's address;
    through hv2 (a direct-tcpip channel) a command runs, with the VM's key and pins read on hv2. A tampered pin for
    the VM on hv2 is refused naming the VM; a tampered pin for hv2 is refused naming hv2."""
    import socket
    from ansible_collections.vmctl.core.plugins.module_utils.errors import HostKeyMismatch
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import SshSession
    hv2 = hypervisors[1]
    for address in (("127.0.0.1", remote_vm["port"]), (hv2.address, remote_vm["port"])):
        with pytest.raises(OSError):
            socket.create_connection(address, timeout=3).close()
    target = jump_target(hv2, remote_vm)
    session = SshSession.attempt(target, SshSession.credentials(target), 10)
    try:
        status, out, _err, _signal = session.run("cat /proc/net/tcp >/dev/null && echo through-$(id -un)", timeout=30)
    finally:
        session.close()
    assert (status, out.decode().strip()) == (0, "through-" + hv2.user)

    forged = tmp_path / "forged_known_hosts"
    decoy = tmp_path / "decoy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(decoy)], check=True)
    key_type, blob = open(str(decoy) + ".pub").read().split()[:2]
    forged.write_text("%s %s %s\n" % (hv2.address, key_type, blob))
    with pytest.raises(HostKeyMismatch, match="hypervisor hv2"):
        bad = jump_target(hv2, remote_vm, known_hosts_file=str(forged))
        SshSession.attempt(bad, SshSession.credentials(bad), 10)

    on_hv = os.path.join(hv2.data_dir, "vms", "web", "forged_known_hosts")  # a decoy pin file on hv2, for the VM
    with open(on_hv, "w") as f:
        f.write("[127.0.0.1]:%d %s %s\n" % (remote_vm["port"], key_type, blob))
    os.chmod(on_hv, 0o644)
    bad = jump_target(hv2, remote_vm)
    bad.known_hosts = on_hv
    with pytest.raises(HostKeyMismatch, match="VM web: HOST KEY MISMATCH"):
        SshSession.attempt(bad, SshSession.credentials(bad), 10)


def test_ansible_runs_copies_and_fetches_on_a_vm_through_its_hypervisor(hypervisors, placed, remote_vm, tmp_path):
    """The inventory lists hv2's VM with its hypervisor settings; vm_ssh reaches it through hv2: a command, a copy
    and a fetch with the real ansible-playbook (the VM's own sshd logs the logins, hv2's sshd the hops)."""
    hv1, hv2 = hypervisors
    source = inventory_source(tmp_path / "fleet.vmctl.yml", [hv1.mapping(), hv2.mapping()])
    payload = tmp_path / "payload.txt"
    payload.write_text("through the hypervisor\n")
    play = [{"hosts": "web", "gather_facts": False, "tasks": [
        {"name": "who", "ansible.builtin.command": "id -un", "register": "who", "changed_when": False},
        {"name": "copy", "ansible.builtin.copy": {"src": str(payload), "dest": "/tmp/vmctl-hop-%d.txt" % os.getpid()}},
        {"name": "fetch", "ansible.builtin.fetch": {"src": "/tmp/vmctl-hop-%d.txt" % os.getpid(),
                                                    "dest": str(tmp_path / "back.txt"), "flat": True}},
        {"name": "show", "ansible.builtin.debug": {"msg": "USER={{ who.stdout }}"}},
    ]}]
    playbook = tmp_path / "hop.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    vm_logins = open(remote_vm["log"]).read().count("Accepted publickey")
    proc = subprocess.run(["ansible-playbook", "-i", str(source), str(playbook)], capture_output=True, text=True,
                          env=_env({"ANSIBLE_VMCTL_CONTROL_PATH_DIR": str(tmp_path / "cp")}), timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "USER=%s" % hv2.user in proc.stdout
    assert (tmp_path / "back.txt").read_text() == "through the hypervisor\n"
    assert open(remote_vm["log"]).read().count("Accepted publickey") > vm_logins


def test_one_vmfile_places_vms_on_two_hypervisors_up_and_down(hypervisors, placed, tiny_vm, tmp_path):
    """hypervisor "hv1"/"hv2" in one VMFile: up creates and starts each VM on its hypervisor (the image, vm and
    vm_state tasks delegated there over Ansible's ssh connection); a second up leaves both alone; the inventory
    lists them with their hypervisors; down -e destroy=true removes them from both. A VM placed on a hypervisor the
    inventory does not know is refused with a clear error, before anything is created."""
    hv1, hv2 = hypervisors
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text(tiny_vm("t1", "hv1") + tiny_vm("t2", "hv2"))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory(hypervisors)))

    def playbook(name, *extra):
        return vmfile_playbook(hosts, name, vmfile, *extra)

    up = playbook("up")
    assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-2000:]
    for name, hv in (("t1", hv1), ("t2", hv2)):
        assert hv.run(["pgrep", "-f", "-u", hv.user, "qemu-system-x86_64 -name %s" % name]).returncode == 0, name
    again = playbook("up")
    assert again.returncode == 0, again.stdout[-3000:]
    lines = recap(again.stdout, "t1", "t2")
    assert len(lines) == 2 and all(" changed=0 " in line for line in lines), again.stdout.split("PLAY RECAP")[-1]
    source = inventory_source(tmp_path / "fleet.vmctl.yml", [hv1.mapping(), hv2.mapping()], states=["running"])
    proc, data = listing(source)
    assert proc.returncode == 0, proc.stderr
    assert data["_meta"]["hostvars"]["t1"]["vmctl_hypervisor"] == "hv1"
    assert data["_meta"]["hostvars"]["t2"]["vmctl_hypervisor"] == "hv2"

    down = playbook("down", "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-5000:] + down.stderr[-2000:]
    for name, hv in (("t1", hv1), ("t2", hv2)):
        assert hv.run(["pgrep", "-f", "-u", hv.user, "qemu-system-x86_64 -name %s" % name]).returncode != 0, name
        assert not os.path.exists(os.path.join(hv.data_dir, "vms", name))
    proc, data = listing(source)
    assert not {"t1", "t2"} & set(data["_meta"]["hostvars"])

    vmfile.write_text(tiny_vm("t3", "hv1") + tiny_vm("t3b", "hv9"))
    refused = playbook("up")
    assert refused.returncode != 0
    assert "t3b: it is placed on hypervisor hv9, which is not in the inventory" in refused.stdout, refused.stdout[-3000:]
    assert not os.path.exists(os.path.join(hv1.data_dir, "vms", "t3"))


def task_lines(output, task):
    """The result lines of the task named ``task`` in a default-callback run (up to the next TASK or PLAY)."""
    part = output.split("TASK [%s]" % task, 1)[1] if "TASK [%s]" % task in output else ""
    return [line for line in part.split("\nTASK [")[0].split("\nPLAY")[0].splitlines()
            if line.startswith(("ok:", "changed:", "skipping:", "failed:", "fatal:"))]


def test_a_vms_files_hv2_cannot_read_are_staged_there_once_and_removed_with_it(hypervisors, test_images, tmp_path):
    """The tiny guest on hv2, with its disk image, kernel and initrd in a folder of root's (0700) that hv2's user cannot
    read (namespaces share the filesystem: without the copy, QEMU on hv2 could not open them). up --check copies and
    makes nothing and says so; up copies the three files into hv2's staged/<vm>/ (folders 0700, files 0600, hv2's user's)
    and QEMU boots the copies; after a stop, up copies nothing (each file ok, by checksum) though the image changed on
    the controller (an existing VM's base image is never replaced under its disk); down -e destroy=true removes the
    staging folder with the VM."""
    hv2 = hypervisors[1]
    secret = tmp_path / "secret"  # root's, 0700: hv2's user cannot even look inside
    secret.mkdir(mode=0o700)
    tiny = test_images["tiny"]
    kernel = shutil.copy(tiny["kernel"], secret / "vmlinuz")
    shutil.copy(tiny["initrd"], secret / "initrd.gz")
    disk = secret / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    assert hv2.run(["head", "-c1", kernel]).returncode != 0  # the hypervisor's user cannot read the VMFile's files
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text('vm "st2" {\n  image "secret/tiny.qcow2"\n  memory 256\n  hypervisor "hv2"\n'
                      '  kernel "secret/vmlinuz" { initrd "secret/initrd.gz"; append "console=ttyS0"; }\n}\n')
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory(hypervisors)))
    staged = os.path.join(hv2.data_dir, "staged", "st2")
    copies = {"image": os.path.join(staged, "image", "tiny.qcow2"), "kernel": os.path.join(staged, "kernel", "vmlinuz"),
              "initrd": os.path.join(staged, "initrd", "initrd.gz")}
    stage_task = "vmctl.core.vm_up : Stage the files of st2"
    try:
        check = vmfile_playbook(hosts, "up", vmfile, "--check")
        assert check.returncode == 0, check.stdout[-5000:] + check.stderr[-2000:]
        assert [line.split()[0] for line in task_lines(check.stdout, stage_task)] == ["changed:"] * 3
        assert "st2: its files would be staged on hv2 first" in check.stdout, check.stdout[-4000:]
        assert not os.path.exists(staged) and not os.path.exists(os.path.join(hv2.data_dir, "vms", "st2"))

        up = vmfile_playbook(hosts, "up", vmfile)
        assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-2000:]
        assert [line.split()[0] for line in task_lines(up.stdout, stage_task)] == ["changed:"] * 3
        uid = pwd.getpwnam(hv2.user).pw_uid
        for node, path in copies.items():
            for folder in (os.path.dirname(path), staged):
                assert (os.stat(folder).st_mode & 0o777, os.stat(folder).st_uid) == (0o700, uid), folder
            assert (os.stat(path).st_mode & 0o777, os.stat(path).st_uid) == (0o600, uid), path
        with open(copies["kernel"], "rb") as a, open(kernel, "rb") as b:
            assert a.read() == b.read()
        qemu = hv2.run(["pgrep", "-a", "-f", "-u", hv2.user, "qemu-system-x86_64 -name st2"])
        assert qemu.returncode == 0 and "-kernel %s" % copies["kernel"] in qemu.stdout, qemu.stdout
        assert str(secret) not in qemu.stdout
        image_before = open(copies["image"], "rb").read()

        stop = vmfile_playbook(hosts, "down", vmfile)
        assert stop.returncode == 0, stop.stdout[-4000:]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"], check=True)  # changed here
        again = vmfile_playbook(hosts, "up", vmfile)
        assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-2000:]
        assert [line.split()[0] for line in task_lines(again.stdout, stage_task)] == ["ok:"] * 3
        assert open(copies["image"], "rb").read() == image_before  # the VM's disk is an overlay on it
        assert hv2.run(["pgrep", "-f", "-u", hv2.user, "qemu-system-x86_64 -name st2"]).returncode == 0
    finally:
        down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    assert not os.path.exists(staged) and not os.path.exists(os.path.join(hv2.data_dir, "vms", "st2"))
    assert os.path.isdir(os.path.join(hv2.data_dir, "staged"))  # only the VM's own folder goes
    assert hv2.run(["pgrep", "-f", "-u", hv2.user, "qemu-system-x86_64 -name st2"]).returncode != 0


def test_with_hv1_unreachable_its_vm_fails_naming_it_and_hv2s_comes_up(hypervisors, tiny_vm, tmp_path):
    """Bad input: hv1's sshd is down. up fails u1 with an error naming hv1 (not a bare "unreachable" that drops the
    VM from the play), and u2 on hv2 still comes up; once hv1 answers again, up converges and down removes both."""
    hv1, hv2 = hypervisors
    vmfile = tmp_path / "VMFile.kdl"
    vmfile.write_text(tiny_vm("u1", "hv1") + tiny_vm("u2", "hv2"))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory(hypervisors)))
    hv1.stop_sshd()
    try:  # its own ssh ControlPath folder: no master connection left by an earlier test reaches hv1
        up = vmfile_playbook(hosts, "up", vmfile, env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")})
    finally:
        hv1.start_sshd()
    assert up.returncode != 0
    assert "u1: FAILED - u1: its hypervisor hv1 is unreachable" in up.stdout, up.stdout[-4000:]
    assert '"msg": "u2: ok"' in up.stdout, up.stdout[-4000:]
    assert hv2.run(["pgrep", "-f", "-u", hv2.user, "qemu-system-x86_64 -name u2"]).returncode == 0
    again = vmfile_playbook(hosts, "up", vmfile)
    assert again.returncode == 0, again.stdout[-4000:]
    assert hv1.run(["pgrep", "-f", "-u", hv1.user, "qemu-system-x86_64 -name u1"]).returncode == 0
    down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-4000:]
    for name, hv in (("u1", hv1), ("u2", hv2)):
        assert not os.path.exists(os.path.join(hv.data_dir, "vms", name))


DEBIAN_ON_HV2 = """vm "deb2" {
    image "%(image)s"
    memory 768
    vcpus 1
    hypervisor "hv2"
    cloud-init { }
    ssh { user "u"; }
    provision "shell" { inline "echo provisioned-on-$(hostname) as $(id -un) | tee /tmp/provisioned"; }
    provision "file" { source "payload.txt"; destination "/tmp/payload.txt"; }
}
"""


@pytest.mark.guest
def test_a_debian_vm_on_hv2_is_provisioned_copied_to_and_fetched_from_through_hv2(hypervisors, test_images, tmp_path):
    """The real Debian guest, placed on hv2 by its VMFile: up creates it there (QEMU runs in hv2's namespace as
    hv2's user), waits for SSH and cloud-init through hv2, and runs a shell and a file provision step through hv2;
    the plan's progress is in hv2's store and the log on this host. A second up leaves it alone. Then the vms
    inventory lists it and a playbook runs a command, a copy, a fetch and a become task on it, without and with
    pipelining; down -e destroy=true removes it."""
    hv1, hv2 = hypervisors
    project = tmp_path / "project"
    project.mkdir()
    (project / "payload.txt").write_text("from the controller\n")
    vmfile = project / "VMFile.kdl"
    vmfile.write_text(DEBIAN_ON_HV2 % {"image": test_images["debian"]["path"]})
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(ansible_inventory(hypervisors)))
    try:
        up = vmfile_playbook(hosts, "up", vmfile, timeout=1200)
        assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-2000:]
        assert "[deb2] provisioned-on-deb2 as u" in up.stdout, up.stdout[-4000:]  # streamed as it ran
        assert hv2.run(["pgrep", "-f", "-u", hv2.user, "qemu-system-x86_64 -name deb2"]).returncode == 0
        assert not os.path.exists(os.path.join(hv1.data_dir, "vms", "deb2"))
        from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
        provision = VmStore(os.path.join(hv2.data_dir, "vms.json")).find("deb2").provision
        assert provision and provision["completed"] is True, provision
        log = os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "hypervisors", "hv2", "deb2", "provision.log")
        assert "provisioned-on-deb2 as u" in open(log).read()

        again = vmfile_playbook(hosts, "up", vmfile)
        assert again.returncode == 0, again.stdout[-4000:]
        lines = recap(again.stdout, "deb2")
        assert len(lines) == 1 and " changed=0 " in lines[0], again.stdout.split("PLAY RECAP")[-1]

        source = inventory_source(tmp_path / "fleet.vmctl.yml", [hv1.mapping(python=HYPERVISOR_PYTHON),
                                                                 hv2.mapping(python=HYPERVISOR_PYTHON)])
        play = [{"hosts": "deb2", "gather_facts": False, "tasks": [
            {"name": "who", "ansible.builtin.command": "id -un", "register": "who", "changed_when": False},
            {"name": "provisioned", "ansible.builtin.command": "cat /tmp/provisioned /tmp/payload.txt",
             "register": "seen", "changed_when": False},
            {"name": "copy", "ansible.builtin.copy": {"content": "copied through hv2\n", "dest": "/tmp/copied.txt"}},
            {"name": "fetch", "ansible.builtin.fetch": {"src": "/tmp/copied.txt", "dest": str(tmp_path / "back.txt"),
                                                        "flat": True}},
            {"name": "root", "ansible.builtin.command": "id -un", "become": True, "register": "root",
             "changed_when": False},
            {"name": "show", "ansible.builtin.debug": {
                "msg": "USER={{ who.stdout }} ROOT={{ root.stdout }} SEEN={{ seen.stdout_lines }}"}},
        ]}]
        playbook = tmp_path / "on-deb2.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        for pipelining in ("False", "True"):  # modules as files, then on stdin; become both ways
            (tmp_path / "back.txt").unlink(missing_ok=True)
            proc = subprocess.run(["ansible-playbook", "-i", str(source), str(playbook)], capture_output=True, text=True,
                                  env=_env({"ANSIBLE_PIPELINING": pipelining}), timeout=300, check=False)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
            assert "USER=u ROOT=root SEEN=['provisioned-on-deb2 as u', 'from the controller']" in proc.stdout, \
                proc.stdout[-3000:]
            assert (tmp_path / "back.txt").read_text() == "copied through hv2\n"
    finally:
        down = vmfile_playbook(hosts, "down", vmfile, "-e", "destroy=true")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
    assert hv2.run(["pgrep", "-f", "-u", hv2.user, "qemu-system-x86_64 -name deb2"]).returncode != 0
    assert not os.path.exists(os.path.join(hv2.data_dir, "vms", "deb2"))
