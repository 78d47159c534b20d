"""Issue 11 items 1, 3, 5, 9, 11: the store's records are checked one by one, a VM's paths are derived
from its name (never taken from the record), work dirs refuse symlinks, and concurrency loses nothing.
Every hostile value points only at decoys inside the test's tmp dir."""

import json
import os
import stat
import subprocess

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import BadRecord
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


def data_dir():
    return os.path.join(os.environ["XDG_DATA_HOME"], "vmctl")


def make_vm(tmp_path, name):
    image = tmp_path / "base.img"
    image.write_bytes(b"")
    return VmManager().create(VmSpec(name=name, image_path=str(image), backend="noop"))[0]


def edit_record(name, **changes):
    path = os.path.join(data_dir(), "vms.json")
    with open(path) as f:
        data = json.load(f)
    data[name].update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def decoy_dir(tmp_path):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "precious.txt").write_text("keep me")
    os.chmod(decoy, 0o755)
    return decoy


def assert_untouched(decoy):
    assert (decoy / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in decoy.iterdir()) == ["precious.txt"]
    assert stat.S_IMODE(os.stat(decoy).st_mode) == 0o755


def test_destroy_removes_only_the_vms_own_directory_whatever_work_dir_says(tmp_path):
    """Item 1: a record whose work_dir names a decoy folder → destroy removes vms/<name> only; decoy intact."""
    handle = make_vm(tmp_path, "attacker")
    decoy = decoy_dir(tmp_path)
    edit_record("attacker", work_dir=str(decoy), overlay_path=str(decoy / "precious.txt"))
    assert VmManager().get("attacker").work_dir == handle.work_dir  # derived, the stored one ignored
    VmManager().destroy("attacker")
    assert_untouched(decoy)
    assert not os.path.exists(handle.work_dir)


def test_pidfile_and_sockets_come_from_the_name_not_the_record(tmp_path):
    """Item 1/2 (paths): another VM's pidfile and sockets in a record → the attacker's own paths are used."""
    victim = make_vm(tmp_path, "victim")
    make_vm(tmp_path, "attacker")
    edit_record("attacker", pidfile=os.path.join(victim.work_dir, "qemu.pid"),
                qmp_socket=os.path.join(victim.work_dir, "qmp.sock"), console_socket=os.path.join(victim.work_dir, "console.sock"),
                console_log=os.path.join(victim.work_dir, "console.log"), known_hosts=os.path.join(victim.work_dir, "known_hosts"))
    attacker = VmManager().get("attacker")
    own = os.path.join(data_dir(), "vms", "attacker")
    for field in ("pidfile", "qmp_socket", "console_socket", "console_log", "known_hosts"):
        assert os.path.dirname(getattr(attacker, field)) == own, field
    from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
    assert QemuBackend()._process(attacker).pidfile == os.path.join(own, "qemu.pid")


def test_a_symlink_at_vms_name_is_refused_and_its_target_untouched(tmp_path):
    """Item 3: vms/<name> → decoy dir: create refuses with an error naming the link; decoy mode and contents unchanged."""
    decoy = decoy_dir(tmp_path)
    os.makedirs(os.path.join(data_dir(), "vms"))
    os.symlink(str(decoy), os.path.join(data_dir(), "vms", "web"))
    with pytest.raises(VmctlError) as exc:
        make_vm(tmp_path, "web")
    assert exc.value.code == "vmctl.store.unsafe_path" and "symbolic link" in exc.value.message
    assert os.path.join("vms", "web") in exc.value.message and exc.value.hint
    assert_untouched(decoy)
    assert VmManager().find("web") is None  # nothing half-made in the store
    with pytest.raises(VmctlError, match="nothing was removed"):
        VmManager().destroy("web")  # the leftover link is refused by removal too, never followed
    assert_untouched(decoy)


def test_a_symlink_at_vms_is_refused(tmp_path):
    """Item 3: vms/ itself a link → refused, the decoy stays empty of VM files."""
    decoy = decoy_dir(tmp_path)
    os.makedirs(data_dir())
    os.symlink(str(decoy), os.path.join(data_dir(), "vms"))
    with pytest.raises(VmctlError, match="symbolic link"):
        make_vm(tmp_path, "web")
    assert_untouched(decoy)


def test_a_symlinked_file_inside_the_vm_dir_is_refused(tmp_path):
    """Item 3: a VM file (console.log) planted as a link → refused before anything writes through it."""
    handle = make_vm(tmp_path, "web")
    target = tmp_path / "target.txt"
    target.write_text("keep")
    os.symlink(str(target), os.path.join(handle.work_dir, "console.log"))
    from ansible_collections.vmctl.core.plugins.module_utils import paths
    with pytest.raises(VmctlError, match="symbolic link"):
        paths.make_vm_dir(handle.work_dir)  # what every backend's prepare (and QEMU's start) calls
    assert target.read_text() == "keep"


@pytest.mark.parametrize("field,value", [("ssh_host_port", "abc"), ("vcpus", "lots"), ("memory_mb", -1),
                                         ("state", "exploded"), ("network", {"type": "Tap", "bridge": "x" * 21}),
                                         ("pid", "1; rm"), ("mac_addr", 7), ("backend", "xen"),
                                         ("provision", {"digest": 5, "completed": "yes"}), ("vnc", "no")])
def test_a_bad_record_names_vm_and_field_and_the_others_stay_usable(tmp_path, field, value):
    """Item 5: a bad field → BadRecord naming VM and field for that VM; list shows the others and reports it."""
    make_vm(tmp_path, "good")
    make_vm(tmp_path, "bad")
    edit_record("bad", **{field: value})
    manager = VmManager()
    with pytest.raises(BadRecord) as exc:
        manager.get("bad")
    assert "VM bad: field %s" % field in exc.value.message and exc.value.hint
    assert list(manager.list()) == ["good"] and list(manager.store.bad) == ["bad"]
    manager.start("good")  # the others stay usable, and a write keeps the bad record as it was
    with open(os.path.join(data_dir(), "vms.json")) as f:
        assert json.load(f)["bad"][field] == value


def test_list_of_the_real_executable_reports_the_bad_record(tmp_path):
    """Item 5 through vmctl: ``list`` prints the good VM, an error naming the bad one's field, exit 1."""
    make_vm(tmp_path, "good")
    make_vm(tmp_path, "bad")
    edit_record("bad", ssh_host_port="abc")
    proc = subprocess.run([VMCTL, "list"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "good" in proc.stdout and "bad record" in proc.stdout
    assert "VM bad: field ssh_host_port must be a port number" in proc.stderr
    proc = subprocess.run([VMCTL, "status", "bad"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "field ssh_host_port" in proc.stderr and "Traceback" not in proc.stderr


def test_the_provision_field_and_unknown_fields_are_kept(tmp_path):
    """The lead's ``provision`` record field is accepted; unknown fields survive a rewrite."""
    make_vm(tmp_path, "web")
    edit_record("web", provision={"digest": "abc", "completed": True}, future={"x": [1]})
    manager = VmManager()
    assert manager.get("web").provision == {"digest": "abc", "completed": True}
    manager.start("web")
    with open(os.path.join(data_dir(), "vms.json")) as f:
        record = json.load(f)["web"]
    assert record["provision"] == {"digest": "abc", "completed": True} and record["future"] == {"x": [1]}
    assert record["state"] == "running"


def test_a_stored_name_with_a_newline_is_a_bad_record(tmp_path):
    """Item 9: an entry ``abc\\n`` (made by the old regex) is reported, never used as a path."""
    make_vm(tmp_path, "good")
    path = os.path.join(data_dir(), "vms.json")
    with open(path) as f:
        data = json.load(f)
    data["abc\n"] = dict(data["good"], name="abc\n", id="x2")
    with open(path, "w") as f:
        json.dump(data, f)
    manager = VmManager()
    assert list(manager.list()) == ["good"] and "field name" in manager.store.bad["abc\n"].message


def test_the_file_stays_the_guides_json_object_one_record_per_line(tmp_path):
    """The written store is one JSON object keyed by VM name (the guide's vms.json), a line per record."""
    make_vm(tmp_path, "a")
    make_vm(tmp_path, "b")
    with open(os.path.join(data_dir(), "vms.json")) as f:
        text = f.read()
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == 4
    data = json.loads(text)
    assert set(data) == {"a", "b"} and data["a"]["network"] == {"type": "User"} and data["a"]["work_dir"].endswith("/vms/a")


def test_one_store_read_per_list(tmp_path, monkeypatch):
    """Item 11: ``vmctl list`` reads vms.json once, not once per VM."""
    for i in range(5):
        make_vm(tmp_path, "vm%d" % i)
    from ansible_collections.vmctl.core.plugins.module_utils import store
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli import main as cli
    reads = []
    original = store.VmStore._read
    monkeypatch.setattr(store.VmStore, "_read", lambda self: reads.append(1) or original(self))
    assert cli.main(["list"]) == 0
    assert len(reads) == 1


def test_vm_state_absent_destroys_a_vm_with_a_bad_record_from_its_name(tmp_path):
    """Bad input: a record with ``memory_mb: -1`` and a work_dir naming a decoy. Gets: ``vm state=absent`` in check
    mode plans the destroy and touches nothing; then removes vms/<name> and the entry, never the decoy."""
    from ansible_collections.vmctl.core.plugins.module_utils import reconcile
    handle = make_vm(tmp_path, "broken")
    decoy = decoy_dir(tmp_path)
    edit_record("broken", memory_mb=-1, work_dir=str(decoy))
    planned = reconcile.ensure_absent(VmManager(), "broken", check_mode=True)
    assert planned.changed and planned.actions == ["destroy"] and "memory_mb" in planned.diff["before"]["bad_record"]
    assert os.path.isdir(handle.work_dir)
    done = reconcile.ensure_absent(VmManager(), "broken")
    assert done.changed and not os.path.exists(handle.work_dir) and VmManager().find("broken") is None
    assert_untouched(decoy)
    assert not reconcile.ensure_absent(VmManager(), "broken").changed


def test_a_vm_folder_too_deep_for_its_sockets_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    """Bad input: a data directory so deep that <vms>/<name>/console.sock passes the 107 bytes of a UNIX socket path.
    create says so (the path, its length, the hint to shorten the name or XDG_DATA_HOME), and nothing is made."""
    deep = tmp_path / ("d" * (100 - len(str(tmp_path))))
    monkeypatch.setenv("XDG_DATA_HOME", str(deep))
    with pytest.raises(VmctlError) as exc:
        make_vm(tmp_path, "a-rather-long-vm-name")
    assert exc.value.code == "vmctl.vm.invalid_spec" and "too deep for its sockets" in exc.value.message
    assert "console.sock" in exc.value.message and "XDG_DATA_HOME" in exc.value.hint
    assert VmManager().find("a-rather-long-vm-name") is None
    assert not os.path.exists(os.path.join(data_dir(), "vms", "a-rather-long-vm-name"))
