"""Bad input gets a clear error with a stable code and a hint."""

import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend, qemu_escape
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    ImageNotFound, InvalidName, InvalidSpec, ToolMissing,
)
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec, validate_name


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a,b", "", "-x", "a b", "x" * 64, "ä", None, "a\nb"])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidName) as exc:
        validate_name(name)
    assert exc.value.code == "vmctl.vm.invalid_name"
    assert "A-Z a-z 0-9" in exc.value.hint


@pytest.mark.parametrize("name", ["web", "web-1.example", "a", "A_b", "x" * 63])
def test_good_names_pass(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("field,value", [("vcpus", 0), ("vcpus", 65537), ("vcpus", True), ("memory_mb", 0),
                                         ("memory_mb", "1024"), ("disk_gb", 0), ("accel", "hvf"), ("backend", "xen")])
def test_out_of_range_spec_values(field, value):
    with pytest.raises(InvalidSpec) as exc:
        VmSpec(name="vm1", image_path="/x", **{field: value})
    assert field.split("_")[0] in str(exc.value)


def test_missing_base_image_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.qcow2")
    with pytest.raises(ImageNotFound) as exc:
        VmManager().create(VmSpec(name="vm1", image_path=missing))
    assert missing in str(exc.value) and exc.value.hint
    assert VmManager().list() == {}  # nothing half-made left behind
    assert not os.path.exists(os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "vms", "vm1"))


def test_missing_qemu_img_says_which_package(tmp_path, monkeypatch):
    image = tmp_path / "base.img"
    image.write_bytes(b"\0" * 1024)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(ToolMissing) as exc:
        qemu_img.create_overlay(str(image), str(tmp_path / "o.qcow2"))
    assert "qemu-img" in str(exc.value) and "qemu-utils" in exc.value.hint


@pytest.mark.parametrize("hostname", ["web\nssh_authorized_keys: [evil]", "web\n- evil", "a b", "-web", "x" * 64, ""])
def test_hostname_cannot_inject_into_user_data(hostname):
    with pytest.raises(InvalidSpec) as exc:
        cloudinit.build_user_data("vm", ["ssh-ed25519 AAAA k"], hostname)
    assert exc.value.code == "vmctl.cloudinit.invalid_hostname"


def test_user_data_is_yaml_with_the_guides_content():
    import yaml
    from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
    host = keys.generate_ed25519("host")
    text = cloudinit.build_user_data("ubuntu", ["ssh-ed25519 AAAAkey me@x"], "web.example.org", host)
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    user = data["users"][0]
    assert user["name"] == "ubuntu" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["shell"] == "/bin/bash"
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAkey me@x"]
    assert data["disable_root"] is True and data["manage_etc_hosts"] is True
    assert data["hostname"] == "web" and data["fqdn"] == "web.example.org"
    assert data["ssh_keys"]["ed25519_private"] == host.private_openssh
    assert "ssh_genkeytypes" not in data  # fails Debian 12's schema


def test_seed_iso_has_cidata_volume_and_files(tmp_path):
    path = str(tmp_path / "seed.iso")
    cloudinit.write_seed_iso(path, "#cloud-config\n{}\n", "instance-id: i-1\n")
    with open(path, "rb") as f:
        f.seek(16 * 2048 + 40)
        assert f.read(6) == b"cidata"
    assert read_seed_iso(path) == {"user-data": b"#cloud-config\n{}\n", "meta-data": b"instance-id: i-1\n"}


def read_seed_iso(path):
    """{name: bytes} of a seed ISO's files (by Rock Ridge name), read back with pycdlib."""
    import io
    import pycdlib
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        result = {}
        for child in iso.list_children(rr_path="/"):
            name = child.rock_ridge.name().decode() if child.rock_ridge else None
            if child.is_file() and name:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path="/" + name)
                result[name] = out.getvalue()
        return result
    finally:
        iso.close()


def test_commas_in_paths_are_escaped(tmp_path):
    from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
    work = str(tmp_path / "we,ird")
    handle = VmHandle(id="1", name="vm1", work_dir=work, ssh_host_port=10022, mac_addr="52:54:00:00:00:01",
                      seed_iso_path=work + "/seed.iso", accel="tcg")
    argv = QemuBackend().command_line(handle)
    drive = argv[argv.index("-drive") + 1]
    assert drive.startswith("file=%s/overlay.qcow2," % work.replace(",", ",,"))
    assert qemu_escape("a,b,c") == "a,,b,,c"
    net = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in net  # loopback only
    assert argv[argv.index("-vnc") + 1] == "unix:%s/vnc.sock" % work.replace(",", ",,")  # local to its owner, not TCP
    assert argv[argv.index("-cpu") + 1] == "max"
