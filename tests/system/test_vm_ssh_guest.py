"""vmctl.core.vms + vmctl.core.vm_ssh on the real Debian guest (cloud-init, sshd, sudo), through real
``ansible-inventory`` / ``ansible`` runs. One guest for the whole session: booting takes about a minute
under TCG. The first test finds it still booting: the connection plugin's wait is part of what it tests.
"""

import hashlib
import os
import shutil
import subprocess

import pytest
from support.ansible_run import _env
from support.guests import debian_spec
from support.sshd_server import fingerprint, keygen
from support.vm_ssh_helpers import adhoc, daemons

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = [pytest.mark.slow, pytest.mark.guest]

NAME = "sshguest"
WAIT = {"ANSIBLE_VMCTL_WAIT_TIMEOUT": "400"}


@pytest.fixture(scope="session")
def guest_home(test_images, tmp_path_factory):
    """The data directory of a Debian VM that is started (not waited for) and destroyed at the end."""
    home = tmp_path_factory.mktemp("guest-xdg")
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(home)
    try:
        manager = VmManager()
        manager.create(debian_spec(test_images, name=NAME, hostname="ssh-guest"))
        manager.start(NAME)
    finally:
        _restore("XDG_DATA_HOME", saved)
    yield home
    os.environ["XDG_DATA_HOME"] = str(home)
    try:
        VmManager().destroy(NAME)
    finally:
        _restore("XDG_DATA_HOME", saved)


def _restore(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture
def guest(guest_home, monkeypatch, tmp_path, control_dir):
    """(handle, inventory file, control dir) with this test's environment pointing at the guest's store."""
    monkeypatch.setenv("XDG_DATA_HOME", str(guest_home))
    inventory = tmp_path / "guest.vmctl.yml"
    inventory.write_text("plugin: vmctl.core.vms\n")
    return VmManager().get(NAME), inventory, control_dir


def test_inventory_graph_and_ping(guest):
    handle, inventory, control = guest
    graph = subprocess.run(["ansible-inventory", "-i", str(inventory), "--graph"], capture_output=True, text=True,
                           env=_env(), timeout=120, check=True).stdout
    for group in ("@vmctl_state_running:", "@vmctl_backend_qemu:", "@vmctl_network_user:"):
        assert group in graph and "|--%s" % NAME in graph.split(group, 1)[1].split("@", 1)[0], graph
    hosts, _proc = adhoc(inventory, "ansible.builtin.ping", env=WAIT)
    assert hosts[NAME].get("ping") == "pong", hosts[NAME]
    assert len(daemons(control)) == 1


def test_command_shell_copy_fetch_become(guest, tmp_path):
    handle, inventory, _control = guest
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "hostname", env=WAIT)
    assert hosts[NAME]["stdout"] == "ssh-guest"
    hosts, _proc = adhoc(inventory, "ansible.builtin.shell", "id -un | tr a-z A-Z; exit 4", env=WAIT)
    assert hosts[NAME]["stdout"] == "VM" and hosts[NAME]["rc"] == 4
    for pipelining in ("true", "false"):
        hosts, _proc = adhoc(inventory, "ansible.builtin.command", "id -u", env=WAIT,
                             extra=["--become", "-e", "ansible_pipelining=%s" % pipelining])
        assert hosts[NAME]["stdout"] == "0", hosts[NAME]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    hosts, _proc = adhoc(inventory, "ansible.builtin.copy", "src=%s dest=/opt/payload.bin owner=root mode=0600" % payload,
                         env=WAIT, extra=["--become"])
    assert hosts[NAME]["changed"], hosts[NAME]
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "sha256sum /opt/payload.bin", env=WAIT, extra=["--become"])
    assert hosts[NAME]["stdout"].split()[0] == digest
    hosts, _proc = adhoc(inventory, "ansible.builtin.fetch", "src=/opt/payload.bin dest=%s/ flat=true" % (tmp_path / "back"),
                         env=WAIT, extra=["--become"])
    assert hashlib.sha256((tmp_path / "back" / "payload.bin").read_bytes()).hexdigest() == digest


def test_tampered_known_hosts_fails_with_the_mismatch(guest, tmp_path):
    handle, inventory, _control = guest
    saved = tmp_path / "known_hosts.saved"
    shutil.copy(handle.known_hosts, saved)
    other = keygen(tmp_path / "other")
    with open(other + ".pub") as f:
        key = " ".join(f.read().split()[:2])
    try:
        with open(handle.known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s\n* %s\n" % (handle.ssh_host_port, key, key))
        hosts, _proc = adhoc(inventory, "ansible.builtin.command", "true", env=WAIT)
    finally:
        shutil.copy(saved, handle.known_hosts)
    result = hosts[NAME]
    assert result["unreachable"], result
    assert "VM %s" % NAME in result["msg"] and "HOST KEY MISMATCH" in result["msg"]
    assert fingerprint(other + ".pub") in result["msg"]
    with open(os.path.join(handle.work_dir, "ssh_host_ed25519_key.pub")) as f:
        real = f.read()
    real_pub = tmp_path / "real.pub"
    real_pub.write_text(real)
    assert fingerprint(real_pub) in result["msg"]
