"""``vmctl ssh``, ``ssh-config`` and ``cp`` for a VM on another hypervisor, with ``--inventory`` (a vms inventory file).

The hypervisor is a network namespace with its own sshd and user (support/hypervisors.py); the VM is a stand-in
(an sshd on the namespace's 127.0.0.1 only, with the record and files vmctl keeps for a VM), so no QEMU runs. The
real OpenSSH client goes through the hypervisor with ProxyJump, both host keys pinned. Bad inputs and what they get:
a forged hypervisor pin is refused by the real ssh (and by vmctl before it copies anything); an unknown VM is an
error naming the hypervisors searched; an unreachable hypervisor is an error naming it when the VM may be there.
"""

import os
import socket
import stat
import subprocess

import pytest
import yaml

from support.hypervisors import NetnsHypervisor
from test_hypervisors import _netns_works

pytestmark = [pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


@pytest.fixture(scope="module")
def hv():
    """One hypervisor with a stand-in VM ``web`` on its 127.0.0.1:2222."""
    if os.geteuid() != 0 or not _netns_works():
        pytest.skip("network namespaces and users need root")
    hypervisor = NetnsHypervisor(2)
    try:
        hypervisor.start()
        hypervisor.vm = hypervisor.fake_vm("web")
        yield hypervisor
    finally:
        hypervisor.stop()


def vmctl(*args):
    return subprocess.run([VMCTL] + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def inventory(path, *mappings, **options):
    path.write_text(yaml.safe_dump(dict({"plugin": "vmctl.core.vms", "hypervisors": list(mappings)}, **options)))
    return path


def ssh(config, name, *command):
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", name] + list(command),
                          capture_output=True, text=True, timeout=60, check=False)


def decoy_known_hosts(tmp_path, address):
    """A known_hosts in tmp that pins another key for ``address``."""
    decoy = tmp_path / "decoy_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(decoy)], check=True)
    key_type, blob = open(str(decoy) + ".pub").read().split()[:2]
    forged = tmp_path / "forged_known_hosts"
    forged.write_text("%s %s %s\n" % (address, key_type, blob))
    return forged


def test_ssh_config_reaches_the_vm_through_its_hypervisor_with_real_ssh(hv, tmp_path):
    """The printed config has hv2's stanza (its address, key, own known_hosts) and web's with ProxyJump hv2 to the
    forward on hv2's 127.0.0.1; the VM's key and pins are copied to a private cache. The controller cannot reach
    the forward itself; the real ssh runs a command on the VM through hv2."""
    source = inventory(tmp_path / "fleet.vmctl.yml", hv.mapping())
    proc = vmctl("ssh-config", "--inventory", source, "web")
    assert proc.returncode == 0, proc.stderr
    cache = os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "hypervisors", "hv2", "web")
    text = proc.stdout
    assert "Host hv2\n  HostName %s\n  Port 22\n  User %s\n" % (hv.address, hv.user) in text, text
    assert '  IdentityFile "%s"\n  UserKnownHostsFile "%s"\n' % (hv.user_key, hv.known_hosts) in text, text
    assert "Host web\n  HostName 127.0.0.1\n  Port 2222\n  User %s\n" % hv.user in text, text
    assert '  UserKnownHostsFile "%s/known_hosts"' % cache in text and text.rstrip().endswith("ProxyJump hv2"), text
    assert text.count("StrictHostKeyChecking yes") == 2
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    for name in ("id_vm", "known_hosts"):
        assert stat.S_IMODE(os.stat(os.path.join(cache, name)).st_mode) == 0o600
    with open(os.path.join(cache, "id_vm"), "rb") as copied, open(hv.vm["private_key"], "rb") as original:
        assert copied.read() == original.read()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 2222), timeout=3).close()
    config = tmp_path / "fleet.conf"
    config.write_text(text)
    logins = open(hv.vm["log"]).read().count("Accepted publickey")
    result = ssh(config, "web", "echo through-$(id -un)")
    assert (result.returncode, result.stdout) == (0, "through-%s\n" % hv.user), result.stderr
    assert open(hv.vm["log"]).read().count("Accepted publickey") == logins + 1
    # without names: every VM of the inventory's hypervisors, the same text
    assert vmctl("ssh-config", "--inventory", source).stdout == text


def test_a_forged_hypervisor_pin_is_refused_by_ssh_and_by_vmctl(hv, tmp_path):
    """Bad input: the config's known_hosts for hv2 pins another key: the real ssh refuses hv2 (and so the VM); vmctl
    ssh-config with that file in the mapping refuses hv2 (HOST KEY MISMATCH naming it) and prints nothing."""
    source = inventory(tmp_path / "fleet.vmctl.yml", hv.mapping())
    proc = vmctl("ssh-config", "--inventory", source, "web")
    assert proc.returncode == 0, proc.stderr
    forged = decoy_known_hosts(tmp_path, hv.address)
    config = tmp_path / "forged.conf"
    config.write_text(proc.stdout.replace('"%s"' % hv.known_hosts, '"%s"' % forged))
    result = ssh(config, "web", "echo reached")
    assert result.returncode == 255 and "reached" not in result.stdout
    assert "host key" in result.stderr.lower(), result.stderr
    before = hv.logins()
    bad = vmctl("ssh-config", "--inventory", inventory(tmp_path / "forged.vmctl.yml", hv.mapping(known_hosts_file=str(forged))),
                "web")
    assert bad.returncode != 0 and bad.stdout == ""
    assert "hypervisor hv2" in bad.stderr and "HOST KEY MISMATCH" in bad.stderr, bad.stderr
    assert hv.logins() == before, "no login to a hypervisor whose key is not the pinned one"


def test_vmctl_ssh_runs_a_command_through_the_hypervisor(hv, tmp_path):
    """vmctl ssh NAME --inventory: the readiness wait through hv2, then the system ssh with ProxyJump (its config in
    the VM's cache folder, 0600); the command's output and exit status are the VM's."""
    source = inventory(tmp_path / "fleet.vmctl.yml", hv.mapping())
    proc = vmctl("ssh", "web", "--inventory", source, "--wait", "10", "--", "echo", "on-$(id -un)")
    assert (proc.returncode, proc.stdout) == (0, "on-%s\n" % hv.user), proc.stderr
    config = os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "hypervisors", "hv2", "web", "ssh_config")
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600 and "ProxyJump hv2" in open(config).read()
    assert vmctl("ssh", "web", "--inventory", source, "--wait", "0", "--", "exit", "7").returncode == 7


def test_vmctl_cp_copies_both_ways_through_the_hypervisor(hv, tmp_path):
    """vmctl cp --inventory: up to the VM and back down, over the engine's session through hv2."""
    source = inventory(tmp_path / "fleet.vmctl.yml", hv.mapping())
    payload = tmp_path / "payload.txt"
    payload.write_text("through hv2\n")
    remote = "/tmp/vmctl-cli-hop-%d.txt" % os.getpid()  # in the namespace's view: the host's /tmp (no mount namespace)
    try:
        up = vmctl("cp", "--inventory", source, payload, "web:" + remote)
        assert up.returncode == 0, up.stderr
        down = vmctl("cp", "--inventory", source, "web:" + remote, tmp_path / "back.txt")
        assert down.returncode == 0, down.stderr
        assert (tmp_path / "back.txt").read_text() == "through hv2\n"
    finally:
        if os.path.exists(remote):
            os.unlink(remote)


def test_an_unknown_vm_names_the_hypervisors_searched_and_an_unreachable_one_is_named(hv, tmp_path):
    """Bad input: a VM in no store: exit 3 naming hv2. With hv1 unreachable (a mapping to a closed port on hv2's
    address): an unknown VM is an error naming hv1 (it may be there), while web, found on hv2, is still printed
    with a warning naming hv1."""
    source = inventory(tmp_path / "fleet.vmctl.yml", hv.mapping())
    proc = vmctl("ssh-config", "--inventory", source, "nosuch")
    assert proc.returncode == 3, proc.stderr
    assert "VM nosuch is in none of the stores of the hypervisors hv2" in proc.stderr, proc.stderr
    dead = dict(hv.mapping(), name="hv1", port=1)
    both = inventory(tmp_path / "both.vmctl.yml", dead, hv.mapping(), hypervisor_timeout=5)
    proc = vmctl("ssh", "nosuch", "--inventory", both, "--wait", "0")
    assert proc.returncode == 1 and "hypervisor hv1" in proc.stderr and "VM nosuch" in proc.stderr, proc.stderr
    listed = vmctl("ssh-config", "--inventory", both)
    assert listed.returncode == 0 and "Host web\n" in listed.stdout, listed.stderr
    assert "hypervisor hv1" in listed.stderr, listed.stderr
    strict = vmctl("ssh-config", "--inventory", inventory(tmp_path / "strict.vmctl.yml", dead, hv.mapping(), strict=True,
                                                          hypervisor_timeout=5))
    assert strict.returncode == 1 and strict.stdout == "" and "hypervisor hv1" in strict.stderr, strict.stderr


def test_an_inventory_vmctl_cannot_read_is_a_usage_error(tmp_path):
    """Bad input: not a vms inventory, a name of another inventory source, a mapping with an unknown key: exit 2,
    saying what is wrong (no hypervisor is needed: nothing is contacted)."""
    other = tmp_path / "hosts.yml"
    other.write_text("all:\n  hosts:\n    hv1: {}\n")
    named = inventory(tmp_path / "named.vmctl.yml", "hv1")
    odd = inventory(tmp_path / "odd.vmctl.yml", {"name": "hv1", "hots": "192.0.2.1"})
    for path, message in ((other, "is not a vms inventory"), (named, "hypervisor hv1 is a host of another inventory source"),
                          (odd, "knows only name, host"), (tmp_path / "missing.vmctl.yml", "cannot read inventory")):
        proc = vmctl("ssh-config", "--inventory", path)
        assert proc.returncode == 2 and message in proc.stderr, (path, proc.stderr)
