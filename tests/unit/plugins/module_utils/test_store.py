"""The VM registry: locked read-modify-write, atomic writes, corrupt files named."""

import json
import multiprocessing
import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.errors import StoreError, VmNotFound
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig, VmHandle

GUIDE_HANDLE = {
    "id": "abc123", "name": "myvm", "backend": "qemu",
    "work_dir": "/home/user/.local/share/vmctl/vms/myvm",
    "overlay_path": "/home/user/.local/share/vmctl/vms/myvm/overlay.qcow2",
    "seed_iso_path": "/home/user/.local/share/vmctl/vms/myvm/seed.iso", "pid": 12345,
    "qmp_socket": "/home/user/.local/share/vmctl/vms/myvm/qmp.sock",
    "console_socket": "/home/user/.local/share/vmctl/vms/myvm/console.sock",
    "vnc_addr": "127.0.0.1:5900", "vcpus": 2, "memory_mb": 2048, "disk_gb": 20,
    "network": {"type": "User"}, "ssh_host_port": 10042, "mac_addr": "52:54:00:ab:cd:ef",
}


def test_reads_the_guides_store_layout_and_keeps_unknown_fields(tmp_path):
    path = tmp_path / "vms.json"
    entry = dict(GUIDE_HANDLE, future_field={"x": 1})
    path.write_text(json.dumps({"myvm": entry}))
    store = VmStore(str(path))
    handle = store.get("myvm")
    assert handle.vcpus == 2 and handle.network.type == "user" and handle.ssh_host_port == 10042
    assert handle.state == "prepared" and handle.vmfile is None  # additions defaulted
    store.put(handle.replace(vcpus=3))
    written = json.loads(path.read_text())["myvm"]
    assert written["future_field"] == {"x": 1}
    assert written["network"] == {"type": "User"}
    kept = [k for k in GUIDE_HANDLE if k != "vcpus" and not k.endswith(("_dir", "_path", "_socket"))]
    assert {k: written[k] for k in kept} == {k: GUIDE_HANDLE[k] for k in kept}
    # the guide's paths are under another home: ignored, the VM's own paths (under this store) are written
    own = str(tmp_path / "vms" / "myvm")
    assert written["work_dir"] == own and written["overlay_path"] == own + "/overlay.qcow2"
    assert written["qmp_socket"] == own + "/qmp.sock" and written["seed_iso_path"] == own + "/seed.iso"


def test_tap_network_round_trip():
    net = NetworkConfig(type="tap")
    assert net.bridge == "br0" and net.to_json() == {"type": "Tap", "bridge": "br0"}
    assert NetworkConfig.from_json({"type": "Tap", "bridge": "br1"}).bridge == "br1"
    assert NetworkConfig.from_json({"type": "Vnic", "name": "vnic0"}).to_json() == {"type": "Vnic", "name": "vnic0"}


def _add_entries(path, worker, count):
    store = VmStore(path)
    for i in range(count):
        with store.transaction() as vms:
            name = "w%d-%d" % (worker, i)
            vms[name] = VmHandle(id=name, name=name)


def test_sixteen_processes_changing_the_store_lose_no_entry(tmp_path):
    """16 concurrent writers (the per-line store and its journal keep the flock read-modify-write): no
    entry lost; once the journal is folded in, vms.json alone (the guide's layout) holds every entry."""
    path = str(tmp_path / "vms.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_entries, args=(path, w, 15)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(VmStore(path).list()) == 16 * 15
    VmStore(path).compact()
    assert not os.path.exists(path + ".journal")
    with open(path) as f:
        assert len(json.load(f)) == 16 * 15
    assert len(VmStore(path).list()) == 16 * 15


@pytest.mark.parametrize("content", [b'{"myvm": {"id": "abc", "name": "myvm", "ba', b"", b"[1, 2]", b"\xff\xfe"])
def test_unreadable_store_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "vms.json"
    path.write_bytes(content)
    with pytest.raises(StoreError) as exc:
        VmStore(str(path)).list()
    assert str(path) in str(exc.value)
    assert exc.value.code == "vmctl.store.corrupt"
    assert exc.value.hint
    # and a write attempt never replaces it
    with pytest.raises(StoreError):
        with VmStore(str(path)).transaction() as vms:
            vms.clear()
    assert path.read_bytes() == content


def test_missing_vm_is_not_found(tmp_path):
    with pytest.raises(VmNotFound) as exc:
        VmStore(str(tmp_path / "vms.json")).get("ghost")
    assert "ghost" in str(exc.value) and "vmctl list" in exc.value.hint


def test_reading_a_missing_store_creates_nothing(tmp_path):
    store = VmStore(str(tmp_path / "vmctl" / "vms.json"))
    assert store.list() == {} and store.find("ghost") is None
    assert not (tmp_path / "vmctl").exists()  # no directory, no lock file: check mode leaves no trace


def test_write_is_atomic_and_private(tmp_path):
    path = tmp_path / "vms.json"
    VmStore(str(path)).put(VmHandle(id="a", name="a"))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
