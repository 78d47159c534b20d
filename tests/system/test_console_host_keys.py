"""A VM built from the user's own user-data (its own user and key, no key vmctl generated) on a real
Debian guest: ``ansible-playbook vmctl.core.up`` provisions it and ``vmctl ssh`` reaches it, with the
host key read from cloud-init's keys block on the serial console. A tampered pin is refused; after a
restart (cloud-init prints no keys again) the first boot's block is not trusted, and the opt-in
``accept-new`` pins the first key seen. One guest for the whole module."""

import os
import subprocess

import pytest
from support.guests import wait_for_console
from test_playbooks import Project

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys, keys
from ansible_collections.vmctl.core.plugins.module_utils.errors import HostKeyMismatch, SshWaitTimeout

pytestmark = [pytest.mark.slow, pytest.mark.guest]

VMFILE = """\
vm "ud" {
    image "%(image)s"
    vcpus 1
    memory 768
    cloud-init {
        user-data "user-data.yaml"
    }
    ssh {
        user "alice"
        private-key "alice_key"
    }
    provision "shell" {
        inline "echo provisioned-by-$(whoami) | sudo tee /var/tmp/marker"
    }
}
"""


@pytest.fixture(scope="module")
def project(test_images, tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("ud-project"), VMFILE, test_images["debian"]["path"])
    pair = keys.generate_ed25519("alice")
    keys.write_keypair(pair, os.path.join(project.root, "alice_key"))
    with open(os.path.join(project.root, "user-data.yaml"), "w") as f:
        f.write("#cloud-config\nusers:\n  - name: alice\n    shell: /bin/bash\n    sudo: ALL=(ALL) NOPASSWD:ALL\n"
                "    ssh_authorized_keys:\n      - %s\n" % pair.public_openssh)
    project.env["XDG_DATA_HOME"] = project.home
    yield project
    project.cleanup()


def vmctl(project, *argv, timeout=600):
    return subprocess.run(["vmctl"] + list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, **project.env))


def guest_host_key(project):
    """The guest's ed25519 host key, as the guest itself says (over SSH, already pinned)."""
    out = vmctl(project, "ssh", "ud", "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.split()[:2])


def test_up_provisions_a_user_data_vm_with_the_host_key_from_the_console(project):
    """No key was generated: the pin is the keys block the guest printed on its console."""
    rc, tasks, out = project.run("up")
    assert rc == 0, out
    handle = project.manager().get("ud")
    assert not os.path.exists(os.path.join(handle.work_dir, "ssh_host_ed25519_key"))  # nothing of ours in the guest
    with open(handle.console_log, "rb") as f:
        assert host_keys.BEGIN.encode() in f.read()  # the test image's cloud-init prints the block
    pinned = host_keys.pinned_keys(handle.known_hosts)
    assert guest_host_key(project) in pinned
    status = vmctl(project, "ssh", "ud", "--", "cat", "/var/tmp/marker")
    assert (status.returncode, status.stdout.strip()) == (0, "provisioned-by-alice"), status.stderr
    # `vmctl ssh --user U --key K` with the user's own key
    other = vmctl(project, "ssh", "ud", "--user", "alice", "--key", os.path.join(project.root, "alice_key"), "--", "id", "-un")
    assert (other.returncode, other.stdout.strip()) == (0, "alice"), other.stderr


def test_a_tampered_pin_is_refused_and_not_repaired_from_the_console(project):
    """known_hosts rewritten with another key: vmctl ssh and the engine's login refuse the guest's real key."""
    handle = project.manager().get("ud")
    with open(handle.known_hosts) as f:
        saved = f.read()
    fake = keys.generate_ed25519("fake").public_openssh
    with open(handle.known_hosts, "w") as f:
        f.write(host_keys.known_hosts_text(handle.ssh_host_port, [fake]))
    try:
        out = vmctl(project, "ssh", "ud", "--", "true")
        assert out.returncode != 0
        assert "HOST KEY MISMATCH" in out.stderr, out.stderr
        with pytest.raises(HostKeyMismatch):
            ssh.connect(handle).close()
        assert set(host_keys.pinned_keys(handle.known_hosts)) == {" ".join(fake.split()[:2])}  # the console did not win
    finally:
        with open(handle.known_hosts, "w") as f:
            f.write(saved)


def test_after_a_restart_the_old_block_is_not_trusted_and_accept_new_pins_the_first_key(project):
    """cloud-init prints the keys on the first boot only. With the pin removed after a restart (the start
    itself harvests the previous boot's window), the console has only the first boot's block, before the
    offset of the latest start: it is not read, and the login waits and then names the opt-in. With accept-new the first key seen is pinned (the real one),
    and a changed key after it is refused."""
    real = guest_host_key(project)
    manager = project.manager()
    manager.stop("ud", timeout=120)
    handle = manager.start("ud")[0]
    assert handle.console_offset > 0
    os.unlink(handle.known_hosts)
    wait_for_console(handle, "login:", timeout=600, start_offset=handle.console_offset)  # booted again
    with pytest.raises(SshWaitTimeout) as err:
        readiness.wait_until_ready(handle, deadline=30, stall=30)
    assert "has not printed" in err.value.message and "accept-new" in err.value.hint, err.value
    assert host_keys.pinned_keys(handle.known_hosts) == []
    out = vmctl(project, "ssh", "ud", "--wait", "0", "--", "true")
    assert out.returncode != 0 and "accept-new" in out.stderr, out.stderr

    with manager.store.transaction() as vms:  # as if created with host-key-checking "accept-new"
        vms["ud"] = vms["ud"].replace(host_key_checking="accept-new")
    out = vmctl(project, "ssh", "ud", "--", "id", "-un")
    assert (out.returncode, out.stdout.strip()) == (0, "alice"), out.stderr
    assert set(host_keys.pinned_keys(handle.known_hosts)) == {real}
    fake = keys.generate_ed25519("fake").public_openssh
    with open(handle.known_hosts, "w") as f:
        f.write(host_keys.known_hosts_text(handle.ssh_host_port, [fake]))
    with pytest.raises(HostKeyMismatch):
        ssh.connect(manager.get("ud")).close()
