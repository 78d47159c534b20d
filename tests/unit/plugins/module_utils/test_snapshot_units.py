"""Snapshot bookkeeping and console key decoding without a guest: the store checks snapshot records on load,
a backend without snapshots refuses clearly, the console's key escapes and offsets."""

import json
import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.console import decode_keys, shown
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidName, InvalidSpec, SnapshotUnsupported
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec
from ansible_collections.vmctl.core.plugins.module_utils.store import BadRecord

GOOD = {"name": "base", "ram": True, "size": 4096, "vm_state_size": 1024, "created_at": 1796276276.5}


def _vm(tmp_path, name, snapshots=None):
    image = tmp_path / "base.img"
    image.write_bytes(b"")
    VmManager().create(VmSpec(name=name, image_path=str(image), backend="noop"))
    if snapshots is not None:
        path = os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "vms.json")
        with open(path) as f:
            data = json.load(f)
        data[name]["snapshots"] = snapshots
        with open(path, "w") as f:
            json.dump(data, f)


def test_good_snapshot_records_load_and_are_kept(tmp_path):
    _vm(tmp_path, "vm1", [GOOD, dict(GOOD, name="cold", ram=False, vm_state_size=0)])
    assert [s["name"] for s in VmManager().get("vm1").snapshots] == ["base", "cold"]


@pytest.mark.parametrize("snapshots,field", [
    ("base", "snapshots"), (["base"], "snapshots[0]"), ([dict(GOOD, name="../x")], "snapshots[0].name"),
    ([GOOD, GOOD], "snapshots[1].name"), ([dict(GOOD, ram="yes")], "snapshots[0].ram"),
    ([dict(GOOD, size=-1)], "snapshots[0].size"), ([dict(GOOD, created_at="today")], "snapshots[0].created_at"),
    ([dict(GOOD, vm_state_size=True)], "snapshots[0].vm_state_size")])
def test_a_bad_snapshot_record_is_a_bad_record_naming_the_field(tmp_path, snapshots, field):
    """Bad input: a hand-edited snapshots field → BadRecord naming the VM and the field; the other VMs stay usable."""
    _vm(tmp_path, "good")
    _vm(tmp_path, "bad", snapshots)
    manager = VmManager()
    with pytest.raises(BadRecord) as caught:
        manager.get("bad")
    assert "VM bad: field %s " % field in caught.value.message and caught.value.hint
    assert list(manager.list()) == ["good"]


def test_a_backend_without_snapshots_refuses_each_operation(tmp_path):
    """Bad input: snapshots of a VM whose backend has none (noop here, propolis alike) → SnapshotUnsupported."""
    _vm(tmp_path, "nosnap")
    manager = VmManager()
    for call in (lambda: manager.snapshot_create("nosnap", "s"), lambda: manager.snapshot_revert("nosnap", "s"),
                 lambda: manager.snapshot_delete("nosnap", "s")):
        with pytest.raises(SnapshotUnsupported, match="the noop backend has no snapshots"):
            call()
    from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.backend import PropolisBackend
    handle = manager.get("nosnap").replace(backend="propolis")
    with pytest.raises(SnapshotUnsupported, match="propolis backend has no snapshots") as caught:
        PropolisBackend().snapshot_create(handle, "s")
    assert "qemu backend" in caught.value.hint
    with pytest.raises(InvalidName, match="invalid snapshot name"):
        manager.snapshot_create("nosnap", "a b")


def test_key_escapes():
    """Bad input: an unknown escape is refused with the list of known ones."""
    assert decode_keys("root\\r") == b"root\r"
    assert decode_keys("\\cc\\cD\\e\\t\\n\\\\\\x41") == b"\x03\x04\x1b\t\n\\A"
    assert decode_keys("real\r\x03") == b"real\r\x03" and decode_keys("trailing\\") == b"trailing\\"
    assert decode_keys("é") == "é".encode()
    for bad in ("\\q", "\\x4", "\\c1"):
        with pytest.raises(InvalidSpec, match="unknown key escape"):
            decode_keys(bad)


def test_shown_lines_drop_carriage_returns_and_bad_bytes():
    assert shown(b"a\r\nb\xff\r\n") == ["a", "b\ufffd", ""]
    assert shown(b"") == []
