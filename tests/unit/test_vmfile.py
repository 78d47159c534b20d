"""VMFile.kdl: the guide's examples parse to its defaults (v1 and v2 spelling); every mistake is
reported with file:line:col, a caret and a hint, all at once."""

import os
import textwrap

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import vmfile
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
    """A VMFile directory with the files the examples name, and a home with the ~ files."""
    home = tmp_path / "home"
    for rel in ("images/debian-12-generic-amd64.qcow2", ".ssh/id_ed25519", ".ssh/id_ed25519.pub"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("x")
    monkeypatch.setenv("HOME", str(home))
    proj = tmp_path / "proj"
    for rel in ("config/bashrc", "scripts/setup-dev-tools.sh", "disk.qcow2", "key.pub", "user-data.yaml", "id"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("x")
    return proj


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
    assert full["ssh"] == {"user": "ubuntu", "private_key": None}
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
    assert tap["ssh"] == {"user": "debian", "private_key": os.path.join(home, ".ssh/id_ed25519")}
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


# (VMFile text, line, col, a fragment of the message, a fragment of the hint)
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
]


@pytest.mark.parametrize("text,line,col,message,hint", BAD, ids=[b[3][:40] for b in BAD])
def test_each_mistake_names_line_col_and_hint(project, text, line, col, message, hint):
    path = write(project, text)
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(path)
    matching = [p for p in err.value.problems if message in p.message]
    assert matching, "\n".join(p.render() for p in err.value.problems)
    problem = matching[0]
    assert (problem.line, problem.col) == (line, col), problem.render()
    assert hint in problem.hint
    rendered = problem.render()
    assert rendered.startswith("%s:%d:%d: error: " % (path, line, col))
    assert rendered.splitlines()[2] == "    " + " " * (col - 1) + "^"  # the caret under the column


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


def test_non_utf8_file_is_a_positioned_error(project):
    path = project / "VMFile.kdl"
    path.write_bytes(b'vm "a" {\n    image "\xff.qcow2"\n}\n')
    with pytest.raises(vmfile.VmfileError) as err:
        vmfile.load(str(path))
    assert (err.value.problems[0].line, err.value.problems[0].col) == (2, 12)
