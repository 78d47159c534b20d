"""Issue 14's done-when on real Debian guests (TCG), brought up with `vmctl up` as a user would: one VMFile with
`web` and `db` on a switch `lab`, and a second VMFile whose `other` names a `lab` of its own (three guests boot
together, once for the module).

- web forwards a host port to `python3 -m http.server` in the guest (a provision step), which serves a shared host
  folder: the host fetches a file through the forward, a file the guest writes in the share appears on the host
  owned by the host user, a read-only share stays read-only, and the forward listens on 127.0.0.1 only. The vm
  module then changes the forwards of the running VM (idempotent, check mode, diff), and taken host ports are
  refused at create.
- db (192.168.77.12/24) reaches web (192.168.77.11/24) over lab by address (a TCP connect to web's sshd reads its
  banner); other (192.168.77.13/24, the same subnet), not on this lab, cannot. The private NICs get no route but
  their subnet's and the host gets no interface. list/status/inventory show the NICs, and `vmctl down` stops both
  switches.
"""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support.ansible_run import _env, module
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
WEB = """\
vm "web" {
    image "%(image)s"
    memory 768
    cloud-init { hostname "web"; }
    ssh { user "vm"; }
    private-network "lab" address="192.168.77.11/24"
    port-forward host=%(port)d guest=8000
    share "./site" guest="/srv/site"
    share "./docs" guest="/srv/docs" readonly=true
    provision "shell" {
        inline "sudo systemd-run --unit=site python3 -m http.server 8000 --bind 0.0.0.0 --directory /srv/site"
    }
}
"""
# bash's /dev/tcp: a TCP connect to web's sshd over the private network, reading its banner
CONNECT = "timeout 20 bash -c 'exec 3<>/dev/tcp/192.168.77.11/22 && head -c 7 <&3'"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def opens_a_tap(pid):
    """Whether process ``pid`` holds /dev/net/tun open (a TAP device on the host), read from its fds.

    Asked of the lab's own processes, so links that other tests make at the same time do not count."""
    fd_dir = "/proc/%d/fd" % pid
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(os.path.join(fd_dir, fd)))
        except FileNotFoundError:  # closed since the listing
            pass
    return "/dev/net/tun" in targets


@pytest.fixture(scope="module")
def lab(test_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("lan")
    image = test_images["debian"]["path"]
    one, two = root / "one", root / "two"
    port = free_port()
    for folder, vms in ((one, [("db", "192.168.77.12/24")]), (two, [("other", "192.168.77.13/24")])):
        folder.mkdir()
        web = WEB % dict(image=image, port=port) if folder == one else ""
        (folder / "VMFile.kdl").write_text(web + "".join(VM % dict(name=n, image=image, address=a) for n, a in vms))
    for share in ("site", "docs"):
        (one / share).mkdir()
    (one / "site" / "index.txt").write_text("served from the host\n")
    (one / "site" / "inbox").mkdir()
    os.chmod(one / "site" / "inbox", 0o777)  # the guest's user (uid 1000) may write here
    (one / "docs" / "readme.txt").write_text("read only\n")
    home = str(root / "xdg-data")
    control = new_control_dir()
    env = _env({"XDG_DATA_HOME": home, "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_WAIT_TIMEOUT": SSH_TIMEOUT})
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
               "manager": VmManager(), "port": port}
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
    """No route but the subnet's over the private NIC; neither the switch nor any QEMU holds a TAP device."""
    status, out = guest(lab, "db", "ip -4 route show")
    assert status == 0, out
    lab_routes = [line for line in out.splitlines() if "192.168.77." in line]
    assert lab_routes and all(line.startswith("192.168.77.0/24 ") for line in lab_routes), out
    assert not [line for line in out.splitlines() if line.startswith("default") and "192.168.77." in line], out
    db = lab["manager"].get("db")
    lab_switch = switches.Switch(switches.data_dir_of(db.work_dir), private_network.nics_of(db)[0]["switch"])
    with open("/proc/%d/cmdline" % lab_switch.pid(), "rb") as f:
        assert b"-t" not in f.read().split(b"\0")
    qemus = [int(Path(lab["manager"].get(name).work_dir, "qemu.pid").read_text()) for name in ("web", "db", "other")]
    assert [pid for pid in qemus + [lab_switch.pid()] if opens_a_tap(pid)] == []


def test_list_status_and_inventory_show_the_nics(lab):
    out = subprocess.run([VMCTL, "list"], env=lab["env"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["user,lab"] * 3, out
    out = subprocess.run([VMCTL, "status", "db"], env=lab["env"], capture_output=True, text=True, check=True).stdout
    assert "lab 192.168.77.12/24 (MAC 52:56:" in out, out
    hostvars = {r["name"]: r["hostvars"] for r in inventory.vm_records(data_dir=os.path.join(lab["env"]["XDG_DATA_HOME"], "vmctl"))}
    assert hostvars["web"]["vmctl_private_addresses"] == {"lab": "192.168.77.11"}
    assert hostvars["web"]["vmctl_private_networks"][0]["switch"] == hostvars["db"]["vmctl_private_networks"][0]["switch"]
    assert hostvars["other"]["vmctl_private_networks"][0]["switch"] != hostvars["db"]["vmctl_private_networks"][0]["switch"]


class Web:
    """The forwards and shares side of ``web``: its VMFile folder, host port, environment and SSH."""

    def __init__(self, lab):
        self.root, self.port, self.env = Path(lab["one"]), lab["port"], lab["env"]
        self.up = lab

    def vmctl(self, *args, timeout=900):
        return subprocess.run([VMCTL] + [str(a) for a in args], capture_output=True, text=True, env=self.env,
                              cwd=str(self.root), timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def guest(self, command):
        proc = self.vmctl("ssh", "web", "--", command, timeout=120)
        return proc.returncode, proc.stdout

    def module(self, name, args, **kwargs):
        return module(name, args, env=self.env, **kwargs)


@pytest.fixture(scope="module")
def web(lab):
    return Web(lab)


def fetch(port, path, attempts=30):
    """GET http://127.0.0.1:port/path (the server may still be starting)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (port, path), timeout=10) as reply:
                return reply.status, reply.read().decode()
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def test_the_host_fetches_a_shared_file_through_the_forward(web):
    assert web.up["rcs"][0] == 0, web.up["outputs"][0]
    assert fetch(web.port, "index.txt") == (200, "served from the host\n")
    # a file the host writes now is seen by the guest at once (the share is live, not a copy)
    (web.root / "site" / "later.txt").write_text("written later\n")
    assert fetch(web.port, "later.txt") == (200, "written later\n")


def test_the_forward_listens_on_loopback_only(web):
    listening = subprocess.run(["ss", "-Hltn", "sport = :%d" % web.port], capture_output=True, text=True, check=True).stdout
    addresses = [line.split()[3] for line in listening.splitlines()]
    assert addresses == ["127.0.0.1:%d" % web.port], listening


def test_a_file_the_guest_writes_appears_on_the_host_owned_by_the_host_user(web):
    status, out = web.guest("echo from-the-guest > /srv/site/inbox/note.txt && stat -c %u /srv/site/inbox/note.txt && id -u")
    assert status == 0, out
    guest_owner, guest_uid = out.split()
    assert guest_owner == guest_uid == "1000"  # the guest sees its own user as the owner (kept in xattrs)
    note = web.root / "site" / "inbox" / "note.txt"
    assert note.read_text() == "from-the-guest\n"
    assert os.stat(note).st_uid == os.getuid() != 1000  # on the host: the user that runs QEMU (mapped-xattr)
    # a root-owned file the guest makes belongs to the host user too, and the guest's tools read it back
    assert web.guest("sudo sh -c 'echo by-root > /srv/site/root.txt' && cat /srv/site/root.txt")[1] == "by-root\n"
    assert os.stat(web.root / "site" / "root.txt").st_uid == os.getuid()


def test_a_readonly_share_cannot_be_changed_from_the_guest(web):
    """Bad input from the guest: a write into the readonly share fails there, and the host folder is untouched."""
    assert web.guest("cat /srv/docs/readme.txt")[1] == "read only\n"
    status, out = web.guest("sudo touch /srv/docs/new 2>&1; findmnt -no OPTIONS /srv/docs")
    assert "Read-only file system" in out and "ro" in out.splitlines()[-1].split(","), out
    assert sorted(os.listdir(web.root / "docs")) == ["readme.txt"]


def test_list_status_and_vm_info_show_the_forwards_and_shares(web):
    listing = web.vmctl("list").stdout.splitlines()
    header, row = listing[0].split(), [line.split() for line in listing[1:] if line.split()[0] == "web"][0]
    assert dict(zip(header, row))["FORWARDS"] == "%d->8000/tcp" % web.port
    status = json.loads(web.vmctl("status", "web", "--json").stdout)
    assert status["port_forwards"] == [{"host": web.port, "guest": 8000, "protocol": "tcp", "address": "127.0.0.1"}]
    assert [s["guest"] for s in status["shares"]] == ["/srv/site", "/srv/docs"] and status["firmware"] == "bios"
    info = web.module("vm_info", {"name": "web"})
    assert info["vms"][0]["port_forwards"] == status["port_forwards"]


def test_the_vm_module_changes_the_forwards_of_the_running_vm_idempotently(web):
    record = [vm for vm in web.module("vmfile", {"path": str(web.root / "VMFile.kdl")})["vms"] if vm["name"] == "web"][0]
    extra = free_port()
    record["port_forwards"] = record["port_forwards"] + [{"host": extra, "guest": 22, "protocol": "tcp", "address": "0.0.0.0"}]
    planned = web.module("vm", {"record": record}, check=True, diff=True)
    assert planned["changed"] and not planned["failed"], planned
    assert json.loads(web.vmctl("status", "web", "--json").stdout)["port_forwards"][1:] == []  # check mode wrote nothing
    done = web.module("vm", {"record": record}, diff=True)
    assert done["changed"] and "applied at the next start" in done["actions"][0], done
    assert len(done["vm"]["port_forwards"]) == 2
    again = subprocess.run(["ansible", "localhost", "-c", "local", "-m", "vmctl.core.vm", "-a", json.dumps({"record": record})],
                           capture_output=True, text=True, env=web.env, timeout=600, check=False)
    assert again.returncode == 0 and '"changed": false' in again.stdout, again.stdout + again.stderr
    warning = " ".join(again.stderr.split())  # the run warns: the second forward listens on every interface
    assert "[WARNING]" in warning and "listens on 0.0.0.0, not only on 127.0.0.1: other hosts may reach" in warning, warning
    assert fetch(web.port, "index.txt")[0] == 200  # the running VM kept its forwards
    record["port_forwards"] = record["port_forwards"][:1]  # removed again: one more change, then none
    assert web.module("vm", {"record": record})["changed"]
    assert not web.module("vm", {"record": record})["changed"]


def test_a_taken_host_port_is_refused_at_create(web, test_images):
    """Bad input: a second VM forwarding web's host port (named: VM web), and one forwarding a port a decoy socket
    holds ("another program"); neither is left in the store."""
    image = test_images["debian"]["path"]
    proc = web.vmctl("create", "--name", "intruder", "--image", image, "--forward", "%d:80" % web.port, "--no-cloud-init")
    assert proc.returncode != 0 and "host port 127.0.0.1:%d/tcp is already forwarded by VM web" % web.port in proc.stderr, proc.stderr
    with socket.socket() as decoy:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen()
        port = decoy.getsockname()[1]
        proc = web.vmctl("create", "--name", "intruder", "--image", image, "--forward", "%d:80" % port, "--no-cloud-init")
        assert proc.returncode != 0 and "is in use by another program" in proc.stderr, proc.stderr
    assert "intruder" not in [r["name"] for r in json.loads(web.vmctl("list", "--json").stdout)]


def test_ssh_config_and_cp_work_on_the_real_guest(web, tmp_path):
    """The real OpenSSH client reads `vmctl ssh-config web` (host key pinned, no prompt); `vmctl cp` moves a file
    to the guest and back."""
    config = tmp_path / "ssh_config"
    printed = web.vmctl("ssh-config", "web")
    assert printed.returncode == 0, printed.stderr
    config.write_text(printed.stdout)
    assert "StrictHostKeyChecking yes" in printed.stdout
    proc = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "web", "hostname"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "web"), proc.stderr
    there = tmp_path / "there.txt"
    there.write_text("to the guest and back\n")
    assert web.vmctl("cp", there, "web:/tmp/there.txt").returncode == 0
    back = tmp_path / "back.txt"
    proc = web.vmctl("cp", "web:/tmp/there.txt", back)
    assert proc.returncode == 0, proc.stderr
    assert back.read_text() == "to the guest and back\n"


def test_down_stops_the_switches(lab):
    handles = [lab["manager"].get(name) for name in ("web", "db", "other")]
    ids = {private_network.nics_of(h)[0]["switch"] for h in handles}
    data_dir = switches.data_dir_of(handles[0].work_dir)
    assert all(switches.Switch(data_dir, i).pid() for i in ids) and len(ids) == 2
    for folder in (lab["one"], lab["two"]):
        proc = subprocess.run([VMCTL, "down"], cwd=folder, env=lab["env"], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [switches.Switch(data_dir, i).pid() for i in ids] == [None, None]
