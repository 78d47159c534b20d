"""Issue 14's private network on real Debian guests (TCG), brought up with `vmctl up` as a user would.

Two VMFiles, both naming a switch `lab`, come up at once (three guests boot together, once for the module):
VMFile one has `web` (192.168.77.11/24) and `db` (192.168.77.12/24); VMFile two has `other` (192.168.77.13/24,
the same subnet) on its own `lab`. db reaches web over lab by address (a TCP connect to web's sshd on
192.168.77.11 reads its banner); other, not on this lab, cannot, although its address is in the same subnet.
The private NICs get no route but their subnet's and the host gets no interface. list/status/inventory show the
NICs, and `vmctl down` stops both switches.
"""

import os
import subprocess

import pytest
from support.ansible_run import _env
from support.vm_ssh_helpers import new_control_dir, remove_control_dir

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import switch as switches
from ansible_collections.vmctl.core.plugins.module_utils import private_network
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.plugin_utils import inventory
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh

pytestmark = [pytest.mark.slow, pytest.mark.guest]

VMCTL = os.path.join(os.path.dirname(__file__), "..", "..", "bin", "vmctl")
SSH_TIMEOUT = "900"  # three guests boot at once under TCG on a loaded 2-core machine

VM = """\
vm "%(name)s" {
    image "%(image)s"
    memory 512
    cloud-init { hostname "%(name)s"; }
    ssh { user "vm"; }
    private-network "lab" address="%(address)s"
}
"""
# bash's /dev/tcp: a TCP connect to web's sshd over the private network, reading its banner
CONNECT = "timeout 20 bash -c 'exec 3<>/dev/tcp/192.168.77.11/22 && head -c 7 <&3'"


def host_links():
    return set(subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout.split("\n"))


@pytest.fixture(scope="module")
def lab(test_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("lan")
    image = test_images["debian"]["path"]
    one, two = root / "one", root / "two"
    for folder, vms in ((one, [("web", "192.168.77.11/24"), ("db", "192.168.77.12/24")]),
                        (two, [("other", "192.168.77.13/24")])):
        folder.mkdir()
        (folder / "VMFile.kdl").write_text("".join(VM % dict(name=n, image=image, address=a) for n, a in vms))
    home = str(root / "xdg-data")
    control = new_control_dir()
    env = _env({"XDG_DATA_HOME": home, "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_WAIT_TIMEOUT": SSH_TIMEOUT})
    links = host_links()
    ups = [subprocess.Popen([VMCTL, "up", "--timeout", SSH_TIMEOUT, "--stall-timeout", "600"], cwd=str(folder), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for folder in (one, two)]
    try:
        outputs = [proc.communicate(timeout=1800)[0] for proc in ups]
    finally:  # a timeout of the test (pytest-timeout) must not leave an `up` running that starts VMs after teardown
        for proc in ups:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    old_home = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = home
    try:
        yield {"env": env, "one": str(one), "two": str(two), "outputs": outputs, "rcs": [p.returncode for p in ups],
               "links": links, "manager": VmManager()}
    finally:
        manager = VmManager()
        for name in list(manager.list()):
            manager.destroy(name)
        remove_control_dir(control)
        if old_home is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = old_home


def guest(lab, name, command):
    """``(exit status, stdout + stderr)`` of ``command`` on VM ``name`` over the engine's pinned SSH session."""
    session = ssh.connect(lab["manager"].get(name))
    try:
        status, out, err, _signal = session.run(command)
        return status, (out + err).decode("utf-8", "replace")
    finally:
        session.close()


def test_vmctl_up_brings_both_vmfiles_up(lab):
    assert lab["rcs"] == [0, 0], "\n".join(lab["outputs"])


def test_db_reaches_web_over_lab_and_other_cannot(lab):
    status, out = guest(lab, "web", "ip -4 -o addr show")
    assert status == 0 and "192.168.77.11/24" in out, out
    status, out = guest(lab, "db", CONNECT)
    assert status == 0 and out.startswith("SSH-2.0"), out
    status, out = guest(lab, "other", "ip -4 -o addr show; " + CONNECT)
    assert "192.168.77.13/24" in out, out  # it has an address in the same subnet, on its own VMFile's `lab`
    assert status != 0 and "SSH-2.0" not in out, out


def test_traffic_stays_on_the_switch(lab):
    """No route but the subnet's over the private NIC; no host interface appeared; the switch has no tap."""
    status, out = guest(lab, "db", "ip -4 route show")
    assert status == 0, out
    lab_routes = [line for line in out.splitlines() if "192.168.77." in line]
    assert lab_routes and all(line.startswith("192.168.77.0/24 ") for line in lab_routes), out
    assert not [line for line in out.splitlines() if line.startswith("default") and "192.168.77." in line], out
    assert host_links() - lab["links"] == set()
    db = lab["manager"].get("db")
    lab_switch = switches.Switch(switches.data_dir_of(db.work_dir), private_network.nics_of(db)[0]["switch"])
    with open("/proc/%d/cmdline" % lab_switch.pid(), "rb") as f:
        assert b"-t" not in f.read().split(b"\0")


def test_list_status_and_inventory_show_the_nics(lab):
    out = subprocess.run([VMCTL, "list"], env=lab["env"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["user,lab"] * 3, out
    out = subprocess.run([VMCTL, "status", "db"], env=lab["env"], capture_output=True, text=True, check=True).stdout
    assert "lab 192.168.77.12/24 (MAC 52:56:" in out, out
    hostvars = {r["name"]: r["hostvars"] for r in inventory.vm_records(data_dir=os.path.join(lab["env"]["XDG_DATA_HOME"], "vmctl"))}
    assert hostvars["web"]["vmctl_private_addresses"] == {"lab": "192.168.77.11"}
    assert hostvars["web"]["vmctl_private_networks"][0]["switch"] == hostvars["db"]["vmctl_private_networks"][0]["switch"]
    assert hostvars["other"]["vmctl_private_networks"][0]["switch"] != hostvars["db"]["vmctl_private_networks"][0]["switch"]


def test_down_stops_the_switches(lab):
    handles = [lab["manager"].get(name) for name in ("web", "db", "other")]
    ids = {private_network.nics_of(h)[0]["switch"] for h in handles}
    data_dir = switches.data_dir_of(handles[0].work_dir)
    assert all(switches.Switch(data_dir, i).pid() for i in ids) and len(ids) == 2
    for folder in (lab["one"], lab["two"]):
        proc = subprocess.run([VMCTL, "down"], cwd=folder, env=lab["env"], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [switches.Switch(data_dir, i).pid() for i in ids] == [None, None]
