"""Pieces of the Propolis backend that need no server: websocket framing, illumos output parsing,
addresses, the seed's inline/file choice, error messages."""

import io
import os
import platform

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis import websocket
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.backend import (
    SEED_INLINE_MAX, IllumosRunner, PropolisBackend, normalize_mac, parse_arp, parse_zones, zone_name,
)
from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for
from ansible_collections.vmctl.core.plugins.module_utils.errors import IllumosCommandFailed, PropolisError, ToolMissing
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.api import api_error, split_address


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [True, False])
def test_frames_round_trip_at_every_length_encoding(size, mask):
    payload = os.urandom(size)
    frame = websocket.encode_frame(websocket.OP_BINARY, payload, mask=mask)
    fin, opcode, data, masked = websocket.read_frame(io.BytesIO(frame))
    assert (fin, opcode, data, masked) == (True, websocket.OP_BINARY, payload, mask)
    if mask and size:  # masked on the wire: the frame carries the payload XORed with the 4-byte key before it
        key, wire = frame[-size - 4:-size], frame[-size:]
        assert wire == bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
        assert frame[1] & 0x80  # the MASK bit


def test_close_frames_carry_code_and_reason():
    payload = websocket.close_payload(1001, "VM stopped")
    assert websocket.parse_close(payload) == (1001, "VM stopped")
    assert websocket.parse_close(b"") == (1005, "")


def test_truncated_frames_and_reserved_bits_are_errors():
    frame = websocket.encode_frame(websocket.OP_BINARY, b"hello", mask=False)
    with pytest.raises(websocket.WebSocketError):
        websocket.read_frame(io.BytesIO(frame[:-2]))
    with pytest.raises(websocket.WebSocketError):
        websocket.read_frame(io.BytesIO(bytes([0xC2]) + frame[1:]))
    with pytest.raises(EOFError):
        websocket.read_frame(io.BytesIO(b""))


def test_accept_key_is_rfc6455s_example():
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_illumos_output_parsing():
    assert normalize_mac("2:8:20:a:b:c") == normalize_mac("02:08:20:0A:0B:0C") == "02:08:20:0a:0b:0c"
    assert normalize_mac("2\\:8\\:20\\:a\\:b\\:c") == "02:08:20:0a:0b:0c"
    arp = ("Net to Media Table: IPv4\nDevice   IP Address               Mask      Flags      Phys Addr\n"
           "------ -------------------- --------------- -------- ---------------\n"
           "e1000g0 192.168.1.1          255.255.255.255 SPLA     0:c:29:aa:bb:1\n"
           "e1000g0 192.168.1.77         255.255.255.255          2:8:20:a:b:c\n")
    assert parse_arp(arp, "02:08:20:0a:0b:0c") == "192.168.1.77"
    assert parse_arp(arp, "02:08:20:0a:0b:0d") is None
    zones = "0:global:running:/::ipkg:shared\n-:vmctl-web:installed:/zones/vmctl-web:abc:sparse:excl\n"
    assert parse_zones(zones) == {"global": "running", "vmctl-web": "installed"}


def test_zone_names_stay_within_64_characters():
    assert zone_name("web") == "vmctl-web"
    long_name = "a" * 63
    assert len(zone_name(long_name)) <= 64 and zone_name(long_name) != zone_name("a" * 62 + "b")


def test_addresses():
    assert split_address("127.0.0.1:12401") == ("127.0.0.1", 12401)
    assert split_address("10.0.0.5") == ("10.0.0.5", 12400)
    assert split_address("[fd00::5]:80") == ("fd00::5", 80)
    for bad in ("", ":80", "host:port", "host:99999"):
        with pytest.raises(PropolisError):
            split_address(bad)


def test_seed_goes_inline_only_while_small(tmp_path):
    small, large = tmp_path / "small.iso", tmp_path / "large.iso"
    small.write_bytes(b"s" * (SEED_INLINE_MAX * 3 // 4))
    large.write_bytes(b"l" * (SEED_INLINE_MAX * 3 // 4 + 3))
    assert PropolisBackend.seed_backend(str(small))["type"] == "blob_storage_backend"
    assert PropolisBackend.seed_backend(str(large)) == {
        "type": "file_storage_backend", "component": {"path": str(large), "readonly": True, "block_size": 512}}


def test_api_errors_name_the_vm_the_request_and_propolis_error():
    body = {"request_id": "r1", "message": "Forbidden",
            "error_code": "instance state change not allowed: Instance is currently starting"}
    err = api_error("web", "PUT /instance/state", 403, body)
    assert err.message == ("VM web: propolis-server answered PUT /instance/state with 403: Forbidden "
                           "[instance state change not allowed: Instance is currently starting]")
    assert err.code == "vmctl.propolis.api_error" and err.details["request_id"] == "r1" and err.hint
    assert "(no message)" in api_error("web", "GET /instance", 502, None).message


def test_host_runner_prefixes_commands_and_names_failures():
    runner = IllumosRunner(["env", "LC_ALL=C"])
    assert runner(["echo", "zoneadm"]).stdout == "zoneadm\n"
    assert runner(["false"], check=False).rc == 1
    with pytest.raises(IllumosCommandFailed) as err:
        runner(["sh", "-c", "echo 'zoneadm: zone not found' >&2; exit 3"])
    assert err.value.details["rc"] == 3 and "zone not found" in err.value.message
    assert err.value.details["argv"][:2] == ["env", "LC_ALL=C"]
    assert err.value.message.startswith("sh -c echo 'zoneadm: zone not found' >&2; exit 3 failed (exit 3): "), err.value.message
    with pytest.raises(IllumosCommandFailed) as err:  # the prefix is not named, a long argument (zonecfg's script) neither
        runner(["sh", "-c", "exit 4 # " + "x" * 100])
    assert err.value.message == "sh -c <109 characters> failed (exit 4): ", err.value.message
    assert err.value.details["argv"][-1] == "exit 4 # " + "x" * 100
    with pytest.raises(ToolMissing):
        IllumosRunner()(["zoneadm-does-not-exist", "list"])


def test_router_and_environment_settings(monkeypatch):
    monkeypatch.setenv("VMCTL_PROPOLIS_ADDRESS", "10.1.2.3:12401")
    monkeypatch.setenv("VMCTL_PROPOLIS_COMMAND_PREFIX", "ssh 'root@illumos host'")
    backend = backend_for("propolis")
    assert isinstance(backend, PropolisBackend) and backend.settings["address"] == "10.1.2.3:12401"
    assert backend.runner.prefix == ["ssh", "root@illumos host"] and backend.settings["brand"] == "sparse"
    assert backend_for("auto").tag == ("propolis" if platform.system() in ("SunOS", "illumos") else "qemu")


def test_waiting_for_ssh_on_a_vnic_guest_is_refused_naming_the_network():
    """Bad input: a propolis VM on a VNIC with an ssh login, asked to wait for SSH. vmctl has no route to such a
    guest: the error says so (not "no SSH settings", which it has); without wait_for_ssh nothing is waited for."""
    from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidState
    from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig, VmHandle
    from ansible_collections.vmctl.core.plugins.module_utils.reconcile import ssh_wait_wanted
    handle = VmHandle(id="p1", name="pz", backend="propolis", network=NetworkConfig(type="vnic", name="vnic0"),
                      ssh_user="vm", private_key_path="/nonexistent/id_ed25519")
    with pytest.raises(InvalidState, match="VM pz: vmctl has no SSH route to a guest on vnic networking") as err:
        ssh_wait_wanted(handle, True)
    assert "no ssh block" in err.value.hint
    assert ssh_wait_wanted(handle, None) is False
    with pytest.raises(InvalidState, match="VM pz has no SSH settings to wait for"):
        ssh_wait_wanted(handle.replace(ssh_user=None), True)
