"""Issue 14's pure parts: port forwards, shares and firmware checked, parsed (VMFile, CLI), turned into QEMU's argv
and cloud-init's mounts; a taken host port named by its holder; the OVMF pair picked from QEMU's descriptors.
Each bad input says what it gets."""

import json
import os
import socket

import pytest
import yaml

from ansible_collections.vmctl.core.plugins.module_utils import forwards
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import devices
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
from ansible_collections.vmctl.core.plugins.module_utils.errors import BadRecord, InvalidSpec, PortInUse, ToolMissing
from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit, shares
from ansible_collections.vmctl.core.plugins.module_utils.model import CloudInitConfig, SshConfig, VmHandle, VmSpec
from ansible_collections.vmctl.core.plugins.module_utils.specs import spec_from_record
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import main as cli


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- forwards -----------------------------------------------------------------------------------------

def test_a_forward_gets_its_defaults_and_the_cli_spellings_parse():
    assert forwards.check_forwards([{"host": 8080, "guest": 80}]) == [
        {"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}]
    assert forwards.parse("8080:80") == {"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}
    assert forwards.parse("5353:53/udp")["protocol"] == "udp"
    assert forwards.parse("0.0.0.0:8443:443")["address"] == "0.0.0.0"


@pytest.mark.parametrize("value,message", [
    ({"host": 0, "guest": 80}, "host port must be a whole number from 1 to 65535, got 0"),
    ({"host": 8080, "guest": 70000}, "guest port must be a whole number from 1 to 65535, got 70000"),
    ({"host": "8080", "guest": 80}, "host port must be a whole number"),
    ({"host": 8080, "guest": 80, "protocol": "sctp"}, "unknown forward protocol 'sctp'"),
    ({"host": 8080, "guest": 80, "address": "localhost"}, "forward address must be an IPv4 address"),
    ({"host": 8080, "guest": 80, "hots": 1}, "unknown port forward setting hots"),
    ("8080:80", "a port forward must be a dict"),
])
def test_a_bad_forward_is_refused_with_what_is_wrong(value, message):
    """Bad input: out-of-range ports, a quoted port, unknown protocol/address/key, a string: InvalidSpec naming it."""
    with pytest.raises(InvalidSpec) as err:
        forwards.check_forwards([value])
    assert message in err.value.message and err.value.hint


def test_one_host_port_twice_and_a_bad_cli_spelling_are_refused():
    """Bad input: host port 8080 forwarded to two guest ports; `--forward 80`: refused, with the form to write."""
    with pytest.raises(InvalidSpec, match="host port 127.0.0.1:8080/tcp is forwarded twice"):
        forwards.check_forwards([{"host": 8080, "guest": 80}, {"host": 8080, "guest": 81}])
    assert len(forwards.check_forwards([{"host": 53, "guest": 53}, {"host": 53, "guest": 53, "protocol": "udp"}])) == 2
    with pytest.raises(InvalidSpec) as err:
        forwards.parse("80")
    assert "HOST:GUEST" in err.value.hint


def test_a_forward_beyond_loopback_is_warned_about():
    warned = forwards.exposure_warnings("web", forwards.check_forwards([{"host": 1, "guest": 2}, {"host": 3, "guest": 4, "address": "0.0.0.0"}]))
    assert len(warned) == 1 and "0.0.0.0" in warned[0] and "other hosts" in warned[0]


def test_forwards_need_user_networking():
    """Bad input: a forward on a TAP VM: the spec is refused (hostfwd exists on the user network only)."""
    with pytest.raises(InvalidSpec, match="port forwards need user networking, not tap"):
        VmSpec(name="a", image_path="/x", network={"type": "tap", "bridge": "br0"}, port_forwards=[{"host": 8080, "guest": 80}])


class FakeKnown:
    """The store's records as ``allocate`` sees them."""

    def __init__(self, records):
        self.records = records

    def raw_items(self):
        return iter(self.records.items())


def test_a_taken_host_port_names_the_vm_that_holds_it_or_another_program():
    """Bad input: a host port another VM forwards, another's SSH port, a port a decoy socket holds, a port below
    1024 (as a user): PortInUse naming the VM, or "another program", or root."""
    port = free_port()
    known = FakeKnown({"web": {"port_forwards": [{"host": port, "guest": 80}], "network": {"type": "User"}},
                       "db": {"ssh_host_port": port + 1, "network": {"type": "User"}}})
    with pytest.raises(PortInUse, match="host port 127.0.0.1:%d/tcp is already forwarded by VM web" % port):
        forwards.check_free("new", forwards.check_forwards([{"host": port, "guest": 80}]), known)
    with pytest.raises(PortInUse, match="already forwarded by VM db"):
        forwards.check_free("new", forwards.check_forwards([{"host": port + 1, "guest": 80}]), known)
    forwards.check_free("web", forwards.check_forwards([{"host": port, "guest": 80}]), known)  # its own forward
    # at start only a running holder is named; a stopped one holds nothing
    forwards.check_free("new", forwards.check_forwards([{"host": port, "guest": 80}]), known, running_holder=lambda name: False)
    with socket.socket() as decoy:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen()
        taken = decoy.getsockname()[1]
        with pytest.raises(PortInUse, match="host port 127.0.0.1:%d/tcp is in use by another program" % taken) as err:
            forwards.check_free("new", forwards.check_forwards([{"host": taken, "guest": 80}]), FakeKnown({}))
        assert err.value.details["holder"] is None and "ss -ltnup" in err.value.hint
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as decoy:
        decoy.bind(("127.0.0.1", 0))
        taken = decoy.getsockname()[1]
        with pytest.raises(PortInUse, match="/udp is in use by another program"):
            forwards.check_free("new", forwards.check_forwards([{"host": taken, "guest": 53, "protocol": "udp"}]), FakeKnown({}))
    with pytest.raises(PortInUse, match="not an address of this host"):
        forwards.check_free("new", forwards.check_forwards([{"host": free_port(), "guest": 80, "address": "192.0.2.1"}]),
                            FakeKnown({}))


def test_the_ssh_port_avoids_every_forwarded_port():
    others = [{"port_forwards": [{"host": 10022, "guest": 80}]}, {"ssh_host_port": 10023}]
    assert QemuBackend._taken_ports(others, [{"host": 10024, "guest": 1, "protocol": "tcp"}]) >= {10022, 10023, 10024}


# --- shares -------------------------------------------------------------------------------------------

def test_shares_are_checked_and_the_cli_spelling_parses(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    assert shares.parse("src:/mnt/src") == {"source": str(tmp_path / "src"), "guest": "/mnt/src", "readonly": False}
    assert shares.parse("./src:/mnt/src:ro")["readonly"] is True
    assert shares.check_shares([{"source": "src", "guest": "/mnt/x/"}])[0]["guest"] == "/mnt/x"


@pytest.mark.parametrize("value,message", [
    ({"source": "nothere", "guest": "/mnt/x"}, "does not exist"),
    ({"source": "file", "guest": "/mnt/x"}, "is not a folder"),
    ({"source": "src", "guest": "mnt/x"}, "must be an absolute folder path"),
    ({"source": "src", "guest": "/"}, "must be an absolute folder path"),
    ({"source": "src", "guest": "/mnt/my src"}, "must be an absolute folder path"),
    ({"source": "src", "guest": "/mnt/a,b"}, "must be an absolute folder path"),
    ({"source": "src", "guest": "/mnt/../etc"}, "must be an absolute folder path"),
    ({"source": "src", "guest": "/mnt/x", "readonly": "yes"}, "readonly must be true or false"),
    ({"source": "src", "guest": "/mnt/x", "mode": 1}, "unknown share setting mode"),
])
def test_a_bad_share_is_refused_with_what_is_wrong(tmp_path, monkeypatch, value, message):
    """Bad input: a missing folder, a file, a relative / root / blank / comma / .. guest path, a string readonly,
    an unknown key: InvalidSpec naming it, with a hint."""
    (tmp_path / "src").mkdir()
    (tmp_path / "file").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidSpec) as err:
        shares.check_shares([value])
    assert message in err.value.message and err.value.hint


def test_two_shares_at_one_guest_path_and_a_bad_cli_spelling_are_refused(tmp_path):
    """Bad input: two shares at /mnt/x; `--share onlyone`: refused."""
    with pytest.raises(InvalidSpec, match="two shares are mounted at /mnt/x"):
        shares.check_shares([{"source": str(tmp_path), "guest": "/mnt/x"}] * 2)
    with pytest.raises(InvalidSpec, match="is not SRC:DST"):
        shares.parse("onlyone")


def test_shares_become_cloud_init_mounts_and_their_seed_fingerprint(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    text = cloudinit.build_user_data("vm", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests x"], "web",
                                     mounts=shares.mounts(shares.check_shares([{"source": str(tmp_path / "a"), "guest": "/mnt/a"},
                                                                              {"source": str(tmp_path / "b"), "guest": "/srv",
                                                                               "readonly": True}])))
    config = yaml.safe_load(text)
    assert config["mounts"] == [["vmctl:0", "/mnt/a", "9p", "trans=virtio,version=9p2000.L,msize=524288,nofail", "0", "0"],
                                ["vmctl:1", "/srv", "9p", "trans=virtio,version=9p2000.L,msize=524288,nofail,ro", "0", "0"]]

    def digest(source, guest):
        return cloudinit.cloud_init_digest(VmSpec(name="web", image_path="/x", cloud_init=CloudInitConfig(generate_key=True),
                                                  ssh=SshConfig(), shares=[{"source": source, "guest": guest}]))
    plain = cloudinit.cloud_init_digest(VmSpec(name="web", image_path="/x", cloud_init=CloudInitConfig(generate_key=True), ssh=SshConfig()))
    assert digest(str(tmp_path / "a"), "/mnt/a") == digest(str(tmp_path / "b"), "/mnt/a")  # the source is not in the seed
    assert digest(str(tmp_path / "a"), "/mnt/a") != digest(str(tmp_path / "a"), "/mnt/b") != plain


# --- QEMU's argv --------------------------------------------------------------------------------------

def handle_with(tmp_path, **fields):
    work = tmp_path / "vm"
    work.mkdir(exist_ok=True)
    return VmHandle(id="x", name="web", work_dir=str(work), ssh_host_port=10022, mac_addr="52:54:00:00:00:01", accel="tcg",
                    **fields)


def test_the_argv_has_the_forwards_the_shares_and_no_firmware_by_default(tmp_path):
    (tmp_path / "s,1").mkdir()
    handle = handle_with(tmp_path, port_forwards=forwards.check_forwards([{"host": 8080, "guest": 80},
                                                                          {"host": 5353, "guest": 53, "protocol": "udp"}]),
                         shares=shares.check_shares([{"source": str(tmp_path / "s,1"), "guest": "/mnt/s", "readonly": True}]))
    argv = QemuBackend().command_line(handle)
    assert argv[argv.index("-netdev") + 1] == \
        "user,id=net0,hostfwd=tcp:127.0.0.1:10022-:22,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53"
    virtfs = "local,id=share0,path=%s/s,,1,mount_tag=vmctl:0,security_model=mapped-xattr,readonly=on" % tmp_path
    assert argv[argv.index("-virtfs") + 1] == virtfs
    assert not any("pflash" in a for a in argv)


def test_a_tampered_record_never_reaches_the_argv(tmp_path):
    """Bad input: a stored forward whose address smuggles another option: refused when the argv is built."""
    handle = handle_with(tmp_path, port_forwards=[{"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1,x=y"}])
    with pytest.raises(InvalidSpec, match="forward address must be an IPv4 address"):
        QemuBackend().command_line(handle)


def test_uefi_boots_a_matched_ovmf_pair_with_the_vms_own_vars(tmp_path):
    code, template = devices.find_ovmf()
    assert os.path.dirname(code) == os.path.dirname(template) and "CODE" in code and "VARS" in template
    argv = QemuBackend().command_line(handle_with(tmp_path, firmware="uefi"))
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive" and "pflash" in argv[i + 1]]
    own = str(tmp_path / "vm" / "OVMF_VARS.fd")
    assert drives == ["if=pflash,format=raw,unit=0,readonly=on,file=%s" % code, "if=pflash,format=raw,unit=1,file=%s" % own]
    assert open(own, "rb").read() == open(template, "rb").read() and oct(os.stat(own).st_mode & 0o777) == "0o600"


def descriptor(directory, name, code, vars_, features=()):
    (directory / name).write_text(json.dumps({
        "interface-types": ["uefi"], "features": list(features), "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
        "mapping": {"device": "flash", "executable": {"filename": str(code)}, "nvram-template": {"filename": str(vars_)}}}))


def test_the_ovmf_pair_comes_from_one_descriptor_and_missing_ovmf_names_the_package(tmp_path):
    """Bad input: descriptors pointing at decoy firmware files in tmp (a Secure Boot one first, a broken one), then
    none at all: the plain pair is picked, and with no files the error names apt-get install ovmf."""
    for name in ("sb_code", "sb_vars", "code", "vars"):
        (tmp_path / name).write_bytes(b"x")
    descriptor(tmp_path, "40-secure.json", tmp_path / "sb_code", tmp_path / "sb_vars", features=["secure-boot", "requires-smm"])
    (tmp_path / "50-broken.json").write_text("{not json")
    descriptor(tmp_path, "60-plain.json", tmp_path / "code", tmp_path / "vars")
    assert devices.find_ovmf(str(tmp_path), fallback=()) == (str(tmp_path / "code"), str(tmp_path / "vars"))
    os.unlink(tmp_path / "vars")  # a CODE whose VARS is gone is never paired with another VARS
    with pytest.raises(ToolMissing) as err:
        devices.find_ovmf(str(tmp_path), fallback=((str(tmp_path / "none_code"), str(tmp_path / "none_vars")),))
    assert "OVMF" in err.value.message and "apt-get install ovmf" in err.value.hint


def test_an_unknown_firmware_is_refused():
    """Bad input: firmware "efi": InvalidSpec listing bios, uefi."""
    with pytest.raises(InvalidSpec) as err:
        VmSpec(name="a", image_path="/x", firmware="efi")
    assert "unknown firmware 'efi'" in err.value.message and "bios, uefi" in err.value.hint


def test_a_share_folder_gone_since_create_is_refused(tmp_path):
    """Bad input: a share whose folder is gone since create: an error at start naming it."""
    gone = tmp_path / "gone"
    with pytest.raises(InvalidSpec, match="share source %s does not exist" % gone):
        devices.check_share_sources("web", [{"source": str(gone), "guest": "/mnt", "readonly": False}])


# --- the store, the VMFile, the CLI, reconciliation --------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("port_forwards", [{"host": 99999, "guest": 80}], "field port_forwards is wrong"),
    ("shares", [{"source": "/x", "guest": "relative"}], "field shares is wrong"),
    ("firmware", "coreboot", "field firmware must be one of bios, uefi"),
])
def test_a_bad_stored_field_is_a_bad_record(vmctl_data_home, field, value, message):
    """Bad input: a store entry (our own test store) with a broken forward, share or firmware: BadRecord naming it."""
    store = VmStore()
    store.put(VmHandle(id="x", name="web"))
    with open(store.path) as f:
        data = json.load(f)
    entry = data["vms"]["web"] if "vms" in data else data["web"]
    entry[field] = value
    with open(store.path, "w") as f:
        json.dump(data, f)
    with pytest.raises(BadRecord) as err:
        VmStore().get("web")
    assert message in err.value.message


VMFILE_V1 = '''\
vm "web" {
    image "disk.qcow2"
    port-forward host=8080 guest=80
    port-forward host=5353 guest=53 protocol="udp" address="0.0.0.0"
    share "./src" guest="/mnt/src"
    share "~/data" guest="/data" readonly=true
    firmware "uefi"
    kernel "boot/vmlinuz" {
        initrd "boot/initrd.img"
        append "console=ttyS0"
    }
}
'''
VMFILE_V2 = '''\
vm web {
    image disk.qcow2
    port-forward host=8080 guest=80; port-forward { host 5353; guest 53; protocol udp; address "0.0.0.0" }
    share "./src" guest="/mnt/src"; share "~/data" { guest "/data"; readonly #true }
    firmware uefi
    kernel "boot/vmlinuz" { initrd "boot/initrd.img"; append "console=ttyS0" }
}
'''


@pytest.mark.parametrize("text", [VMFILE_V1, VMFILE_V2], ids=["kdl-v1", "kdl-v2"])
def test_the_vmfile_nodes_in_both_spellings(tmp_path, monkeypatch, text):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    proj = tmp_path / "proj"
    for rel in ("src/", "boot/vmlinuz", "boot/initrd.img", "disk.qcow2"):
        (proj / rel.rstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).mkdir() if rel.endswith("/") else (proj / rel).write_text("x")
    (proj / "VMFile.kdl").write_text(text)
    (record,) = vmfile.load(str(proj / "VMFile.kdl"), cwd=str(tmp_path))  # paths resolve from the VMFile's folder
    assert record["port_forwards"] == [{"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"},
                                       {"host": 5353, "guest": 53, "protocol": "udp", "address": "0.0.0.0"}]
    assert record["shares"] == [{"source": str(proj / "src"), "guest": "/mnt/src", "readonly": False},
                                {"source": str(home / "data"), "guest": "/data", "readonly": True}]
    assert (record["firmware"], record["kernel"], record["initrd"], record["kernel_append"]) == \
        ("uefi", str(proj / "boot/vmlinuz"), str(proj / "boot/initrd.img"), "console=ttyS0")
    spec = spec_from_record(record, str(proj / "disk.qcow2"))
    assert (spec.port_forwards, spec.shares, spec.firmware, spec.kernel) == \
        (record["port_forwards"], record["shares"], "uefi", record["kernel"])


def test_vmctl_create_options(tmp_path, monkeypatch):
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli import vm as cli_vm
    (tmp_path / "site").mkdir()
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["create", "--name", "web", "--image", "d.qcow2", "--forward", "8080:80",
                                          "--forward", "5353:53/udp", "--share", "site:/srv/site:ro", "--uefi"])
    options = cli_vm._device_options(args)
    assert [f["host"] for f in options["port_forwards"]] == [8080, 5353] and options["firmware"] == "uefi"
    assert options["shares"] == [{"source": str(tmp_path / "site"), "guest": "/srv/site", "readonly": True}]
    plain = cli_vm._device_options(cli.build_parser().parse_args(["create", "--name", "web", "--image", "d.qcow2"]))
    assert plain == {"port_forwards": [], "shares": [], "firmware": "bios"}


def test_the_inventory_hands_the_forwards_shares_and_firmware_to_host_vars(vmctl_data_home, tmp_path):
    from ansible_collections.vmctl.core.plugins.plugin_utils.inventory import vm_records
    forward = {"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}
    share = {"source": str(tmp_path), "guest": "/mnt/x", "readonly": True}
    VmStore().put(VmHandle(id="x", name="web", backend="noop", port_forwards=[forward], shares=[share], firmware="uefi"))
    (record,) = vm_records(live_state=False)
    assert (record["hostvars"]["vmctl_port_forwards"], record["hostvars"]["vmctl_shares"], record["hostvars"]["vmctl_firmware"]) == \
        ([forward], [share], "uefi")
