"""VMFile.kdl: the guide's examples parse to its defaults (v1 and v2 spelling); every mistake is
reported with file:line:col, a caret and a hint, all at once."""

import functools
import os
import textwrap

import pytest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError, VmfileNotFound

FULL_EXAMPLE_V1 = '''\
// Development VM with all options specified
vm "full-example" {
    image-url "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
    vcpus 4
    memory 4096
    disk 40
    network "user"
    cloud-init {
        hostname "full-example"
    }
    ssh {
        user "ubuntu"
    }
    provision "shell" {
        inline "sudo apt-get update && sudo apt-get install -y build-essential curl git"
    }
    provision "file" {
        source "config/bashrc"
        destination "/home/ubuntu/.bashrc"
    }
    provision "shell" {
        script "scripts/setup-dev-tools.sh"
    }
}

vm "tap-example" {
    image "~/images/debian-12-generic-amd64.qcow2"
    vcpus 2
    memory 2048
    network "tap" {
        bridge "br0"
    }
    cloud-init {
        hostname "tap-vm"
        ssh-key "~/.ssh/id_ed25519.pub"
    }
    ssh {
        user "debian"
        private-key "~/.ssh/id_ed25519"
    }
}

vm "minimal" {
    image-url "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
}
'''

# The same in KDL v2 spelling, as the original tool reads it: bare identifiers, one-line blocks, ;.
FULL_EXAMPLE_V2 = '''\
vm full-example {
    image-url "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
    vcpus 4; memory 4096; disk 40
    network user
    cloud-init { hostname full-example }
    ssh { user ubuntu }
    provision shell { inline "sudo apt-get update && sudo apt-get install -y build-essential curl git" }
    provision file { source "config/bashrc"; destination "/home/ubuntu/.bashrc" }
    provision shell { script "scripts/setup-dev-tools.sh" }
}
vm tap-example {
    image "~/images/debian-12-generic-amd64.qcow2"
    vcpus 2; memory 2048
    network tap bridge=br0
    cloud-init { hostname tap-vm; ssh-key "~/.ssh/id_ed25519.pub" }
    ssh { user debian; private-key "~/.ssh/id_ed25519" }
}
vm minimal { image-url "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img" }
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A VMFile directory with the files the examples name, and a home with the ~ files.

    Key pairs: ~/.ssh/id_ed25519, id and other_key (each with its .pub), and sealed (behind a passphrase).
    """
    home = tmp_path / "home"
    (home / "images").mkdir(parents=True)
    (home / "images/debian-12-generic-amd64.qcow2").write_text("x")
    (home / ".ssh").mkdir()
    monkeypatch.setenv("HOME", str(home))
    proj = tmp_path / "proj"
    for rel in ("config/bashrc", "scripts/setup-dev-tools.sh", "disk.qcow2", "user-data.yaml"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("x")
    for path in (home / ".ssh/id_ed25519", proj / "id", proj / "other_key"):
        keys.write_keypair(keys.generate_ed25519("test"), str(path))
    (proj / "sealed").write_bytes(sealed_key())
    return proj


@functools.lru_cache(maxsize=None)
def sealed_key():
    """An OpenSSH private key behind a passphrase (made once: its key derivation is slow on purpose)."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.BestAvailableEncryption(b"secret"))


def write(project, text, name="VMFile.kdl"):
    path = project / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("text", [FULL_EXAMPLE_V1, FULL_EXAMPLE_V2], ids=["kdl-v1", "kdl-v2"])
def test_full_example_parses_to_the_documented_defaults(project, text):
    path = write(project, text)
    vms = {r["name"]: r for r in vmfile.load(path)}
    assert list(vms) == ["full-example", "tap-example", "minimal"]
    full, tap, minimal = vms["full-example"], vms["tap-example"], vms["minimal"]
    assert (full["vcpus"], full["memory"], full["disk"]) == (4, 4096, 40)
    assert full["cloud_init"] == {"hostname": "full-example", "ssh_key": None, "user_data": None, "generate_key": True}
    assert full["ssh"] == {"user": "ubuntu", "private_key": None, "boot_timeout": None, "stall_timeout": None, "host_key_checking": "yes"}
    assert [p["step"] for p in full["provisions"]] == [1, 2, 3]
    assert full["provisions"][1] == {"step": 2, "type": "file", "source": str(project / "config/bashrc"),
                                     "destination": "/home/ubuntu/.bashrc",
                                     "description": "file: %s -> /home/ubuntu/.bashrc" % (project / "config/bashrc")}
    assert full["provisions"][2]["script"] == str(project / "scripts/setup-dev-tools.sh")
    home = os.environ["HOME"]
    assert tap["image"] == os.path.join(home, "images/debian-12-generic-amd64.qcow2") and tap["image_url"] is None
    assert tap["network"] == {"type": "tap", "bridge": "br0", "name": None}
    assert tap["cloud_init"]["ssh_key"] == os.path.join(home, ".ssh/id_ed25519.pub")
    assert tap["cloud_init"]["generate_key"] is False
    assert tap["ssh"] == {"user": "debian", "private_key": os.path.join(home, ".ssh/id_ed25519"),
                          "boot_timeout": None, "stall_timeout": None, "host_key_checking": "yes"}
    assert minimal["vcpus"] == 1 and minimal["memory"] == 1024 and minimal["disk"] is None
    assert minimal["network"] == {"type": "user", "bridge": None, "name": None}
    assert minimal["cloud_init"] is None and minimal["ssh"] is None and minimal["provisions"] == []
    assert all(r["vmfile"] == path and r["base_dir"] == str(project) for r in vms.values())


def test_both_bridge_forms_and_the_default_bridge(project):
    vms = vmfile.load(write(project, '''
        vm "a" { image "disk.qcow2"; network "tap" { bridge "br1" } }
        vm "b" { image "disk.qcow2"; network "tap" bridge="br2" }
        vm "c" { image "disk.qcow2"; network "tap" }
        vm "d" { image "disk.qcow2"; network "vnic" { name "vnic0" } }
    '''))
    assert [v["network"]["bridge"] for v in vms] == ["br1", "br2", "br0", None]
    assert vms[3]["network"] == {"type": "vnic", "bridge": None, "name": "vnic0"}


def test_private_key_without_cloud_init_key_is_not_replaced_by_a_generated_one(project):
    vm = vmfile.load(write(project, 'vm "k" { image "disk.qcow2"; cloud-init { hostname "k" }; ssh { private-key "id" } }'))[0]
    assert vm["cloud_init"]["generate_key"] is False and vm["ssh"]["private_key"] == str(project / "id")


def test_additions_checksum_accel_cpu_machine(project):
    vm = vmfile.load(write(project, '''
        vm "x" {
            image-url "https://example.org/img.qcow2.zst"
            image-checksum "sha256:%s"
            accel "tcg"; cpu "max"; machine "pc"
        }
    ''' % ("ab" * 32)))[0]
    assert vm["image_checksum"] == "sha256:" + "ab" * 32
    assert (vm["accel"], vm["cpu"], vm["machine"]) == ("tcg", "max", "pc")


def test_name_selects_and_unknown_names_are_listed(project):
    path = write(project, 'vm "a" { image "disk.qcow2"; }\nvm "b" { image "disk.qcow2"; }\n')
    assert [v["name"] for v in vmfile.load(path, names=["b"])] == ["b"]
    with pytest.raises(VmctlError) as err:
        vmfile.load(path, names=["c"])
    assert "Defined there: a, b" in err.value.hint


def test_discovery_and_missing_file(project):
    write(project, 'vm "a" { image "disk.qcow2"; }')
    assert vmfile.load(cwd=str(project))[0]["name"] == "a"
    with pytest.raises(VmfileNotFound) as err:
        vmfile.load(cwd=str(project / "config"))
    assert "VMFile.kdl" in str(err.value)


# (VMFile text, line, col, a fragment of the message, a fragment of the hint). Each text has one mistake, and
# it is reported as exactly one problem (a wrong or missing file is never also reported as a missing setting).
BAD = [
    ('vm "a" {\n    image "disk.qcow2"\n    memroy 2048\n}\n', 3, 5, "unknown node memroy", "did you mean `memory`?"),
    ('vm "a" {\n    image "disk.qcow2"\n    network "tap" bridg="br0"\n}\n', 3, 19, "unknown property bridg=", "did you mean `bridge`?"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus "two"\n}\n', 3, 11, "vcpus must be a whole number", "without quotes"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus 65537\n}\n', 3, 11, "vcpus must be from 1 to 255, got 65537", "never wrapped"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus 0\n}\n', 3, 11, "vcpus must be from 1 to 255", "at least 1"),
    ('vm "a" {\n    image "disk.qcow2"\n    memory 1.5\n}\n', 3, 12, "memory must be a whole number", "memory"),
    ('vm "a" {\n    image "disk.qcow2"\n    disk 999999\n}\n', 3, 10, "disk must be from 1 to 65536 GB", "at most 65536 GB"),
    ('vm "a" {\n    image "disk.qcow2"\n    memory -5\n}\n', 3, 12, "memory must be from 16", "at least 16"),
    ('vm "bad name!" {\n    image "disk.qcow2"\n}\n', 1, 4, "invalid VM name", "letters, digits"),
    ('vm "a" {\n    image "disk.qcow2"\n}\nvm "a" {\n    image "disk.qcow2"\n}\n', 4, 4, "VM a is defined twice", "first is on line 1"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus 1\n    vcpus 2\n}\n', 4, 5, "vcpus is given twice", "first is on line 3"),
    ('vm "a" {\n    vcpus 1\n}\n', 1, 1, "has no image source", "image-url"),
    ('vm "a" {\n    image "disk.qcow2"\n    ssh { user "u"; }\n}\n', 3, 5, "ssh block but no key", "cloud-init { } block"),
    ('vm "a" {\n    image "disk.qcow2"\n    image-url "https://x.org/i.img"\n}\n', 3, 5, "both image and image-url", "one image source"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "shell" {\n        inline "a"\n        script "id"\n    }\n}\n', 5, 16,
     "exactly one of inline and script", "not both"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "shell" {\n    }\n}\n', 3, 5, "exactly one of inline and script", "inline"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "file" {\n        source "id"\n    }\n}\n', 3, 5, "needs destination", "destination"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "file" {\n        source "id"\n        destination "tmp/x"\n    }\n}\n', 5, 21,
     "must be an absolute path", "Start it with /"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "ansible" {\n    }\n}\n', 3, 15, "unknown provisioner type", "shell, file"),
    ('vm "a" {\n    image "disk.qcow2"\n    network "bridge"\n}\n', 3, 13, "unknown network type", "user, tap, vnic, none"),
    ('vm "a" {\n    image "missing.qcow2"\n}\n', 2, 11, "image missing.qcow2 does not exist", "relative to the VMFile"),
    ('vm "a" {\n    image "disk.qcow2"\n    cloud-init {\n        ssh-key "nokey.pub"\n    }\n}\n', 4, 17, "ssh-key nokey.pub does not exist", "relative"),
    ('vm "a" {\n    image "disk.qcow2"\n    cloud-init {\n        user-data "nope.yaml"\n    }\n}\n', 4, 19, "user-data nope.yaml does not exist", "relative"),
    ('vm "a" {\n    image "disk.qcow2"\n    ssh {\n        private-key "nope"\n    }\n}\n', 4, 21, "private-key nope does not exist", "relative"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "shell" {\n        script "nope.sh"\n    }\n}\n', 4, 16, "script nope.sh does not exist", "relative"),
    ('vm "a" {\n    image "disk.qcow2"\n    provision "file" {\n        source "nope"\n        destination "/x"\n    }\n}\n', 4, 16,
     "source nope does not exist", "relative"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus 2\n', 1, 8, "KDL syntax: this { block is not closed", "missing }"),
    ('vm "a" {\n    image "disk.qcow2\n}\n', 2, 11, "KDL syntax: unterminated string", 'Close it with "'),
    ('vn "a" {\n    image "disk.qcow2"\n}\n', 1, 1, "unknown top-level node vn", "did you mean `vm`?"),
    ('vm "a" {\n    image-url "ftp://x/y.img"\n}\n', 2, 15, "must be an http(s):// or file:// URL", "local file"),
    ('vm "a" {\n    image-url "https://x/y.img"\n    image-checksum "md5:abc"\n}\n', 3, 20, "malformed image-checksum", "sha256:"),
    ('vm "a" {\n    image "disk.qcow2"\n    image-checksum "sha256:%s"\n}\n' % ("0" * 64), 3, 5, "image-checksum without image-url", "add image-url"),
    ('vm "a" {\n    image "disk.qcow2"\n    network "vnic"\n}\n', 3, 5, "needs the VNIC's name", 'name "vnic0"'),
    ('vm "a" {\n    image "disk.qcow2"\n    accel "hvf"\n}\n', 3, 11, "unknown accel", "auto, kvm, tcg"),
    ('vm "a" {\n    image "disk.qcow2"\n    vcpus 1 2\n}\n', 3, 13, "vcpus takes exactly one value, found 2", "vcpus"),
    ('vm "a" {\n    image "disk.qcow2" {\n    }\n}\n', 2, 24, "image takes a value, not a { } block", "image"),
    # Types, values and forms.
    ('vm "a" {\n  image "disk.qcow2"\n  hostname "a"\n}', 3, 3, "unknown node hostname", "belongs inside cloud-init { }"),
    ('vm "a" { image "disk.qcow2"; vcpus 2 max=4 }', 1, 38, "vcpus takes no properties", "Remove max="),
    ('vm "a" {\n  image "disk.qcow2"\n  memory "4G"\n}', 3, 10, "memory must be a whole number", "in MB: write memory 4096"),
    ('vm "a" {\n  image "disk.qcow2"\n  disk true\n}', 3, 8, "disk must be a whole number, got true", "disk 20"),
    ('vm "a" {\n  image 42\n}', 2, 9, "image must be a string, got 42", 'Quote it: image "42"'),
    ('vm "a" { image "disk.qcow2"; vcpus 99999999999999999999999 }', 1, 36, "vcpus must be from 1 to 255", "at most 255"),
    ('vm {\n  image "disk.qcow2"\n}', 1, 3, "vm needs a name", 'vm "name"'),
    ('vm 7 { image "disk.qcow2" }', 1, 4, "invalid VM name 7", "letters, digits"),
    ('vm "../etc" { image "disk.qcow2" }', 1, 4, "invalid VM name", "starting with a letter or digit"),
    ('vm "a" { image "disk.qcow2"; network "tap" bridge="a" bridge="b" }', 1, 55, "bridge= is given twice on network",
     "Keep one bridge="),
    ('vm "a" {\n  image "disk.qcow2"\n  ssh { user "me" private-key "id" }\n}', 3, 19, "user takes exactly one value, found 3",
     'separated by ";"'),
    ('vm "a" {\n  image "disk.qcow2"\n  memory\n}', 3, 9, "memory takes exactly one value, found 0", "memory"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  ssh "ubuntu"\n}', 4, 7, 'unexpected value "ubuntu" after ssh', "inside { }"),
    # Provisioners and networks.
    ('vm "a" {\n  image "disk.qcow2"\n  provision "shell" {\n    inline "x"\n    destination "/x"\n  }\n}', 5, 17,
     "destination belongs to file provisioners", "inline or script"),
    ('vm "a" {\n  image "disk.qcow2"\n  provision { inline "x" }\n}', 3, 12, "provision needs a type", 'provision "shell"'),
    ('vm "a" { image "disk.qcow2"; network "usr" }', 1, 38, "unknown network type", "did you mean `user`?; Use one of"),
    ('vm "a" {\n  image "disk.qcow2"\n  network "user" { bridge "br0" }\n}', 3, 27, "bridge only applies to tap", 'network "tap"'),
    ('vm "a" {\n  image "disk.qcow2"\n  network "tap" bridge="br1" {\n    bridge "br0"\n  }\n}', 4, 5,
     "bridge is given both as bridge= and as a node", "Keep one"),
    ('vm "a" { image "disk.qcow2"; network "tap" bridge="a-very-long-bridge" }', 1, 51, "not a network interface name",
     "1 to 15 characters"),
    ('vm "a" {\n  image "disk.qcow2"\n  provision "file" { source "config"; destination "/x" }\n}', 3, 29,
     "source config is a directory, not a file", "tarball"),
    ('vm "a" {\n  image "disk.qcow2"\n  cpu "host cpu"\n}', 3, 7, "not a QEMU model name", 'cpu "max"'),
    # Guest settings cloud-init would refuse, and keys that cannot work.
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { hostname "web_1" }\n}', 3, 25, "invalid hostname 'web_1'",
     "dot-separated labels"),
    ('vm "web_1" {\n  image "disk.qcow2"\n  cloud-init\n}', 3, 3, "the hostname defaults to the VM name", 'hostname "web-1"'),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  ssh { user "Root Admin" }\n}', 4, 14, "cloud-init cannot create the user",
     "lowercase Linux user name"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init {\n    ssh-key "id.pub"\n    user-data "user-data.yaml"\n  }\n}', 4, 13,
     "ssh-key is not used when user-data is given", "ssh_authorized_keys"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { ssh-key "other_key" }\n}', 3, 24, "not an OpenSSH public key",
     "the .pub file"),
    ('vm "a" {\n  image "disk.qcow2"\n  ssh { private-key "other_key.pub" }\n}', 3, 21, "is a public key, not a private one",
     "without .pub"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { ssh-key "~/.ssh/id_ed25519.pub" }\n  ssh { private-key "other_key" }\n}',
     4, 21, "is not the pair of ssh-key", "same key pair"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  ssh { private-key "sealed" }\n}', 4, 21, "protected by a passphrase",
     "without a passphrase"),
    ('vm "a" {\n  image "disk.qcow2"\n  ssh { private-key "user-data.yaml" }\n}', 3, 21, "cannot read the private key",
     "unencrypted OpenSSH or PEM"),
    # A wrong setting is one problem: the checks between settings see it as given (issue 10 item 8).
    ('vm "a" {\n  image "disk.qcow2"\n  provision "shell" { inline 5; }\n}', 3, 30, "inline must be a string", 'inline "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  provision "shell" { script; }\n}', 3, 29, "script takes exactly one value, found 0",
     "script"),
    ('vm "a" {\n  image "disk.qcow2"\n  provision "file" { source 5; destination "/x" }\n}', 3, 29,
     "source must be a string", 'source "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  provision "file" { source "id"; destination 5 }\n}', 3, 47,
     "destination must be a string", 'destination "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  provision "file" { source "id"; destination "/x" bash }\n}', 3, 52,
     "destination takes exactly one value, found 2", "destination"),
    ('vm "web_1" {\n  image "disk.qcow2"\n  cloud-init { hostname "web_1" }\n}', 3, 25, "invalid hostname 'web_1'",
     "dot-separated labels"),
    ('vm "web_1" {\n  image "disk.qcow2"\n  cloud-init { hostname 5 }\n}', 3, 25, "hostname must be a string", 'hostname "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  ssh { user 5 }\n}', 4, 14, "user must be a string", 'user "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { ssh-key "nokey.pub" }\n  ssh { private-key "id" }\n}', 3, 24,
     "ssh-key nokey.pub does not exist", "relative"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { ssh-key "id.pub" }\n  ssh { private-key "nope" }\n}', 4, 21,
     "private-key nope does not exist", "relative"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { user-data "nope.yaml" }\n  ssh { user "me"; private-key "id" }\n}',
     3, 26, "user-data nope.yaml does not exist", "relative"),
    ('vm "a" {\n  image "disk.qcow2"\n  network "tapp" { bridge "br0" }\n}', 3, 11, "unknown network type", "did you mean `tap`?"),
    ('vm "a" {\n  image "disk.qcow2"\n  network "vnic" { name 5 }\n}', 3, 25, "name must be a string", 'name "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  network "tap" bridge=5\n}', 3, 24, "bridge must be a string", 'bridge "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  ssh { host-key-checking "no" }\n}', 4, 27,
     "unknown host-key-checking 'no'", "yes, accept-new"),
    # Private networks (issue 14); the last: two VMs of one VMFile with one address on one switch (the second is
    # reported, naming the first).
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="192.168.77.300/24"\n}', 4, 33,
     "invalid private network address", "prefix length"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="192.168.77.11"\n}', 4, 33,
     "has no prefix length", 'address="192.168.77.11/24"'),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="192.168.77.255/24"\n}', 4, 33,
     "is the broadcast address", "host address inside 192.168.77.0/24"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="127.0.0.2/8"\n}', 4, 33,
     "not a host address on a LAN", "private range"),
    ('vm "a" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address=5\n}', 4, 33,
     "address must be a string", 'address "5"'),
    ('vm "a" {\n  image "disk.qcow2"\n  private-network "l/b"\n}', 3, 19, "invalid private network name", "1 to 32 letters"),
    ('vm "a" {\n  image "disk.qcow2"\n  private-network\n}', 3, 18, "private-network needs the switch's name",
     'private-network "lab"'),
    ('vm "a" {\n  image "disk.qcow2"\n  private-network "lab" adress="192.168.77.11/24"\n}', 3, 25,
     "unknown property adress=", "did you mean `address`?"),
    ('vm "a" {\n  image "disk.qcow2"\n  private-network "lab"\n  private-network "lab"\n}', 4, 19,
     "private network lab is given twice", "first is on line 3"),
    ('vm "a" {\n  image "disk.qcow2"\n  private-network "lab" address="192.168.77.11/24"\n}', 3, 25,
     "set by cloud-init, and vm \"a\" has no cloud-init", "Add a cloud-init { } block"),
    ('vm "a" {\n  image "disk.qcow2"\n  private-netwrk "lab"\n}', 3, 3, "unknown node private-netwrk",
     "did you mean `private-network`?"),
    ('vm "web" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="192.168.77.11/24"\n}\n'
     'vm "db" {\n  image "disk.qcow2"\n  cloud-init\n  private-network "lab" address="192.168.77.11/16"\n}', 9, 25,
     'address 192.168.77.11/16 on private network lab is taken by vm "web" (line 4)', "its own address"),
    # Syntax.
    ("// nothing here\n/* really */\n", 1, 1, "defines no VM", "Add a vm"),
    ('vm "a" { image "disk.qcow2" }\n}\n', 2, 1, "KDL syntax: unexpected }", "Remove it"),
    ('vm "a" {\n  image "disk.qcow2"\n  memory 2G\n}', 3, 10, "KDL syntax: malformed number 2G", "Write a number"),
    ('vm "a" {\n  image "C:\\disk.qcow2"\n}', 2, 12, "KDL syntax: unknown escape \\d", "raw strings"),
    ('vm "a" { image "disk.qcow2" }\n/* forgot\n', 2, 1, "KDL syntax: unterminated /* comment", "*/"),
    ('vm "a" {\n  image "disk\u202e.qcow2"\n}', 2, 14, "U+202E is not allowed", "Delete it"),
    ('vm "a" {\n  provision "shell" {\n    inline """\n      echo hi"""\n  }\n}', 3, 12,
     'end with """ on a line of its own', '"""'),
    # Issue 14: port forwards, shares, firmware, kernel.
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=70000 guest=80\n}', 3, 21, "host must be from 1 to 65535, got 70000",
     "never wrapped"),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=8080\n}', 3, 3, "port-forward needs guest=", "host=8080 guest=80"),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=8080 guest=80 protocol="sctp"\n}', 3, 44, "unknown protocol 'sctp'",
     "tcp, udp"),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=8080 guest=80 address="localhost"\n}', 3, 43,
     "forward address must be an IPv4 address", 'address="0.0.0.0"'),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host="8080" guest=80\n}', 3, 21, "host must be a whole number", "without quotes"),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=8080 guest=80\n}\nvm "b" {\n  image "disk.qcow2"\n'
     '  port-forward host=8080 guest=81\n}', 7, 16, 'host port 127.0.0.1:8080/tcp is already forwarded by vm "a" (line 3)',
     "pick another host="),
    ('vm "a" {\n  image "disk.qcow2"\n  port-forward host=8080 guest=80 hots=1\n}', 3, 35, "unknown property hots=",
     "did you mean `host`?"),
    ('vm "a" {\n  image "disk.qcow2"\n  network "none"\n  port-forward host=8080 guest=80\n}', 4, 3,
     "port forwards need user networking, not none", 'network "user"'),
    ('vm "a" {\n  image "disk.qcow2"\n  share "nothere" guest="/mnt/x"\n}', 3, 9, "share nothere does not exist",
     "relative to the VMFile's directory"),
    ('vm "a" {\n  image "disk.qcow2"\n  share "disk.qcow2" guest="/mnt/x"\n}', 3, 9, "share disk.qcow2 is not a folder",
     "relative to the VMFile's directory"),
    ('vm "a" {\n  image "disk.qcow2"\n  share "config"\n}', 3, 3, "share needs guest=", 'guest="/mnt/config"'),
    ('vm "a" {\n  image "disk.qcow2"\n  share guest="/mnt/x"\n}', 3, 8, "share needs the host folder", 'share "./src"'),
    ('vm "a" {\n  image "disk.qcow2"\n  share "config" guest="mnt/x"\n}', 3, 24, "share guest path must be an absolute",
     'guest="/mnt/src"'),
    ('vm "a" {\n  image "disk.qcow2"\n  share "config" guest="/mnt/x" readonly="yes"\n}', 3, 42,
     'readonly must be true or false, got "yes"', "readonly=#true"),
    ('vm "a" {\n  image "disk.qcow2"\n  share "config" guest="/mnt/x"\n  share "config" guest="/mnt/x"\n}', 4, 18,
     "two shares are mounted at /mnt/x", "its own guest path"),
    ('vm "a" {\n  image "disk.qcow2"\n  firmware "efi"\n}', 3, 12, "unknown firmware 'efi'", "did you mean `uefi`?; Use one of: bios, uefi"),
    ('vm "a" {\n  image "disk.qcow2"\n  kernel "nope" { initrd "id" }\n}', 3, 10, "kernel nope does not exist", "relative"),
    ('vm "a" {\n  image "disk.qcow2"\n  kernel "id" { initrd "nope" }\n}', 3, 24, "initrd nope does not exist", "relative"),
    ('vm "a" {\n  image "disk.qcow2"\n  kernel "id" { apend "x" }\n}', 3, 17, "unknown node apend in kernel", "did you mean `append`?"),
    ('vm "a" {\n  image "disk.qcow2"\n  kernel { initrd "id" }\n}', 3, 9, "kernel needs the kernel's path", 'kernel "path/vmlinuz"'),
    # Issue 16: the backend of a VM on a hypervisor.
    ('vm "a" {\n  image "disk.qcow2"\n  backend "bhyve"\n}', 3, 11, "unknown backend 'bhyve'",
     "Use one of: auto, qemu, propolis"),
    ('vm "a" {\n  image "disk.qcow2"\n  backend "noop"\n}', 3, 11, "unknown backend 'noop'", "auto, qemu, propolis"),
]


@pytest.mark.parametrize("text,line,col,message,hint", BAD, ids=[b[3][:40] for b in BAD])
def test_each_mistake_names_line_col_and_hint(project, text, line, col, message, hint):
    path = write(project, text)
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(path)
    problems = err.value.problems
    assert len(problems) == 1 and message in problems[0].message, "\n".join(p.render() for p in problems)
    problem = problems[0]
    assert (problem.line, problem.col) == (line, col), problem.render()
    assert hint in problem.hint
    rendered = problem.render()
    assert rendered.startswith("%s:%d:%d: error: " % (path, line, col))
    assert rendered.splitlines()[2] == "    " + " " * (col - 1) + "^"  # the caret under the column


def test_the_backend_node_is_recorded_and_defaults_to_the_hypervisors_platform(project):
    """backend "propolis" (v1) and backend qemu (v2) are the record's backend; without the node it is auto, which the
    host that runs the VM resolves (QEMU on Linux, Propolis on illumos). A wrong value gets the BAD list's error."""
    path = write(project, 'vm "p" {\n  image "disk.qcow2"\n  backend "propolis"\n  network "vnic" { name "vnic0"; }\n}\n'
                          'vm "q" { image "disk.qcow2"; backend qemu; }\nvm "a" { image "disk.qcow2"; }\n')
    vms = {vm["name"]: vm for vm in vmfile.load(path)}
    assert {name: vm["backend"] for name, vm in vms.items()} == {"p": "propolis", "q": "qemu", "a": "auto"}


def test_all_problems_are_reported_in_one_run(project):
    path = write(project, '''\
        vm "a" {
            image "disk.qcow2"
            vcpus 0
            memroy 5
            network "wifi"
        }
        vm "b" {
        }
    ''')
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(path)
    lines = sorted(p.line for p in err.value.problems)
    assert lines == [3, 4, 5, 7]
    assert str(err.value).startswith("4 problems")


def test_a_missing_file_and_a_missing_setting_are_two_problems(project):
    """A file provisioner whose source is missing and that has no destination: both are real, both reported."""
    path = write(project, 'vm "a" {\n  image "disk.qcow2"\n  provision "file" { source "nope" }\n}\n')
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(path)
    assert [(p.line, p.col, p.message.split(" (")[0]) for p in err.value.problems] == [
        (3, 29, "source nope does not exist"), (3, 3, "a file provisioner needs destination")]


def test_non_utf8_file_is_a_positioned_error(project):
    path = project / "VMFile.kdl"
    path.write_bytes(b'vm "a" {\n    image "\xff.qcow2"\n}\n')
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(str(path))
    assert (err.value.problems[0].line, err.value.problems[0].col) == (2, 12)


def test_multi_line_strings_keep_their_escapes_and_lose_their_indent(project):
    vm = vmfile.load(write(project, '''\
        vm a {
            image "disk.qcow2"
            provision shell {
                inline """
                    echo \\"hi\\" \\
                      there
                    ls
                    """
            }
        }
    '''))[0]
    assert vm["provisions"][0]["inline"] == 'echo "hi" there\nls'


def test_the_guest_trusts_the_public_half_of_the_private_key(project):
    from ansible_collections.vmctl.core.plugins.module_utils import specs
    vm = vmfile.load(write(project, 'vm "k" { image "disk.qcow2"; cloud-init; ssh { private-key "other_key" } }'))[0]
    trusted = specs.cloud_init_config(vm).ssh_public_keys
    assert len(trusted) == 1 and keys.same_key(trusted[0], (project / "other_key.pub").read_text())


def test_host_key_checking_in_both_spellings(project):
    """ssh { host-key-checking "accept-new" } (KDL v1) and ssh { host-key-checking accept-new } (v2)."""
    for text in ('vm "a" {\n  image "disk.qcow2"\n  cloud-init { user-data "user-data.yaml" }\n'
                 '  ssh { user "me"; host-key-checking "accept-new" }\n}\n',
                 'vm a { image "disk.qcow2"; cloud-init { user-data "user-data.yaml" }; ssh { user me; host-key-checking accept-new } }\n'):
        assert vmfile.load(write(project, text))[0]["ssh"]["host_key_checking"] == "accept-new"
