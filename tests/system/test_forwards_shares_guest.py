"""Port forwards and shared folders on one real Debian guest (TCG), brought up by ``vmctl up`` (ansible-playbook)
from a VMFile: the guest serves a shared host folder with ``python3 -m http.server`` (a provision step), the host
fetches a file through the forward, a file the guest writes in the share appears on the host owned by the host user,
and a read-only share stays read-only. The forward listens on 127.0.0.1 only. Then the vm module changes the
forwards of the running VM (idempotent, check mode, diff), and taken host ports are refused at create."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest
from support.ansible_run import _env, module
from support.vm_ssh_helpers import new_control_dir, remove_control_dir

pytestmark = [pytest.mark.slow, pytest.mark.guest]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")

VMFILE = """\
vm "web" {
    image "%(image)s"
    memory 768
    port-forward host=%(port)d guest=8000
    share "./site" guest="/srv/site"
    share "./docs" guest="/srv/docs" readonly=true
    cloud-init { hostname "web" }
    ssh { user "vm" }
    provision "shell" {
        inline "sudo systemd-run --unit=site python3 -m http.server 8000 --bind 0.0.0.0 --directory /srv/site"
    }
}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Web:
    def __init__(self, root, image):
        self.root, self.port = root, free_port()
        self.env = _env({"XDG_DATA_HOME": str(root / "xdg-data"), "ANSIBLE_VMCTL_CONTROL_PATH_DIR": new_control_dir(),
                         "ANSIBLE_VMCTL_WAIT_TIMEOUT": "1500"})
        for folder in ("site", "docs"):
            (root / folder).mkdir()
        (root / "site" / "index.txt").write_text("served from the host\n")
        (root / "site" / "inbox").mkdir(mode=0o777)  # the guest's user (uid 1000) may write here
        os.chmod(root / "site" / "inbox", 0o777)
        (root / "docs" / "readme.txt").write_text("read only\n")
        (root / "VMFile.kdl").write_text(VMFILE % {"image": image, "port": self.port})

    def vmctl(self, *args, timeout=900):
        return subprocess.run([VMCTL] + [str(a) for a in args], capture_output=True, text=True, env=self.env,
                              cwd=str(self.root), timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def guest(self, command):
        proc = self.vmctl("ssh", "web", "--", command, timeout=120)
        return proc.returncode, proc.stdout

    def module(self, name, args, **kwargs):
        return module(name, args, env=self.env, **kwargs)


@pytest.fixture(scope="module")
def web(test_images, tmp_path_factory):
    project = Web(tmp_path_factory.mktemp("fwd"), test_images["debian"]["path"])
    up = project.vmctl("up", "--timeout", "1500", timeout=2400)  # TCG on a shared 2-core machine
    project.up = up
    yield project
    project.vmctl("down", "--destroy", timeout=300)
    remove_control_dir(project.env["ANSIBLE_VMCTL_CONTROL_PATH_DIR"])


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
    assert web.up.returncode == 0, web.up.stdout + web.up.stderr
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
    header, row = listing[0].split(), listing[1].split()
    assert dict(zip(header, row))["FORWARDS"] == "%d->8000/tcp" % web.port
    status = json.loads(web.vmctl("status", "web", "--json").stdout)
    assert status["port_forwards"] == [{"host": web.port, "guest": 8000, "protocol": "tcp", "address": "127.0.0.1"}]
    assert [s["guest"] for s in status["shares"]] == ["/srv/site", "/srv/docs"] and status["firmware"] == "bios"
    info = web.module("vm_info", {"name": "web"})
    assert info["vms"][0]["port_forwards"] == status["port_forwards"]


def test_the_vm_module_changes_the_forwards_of_the_running_vm_idempotently(web):
    (record,) = web.module("vmfile", {"path": str(web.root / "VMFile.kdl")})["vms"]
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
    proc = web.vmctl("create", "--name", "other", "--image", image, "--forward", "%d:80" % web.port, "--no-cloud-init")
    assert proc.returncode != 0 and "host port 127.0.0.1:%d/tcp is already forwarded by VM web" % web.port in proc.stderr, proc.stderr
    with socket.socket() as decoy:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen()
        port = decoy.getsockname()[1]
        proc = web.vmctl("create", "--name", "other", "--image", image, "--forward", "%d:80" % port, "--no-cloud-init")
        assert proc.returncode != 0 and "is in use by another program" in proc.stderr, proc.stderr
    assert [r["name"] for r in json.loads(web.vmctl("list", "--json").stdout)] == ["web"]
