"""The Propolis backend through VmManager, against the fake propolis-server and a fake illumos host.

The fake (propolis_fake.py) is strict where the real server is: api-version required, every body
validated against the OpenAPI document, the documented state machine and status codes. Each test
also checks that the fake saw nothing off-contract from our client (``assert_clean``).
"""

import http.client
import json
import os
import select
import subprocess
import threading
import time

import pytest
from support.propolis_fake import FakeIllumos, FakePropolis, document, spec_problem
from support.sshd_server import free_port

from ansible_collections.vmctl.core.plugins.plugin_utils.cli import console
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis import websocket
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.backend import STATE_MAP, PropolisBackend, parse_arp
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    InvalidSpec, IpDiscoveryTimeout, PropolisApiError, PropolisError, PropolisTimeout, PropolisUnreachable,
    PropolisUnsupported, VmctlError,
)
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.api import PropolisClient
from ansible_collections.vmctl.core.plugins.module_utils.model import CloudInitConfig, NetworkConfig, SshConfig, VmSpec, VmState

MAC = "02:08:20:ab:cd:01"
SERVICE = "svc:/system/illumos/propolis-server"


class Host:
    """A fake illumos host whose zone runs a fake propolis-server on ``address``."""

    def __init__(self, tmp_path, start_server=True, **fake_options):
        fake_options.setdefault("vnics", {"vnic0"})  # the server can open only the host's VNICs
        self.server = FakePropolis(port=free_port(), **fake_options)
        self.illumos = FakeIllumos(servers={self.server.address: self.server} if start_server else {})
        self.illumos.add_vnic("vnic0", MAC)
        self.backend = PropolisBackend(runner=self.illumos, address=self.server.address,
                                       server_timeout=3, start_timeout=15)
        self.manager = VmManager(backend_factory=lambda tag: self.backend)
        self.image = str(tmp_path / "image.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.image, "1G"], check=True)

    def spec(self, name="web", **changes):
        fields = dict(name=name, image_path=self.image, backend="propolis", vcpus=2, memory_mb=512,
                      network=NetworkConfig(type="vnic", name="vnic0"),
                      cloud_init=CloudInitConfig(hostname=name, generate_key=True), ssh=SshConfig(user="vm"))
        fields.update(changes)
        return VmSpec(**fields)

    def api(self, method=None, path=None):
        return [r for r in self.server.requests if (method is None or r["method"] == method)
                and (path is None or r["path"] == path)]

    def commands(self):
        """The runner's calls, without the read-only zone listings."""
        return [c for c in self.illumos.calls if c != ["zoneadm", "list", "-cp"]]

    def assert_clean(self):
        """Our client sent only valid requests, each with the header; the fake answered on contract."""
        assert self.server.requests, "no request reached the fake"
        for record in self.server.requests:
            assert record["headers"].get("api-version") == "5.0.0", record
            assert record["errors"] == [], record
            assert record["status"] < 500 or record["status"] == 500 and record["path"] == "/instance", record
        assert self.server.contract_errors == []


@pytest.fixture
def host(tmp_path):
    host = Host(tmp_path)
    yield host
    host.server.stop()


def read_until(ws, marker, timeout=10):
    ws.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, data
        opcode, payload = ws.recv()
        assert opcode == websocket.OP_BINARY, (opcode, payload)
        data += payload
    return data


def test_full_lifecycle(host):
    manager = host.manager
    handle, created = manager.create(host.spec())
    assert created and handle.state == VmState.PREPARED and handle.mac_addr == MAC
    zone = handle.extra["propolis"]["zone"]
    assert zone == "vmctl-web" and os.path.getsize(handle.overlay_path) == 1 << 30
    assert host.commands() == [
        ["dladm", "show-vnic", "-p", "-o", "LINK,OVER,MACADDRESS", "vnic0"],
        ["zonecfg", "-z", zone, host.backend.zone_config(handle, handle.network)],
        ["zoneadm", "-z", zone, "install"],
    ]
    config = host.illumos.state["zones"][zone]["config"]
    for line in ("set ip-type=exclusive", "add net; set physical=vnic0; end", "set match=/dev/vmmctl",
                 "set match=/dev/viona", "set dir=%s; set special=%s; set type=lofs" % (handle.work_dir, handle.work_dir)):
        assert line in config
    assert not host.server.running and manager.live_state("web") == VmState.PREPARED

    del host.illumos.calls[:]
    handle, before = manager.start("web")
    assert before == VmState.PREPARED and handle.state == VmState.RUNNING
    host_, port = host.server.address.split(":")
    assert host.commands() == [
        ["zoneadm", "-z", zone, "boot"],
        ["zlogin", zone, "svccfg", "-s", SERVICE, "setprop", "config/listen_addr=%s" % host_],
        ["zlogin", zone, "svccfg", "-s", SERVICE, "setprop", "config/listen_port=%s" % port],
        ["zlogin", zone, "svcadm", "refresh", SERVICE + ":default"],
        ["zlogin", zone, "svcadm", "enable", "-t", SERVICE + ":default"],
    ]
    assert host.server.state() == (3, "Running")  # Creating(1) → Starting(2) → Running(3)
    assert manager.live_state("web") == VmState.RUNNING
    ensure = host.api("PUT", "/instance")[0]["body"]
    spec = ensure["init"]["value"]["spec"]
    assert spec["board"] == {"cpus": 2, "memory_mb": 512, "chipset": {"type": "i440_fx", "value": {"enable_pcie": False}}}
    components = spec["components"]
    assert components["com1"] == {"type": "serial_port", "component": {"num": "com1"}}
    assert components["disk0-backend"]["component"]["path"] == handle.overlay_path
    assert components["net0-backend"]["component"] == {"vnic_name": "vnic0"}
    assert components["cloud-init-backend"]["type"] == "blob_storage_backend"  # a small seed goes inline
    assert ensure["properties"]["id"] == handle.extra["propolis"]["instance_id"]
    assert [r["body"] for r in host.api("PUT", "/instance/state")] == ["Run"]
    monitors = host.api("GET", "/instance/state-monitor")
    assert monitors and all(isinstance(r["body"].get("gen"), int) for r in monitors)

    endpoint = manager.backend(handle).console_endpoint(handle)
    assert endpoint.kind == "websocket"
    assert endpoint.address == "ws://%s/instance/serial?most_recent=16384" % host.server.address
    client = PropolisClient(handle.extra["propolis"]["address"], "web")
    console = client.serial()
    banner = read_until(console, b"web login: ")
    assert b"Booting from disk0" in banner
    console.send_binary(b"root\r")
    assert b"root\r" in read_until(console, b"root\r")
    body = client.request("GET", "/instance/serial/history?most_recent=%d" % (1 << 20))[1]
    history, offset = bytes(body["data"]), body["last_byte_offset"]
    assert history.startswith(b"\x1b[0mfake-propolis") and history.endswith(b"root\r") and offset == len(history)
    upgrade = host.api("GET", "/instance/serial")[0]
    assert upgrade["status"] == 101 and upgrade["headers"]["api-version"] == "5.0.0"

    handle = manager.stop("web", timeout=10)[0]
    assert handle.state == VmState.STOPPED
    assert console.recv() == (websocket.OP_CLOSE, (1001, "VM stopped"))
    assert [r["body"] for r in host.api("PUT", "/instance/state")] == ["Run", "Stop"]
    assert host.illumos.calls[-1] == ["zoneadm", "-z", zone, "halt"]
    assert not host.server.running  # halting the zone ended propolis-server
    assert manager.live_state("web") == VmState.STOPPED
    assert manager.stop("web")[0].state == VmState.STOPPED  # stopping a stopped VM is fine

    handle, before = manager.start("web")  # a new zone boot, a new server, a new ensure
    assert before == VmState.STOPPED and handle.state == VmState.RUNNING
    assert host.server.starts == 2 and len(host.api("PUT", "/instance")) == 2
    assert host.server.state() == (3, "Running")

    work_dir = handle.work_dir
    del host.illumos.calls[:]
    manager.destroy("web")
    assert host.commands() == [["zoneadm", "-z", zone, "halt"], ["zoneadm", "-z", zone, "uninstall", "-F"],
                               ["zonecfg", "-z", zone, "delete", "-F"]]
    assert [r["body"] for r in host.api("PUT", "/instance/state")][-1] == "Stop"
    assert zone not in host.illumos.state["zones"] and not os.path.exists(work_dir)
    assert manager.find("web") is None
    host.assert_clean()


def test_start_is_idempotent(host):
    host.manager.create(host.spec())
    host.manager.start("web")
    host.manager.start("web")
    assert len(host.api("PUT", "/instance")) == 1
    assert [r["body"] for r in host.api("PUT", "/instance/state")] == ["Run"]
    assert host.server.starts == 1
    host.assert_clean()


def test_start_after_guest_poweroff_ensures_again_on_the_same_server(host):
    host.manager.create(host.spec())
    host.manager.start("web")
    host.server.guest_poweroff()
    deadline = time.monotonic() + 5
    while host.server.state()[1] != "Destroyed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert host.manager.live_state("web") == VmState.STOPPED
    handle = host.manager.start("web")[0]
    assert handle.state == VmState.RUNNING and host.server.starts == 1
    assert len(host.api("PUT", "/instance")) == 2 and host.server.state() == (3, "Running")  # gen restarts at 1
    host.assert_clean()


def test_an_existing_vm_is_looked_at_not_ensured_again(host):
    """409 AlreadyInitialized: even an identical body is refused, so start checks GET /instance first."""
    handle = host.manager.create(host.spec())[0]
    request = host.backend.ensure_request(handle)
    host.server.start()
    client = PropolisClient(host.server.address, "web")
    client.ensure(request)
    with pytest.raises(PropolisApiError) as err:
        client.ensure(request)
    assert err.value.details["status"] == 409 and err.value.details["error_code"] == "AlreadyInitialized"
    assert "VM web" in err.value.message and "PUT /instance" in err.value.message
    assert "already holds a VM" in err.value.hint
    # the race: a VM appears between our GET and our PUT; the 409 is answered by looking at it
    assert host.backend._ensure(client, handle)["state"] == "Creating"
    handle = host.manager.start("web")[0]  # Creating → Run (no further ensure)
    assert handle.state == VmState.RUNNING and len(host.api("PUT", "/instance")) == 3
    assert [r["status"] for r in host.api("PUT", "/instance")] == [201, 409, 409]
    host.assert_clean()


def test_status_codes_reach_the_caller_with_the_vm_the_request_and_propolis_error(host):
    host.server.start()
    client = PropolisClient(host.server.address, "web")
    with pytest.raises(PropolisApiError) as err:  # 424 before any ensure
        client.request_state("Run")
    details = err.value.details
    assert details["status"] == 424 and details["error_code"] == "NoInstance"
    assert err.value.message.startswith("VM web: propolis-server answered PUT /instance/state with 424")
    assert client.instance() is None  # GET /instance's 424 means: up, no VM

    handle = host.manager.create(host.spec())[0]
    client.ensure(host.backend.ensure_request(handle))
    with pytest.raises(PropolisApiError) as err:  # Reboot of a VM never started: 403
        client.request_state("Reboot")
    assert err.value.details["status"] == 403
    assert err.value.details["error_code"] == "instance state change not allowed: Operation requires an active instance"
    client.request_state("Stop")
    with pytest.raises(PropolisApiError) as err:  # Run once a stop is pending: 403 HaltPending
        client.request_state("Run")
    assert err.value.details["error_code"] == "instance state change not allowed: Instance is preparing to stop"
    assert client.wait_for(("Destroyed",), 5)["state"] == "Destroyed"
    with pytest.raises(PropolisApiError) as err:  # after rundown: 424 again
        client.request_state("Stop")
    assert err.value.details["status"] == 424
    final = client.monitor(0, timeout=5)["gen"]
    with pytest.raises(PropolisApiError) as err:  # a generation that will never come: 410
        client.monitor(final + 1, timeout=5)
    assert err.value.details["status"] == 410 and err.value.details["error_code"] == "NoInstance"
    assert client.wait_for(("Running",), 5, gen=final + 5)["gone"] is True
    assert host.server.state()[1] == "Destroyed"
    host.assert_clean()


def test_a_server_that_never_comes_up_is_a_clear_error(tmp_path):
    host = Host(tmp_path, start_server=False)
    host.manager.create(host.spec())
    begin = time.monotonic()
    with pytest.raises(PropolisUnreachable) as err:
        host.manager.start("web")
    assert time.monotonic() - begin < 10
    assert err.value.code == "vmctl.propolis.unreachable" and host.server.address in str(err.value)
    assert "svcs -xv" in err.value.hint and "did not come up within 3" in err.value.message
    assert host.manager.live_state("web") == VmState.PREPARED


def test_vm_creation_failure_in_propolis_is_reported(host):
    host.manager.create(host.spec())
    host.server.fail_next_ensure = True
    with pytest.raises(PropolisApiError) as err:
        host.manager.start("web")
    assert err.value.code == "vmctl.propolis.create_failed" and err.value.details["status"] == 500
    assert "vmctl-web" in err.value.hint
    assert host.server.state() == (2, "Failed")
    assert host.manager.live_state("web") == VmState.FAILED
    handle = host.manager.start("web")[0]  # a failed VM can be ensured again
    assert handle.state == VmState.RUNNING and host.server.state() == (3, "Running")
    host.assert_clean()


def test_a_vnic_the_server_cannot_open_fails_creation(tmp_path):
    host = Host(tmp_path, vnics={"other0"})
    try:
        host.manager.create(host.spec())
        with pytest.raises(PropolisApiError) as err:
            host.manager.start("web")
        assert err.value.code == "vmctl.propolis.create_failed"
    finally:
        host.server.stop()


def test_run_failure_reads_as_failed(host):
    host.manager.create(host.spec())
    host.server.fail_next_run = True
    with pytest.raises(PropolisError) as err:
        host.manager.start("web")
    assert err.value.code == "vmctl.propolis.vm_failed"
    assert host.manager.live_state("web") == VmState.FAILED
    host.assert_clean()


def test_suspend_and_resume_say_propolis_cannot(host):
    host.manager.create(host.spec())
    host.manager.start("web")
    for operation in (host.manager.suspend, host.manager.resume):
        with pytest.raises(PropolisUnsupported) as err:
            operation("web")
        assert err.value.code == "vmctl.propolis.unsupported" and "state=" in err.value.hint
    assert host.manager.live_state("web") == VmState.RUNNING


def test_a_large_seed_is_file_backed_and_the_body_stays_under_the_cap(host):
    big = "#cloud-config\nwrite_files:\n- path: /big\n  content: %s\n" % ("x" * 600000)
    handle = host.manager.create(host.spec(cloud_init=CloudInitConfig(user_data=big)))[0]
    host.manager.start("web")
    request = host.api("PUT", "/instance")[0]
    backend = request["body"]["init"]["value"]["spec"]["components"]["cloud-init-backend"]
    assert backend == {"type": "file_storage_backend",
                       "component": {"path": handle.seed_iso_path, "readonly": True, "block_size": 512}}
    assert int(request["headers"]["content-length"]) < 1 << 20
    host.assert_clean()


def test_the_client_refuses_a_body_over_the_cap_before_sending(host):
    host.server.start()
    client = PropolisClient(host.server.address, "web")
    with pytest.raises(PropolisError) as err:
        client.request("PUT", "/instance", {"blob": "x" * (1 << 20)})
    assert err.value.code == "vmctl.propolis.body_too_large"
    assert host.server.requests == []


def test_a_grown_disk_is_resized_by_the_backend_as_raw(host):
    """The manager grows a disk through the backend's hook: propolis' disk0.raw is resized as raw, and its size
    is read back by the backend (what reconcile compares a wanted disk with)."""
    handle = host.manager.create(host.spec())[0]
    assert host.manager.disk_gb(handle) == 1
    handle = host.manager.reconfigure("web", {}, disk_gb=3)
    assert handle.disk_gb == 3 and os.path.getsize(handle.overlay_path) == 3 << 30 and host.manager.disk_gb(handle) == 3


def test_guest_ip_comes_from_the_arp_table_by_the_vnics_mac(host):
    handle = host.manager.create(host.spec())[0]
    backend = host.manager.backend(handle)
    with pytest.raises(IpDiscoveryTimeout):
        backend.guest_ip(handle, timeout=0)
    host.illumos.state["arp"]["192.168.1.50"] = MAC
    assert backend.guest_ip(handle) == "192.168.1.50"
    assert ["arp", "-an"] in host.illumos.calls
    assert parse_arp("net0 10.0.0.7 255.255.255.255 2:8:20:ab:cd:1\n", "02:08:20:AB:CD:01") == "10.0.0.7"


def test_a_missing_vnic_or_unusable_spec_is_refused_before_anything_is_made(host):
    with pytest.raises(PropolisError) as err:
        host.manager.create(host.spec(network=NetworkConfig(type="vnic", name="vnic9")))
    assert err.value.code == "vmctl.propolis.vnic_missing" and "dladm create-vnic" in err.value.hint
    assert not any(c[0] == "zonecfg" for c in host.illumos.calls)
    for changes, text in ((dict(network=NetworkConfig(type="user")), "network 'user'"),
                          (dict(vcpus=33), "1 to 32 vCPUs"),
                          (dict(network=NetworkConfig(type="vnic", name="vnic")), "invalid VNIC name"),
                          (dict(shares=[{"source": os.path.dirname(__file__), "guest": "/mnt"}]), "no shared-folder device")):
        with pytest.raises(VmctlError) as err:
            host.manager.create(host.spec(**changes))
        assert text in str(err.value)
    assert host.manager.list() == {}


def test_two_vms_cannot_share_one_server(host):
    host.manager.create(host.spec("a"))
    with pytest.raises(InvalidSpec) as err:
        host.manager.create(host.spec("b"))
    assert "already used by VM a" in str(err.value) and "VMCTL_PROPOLIS_ADDRESS" in err.value.hint


# --- the fake is strict where the real server is (so the tests above cannot pass on leniency) --------
def raw(fake, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers if headers is not None else {"api-version": "5.0.0"})
    response = conn.getresponse()
    text = response.read()
    conn.close()
    return response.status, (json.loads(text) if text else None), dict(response.getheaders())


def test_fake_requires_the_api_version_header(host):
    host.server.start()
    status, body, headers = raw(host.server, "GET", "/instance", headers={})
    assert status == 400 and body["message"] == 'missing expected header "api-version"'
    assert body["request_id"] == headers["x-request-id"]
    status, body = raw(host.server, "GET", "/instance", headers={"api-version": "6.0.0"})[:2]
    assert status == 400 and body["message"] == "server does not support this API version: 6.0.0"
    status, body = raw(host.server, "GET", "/instance")[:2]
    assert status == 424 and (body["error_code"], body["message"]) == ("NoInstance", "Server not initialized (no instance)")
    assert [r["status"] for r in host.server.requests] == [400, 400, 424]


def test_fake_validates_bodies_and_specs_like_the_server(host):
    handle = host.manager.create(host.spec())[0]
    good = host.backend.ensure_request(handle)
    host.server.start()
    bad_cpus = json.loads(json.dumps(good))
    bad_cpus["init"]["value"]["spec"]["board"]["cpus"] = 300
    status, body = raw(host.server, "PUT", "/instance", bad_cpus)[:2]
    assert status == 400 and "cpus" in body["message"]
    orphan = json.loads(json.dumps(good))
    del orphan["init"]["value"]["spec"]["components"]["disk0"]
    orphan["init"]["value"]["spec"]["components"]["boot-settings"]["component"]["order"] = []
    status, body = raw(host.server, "PUT", "/instance", orphan)[:2]
    assert (status, body["message"]) == (400, "failed to generate internal instance spec: backend disk0-backend not used by any device")
    status, body = raw(host.server, "GET", "/instance/state-monitor")[:2]
    assert status == 400 and body["message"].startswith("unable to parse JSON body: EOF")
    assert raw(host.server, "PUT", "/instance/state", "run")[0] == 400  # case-sensitive
    assert raw(host.server, "DELETE", "/instance")[0] == 405
    assert raw(host.server, "GET", "/nothing")[0] == 404
    assert raw(host.server, "GET", "/instance/serial/history?from_start=0&most_recent=1")[0] == 424
    assert raw(host.server, "PUT", "/instance", good)[0] == 201
    status, body = raw(host.server, "GET", "/instance/serial/history?from_start=0&most_recent=1")[:2]
    assert (status, body["message"]) == (400, "Exactly one of 'from_start' or 'most_recent' must be specified.")
    assert raw(host.server, "GET", "/instance/serial/history?from_start=99")[1] == {"data": [], "last_byte_offset": 0}
    spec = raw(host.server, "GET", "/instance/spec")[1]["spec"]
    assert spec["type"] == "Present" and spec["value"]["board"]["cpuid"]["vendor"] == "amd"
    assert raw(host.server, "POST", "/instance/nmi")[:2] == (200, None)  # the body is JSON null
    assert host.server.contract_errors == []


def test_fake_serial_websocket_needs_an_active_vm_and_the_header(host):
    host.server.start()
    client = PropolisClient(host.server.address, "web")
    console = client.serial()  # 101, then the connection drops: no VM
    with pytest.raises(websocket.WebSocketError, match="without a close frame"):
        console.recv()
    sock = websocket.WebSocketClient
    with pytest.raises(websocket.WebSocketHandshakeError) as err:
        sock.connect(host.server.host, host.server.port, "/instance/serial", {})
    assert err.value.status == 400 and "api-version" in err.value.body


def test_every_propolis_state_maps_and_every_spec_we_build_validates(host):
    doc = document()
    assert set(STATE_MAP) == set(doc.raw["components"]["schemas"]["InstanceState"]["enum"])
    schema = {"$ref": "#/components/schemas/InstanceEnsureRequest"}
    for name, changes in (("plain", {}), ("nonet", dict(network=NetworkConfig(type="none"), cloud_init=None)),
                          ("big", dict(vcpus=32, memory_mb=65536))):
        handle = host.manager.create(host.spec(name, **changes))[0]
        request = host.backend.ensure_request(handle)
        assert doc.errors(schema, request) == [] and spec_problem(request["init"]["value"]["spec"]) is None
        host.manager.destroy(name)


def published(client, until, gen, timeout=10):
    """Every state the monitor shows from generation ``gen`` on, until ``until``."""
    seen = []
    while not seen or seen[-1][1] != until:
        answer = client.monitor(gen, timeout=timeout)
        seen.append((answer["gen"], answer["state"]))
        gen = answer["gen"] + 1
    return seen


def test_fake_publishes_the_documented_sequences(tmp_path):
    host = Host(tmp_path, step_delay=0.3)
    try:
        handle = host.manager.create(host.spec())[0]
        host.server.start()
        client = PropolisClient(host.server.address, "web")
        client.ensure(host.backend.ensure_request(handle))
        assert published(client, "Creating", 0) == [(1, "Creating")]
        client.request_state("Run")
        with pytest.raises(PropolisApiError) as err:  # Reboot while starting: 403 StartInProgress
            client.request_state("Reboot")
        assert err.value.details["error_code"].endswith("Instance is currently starting")
        assert published(client, "Running", 2) == [(2, "Starting"), (3, "Running")]
        assert client.monitor(1, timeout=5)["gen"] == 3  # the latest state, not the one at gen 1
        client.request_state("Reboot")
        client.request_state("Reboot")  # a pending reboot: ignored
        assert published(client, "Running", 4) == [(4, "Rebooting"), (5, "Running")]
        client.request_state("Stop")
        client.request_state("Stop")  # a pending stop: ignored
        assert published(client, "Destroyed", 6) == [(6, "Stopping"), (7, "Stopped"), (8, "Destroyed")]

        client.ensure(host.backend.ensure_request(handle))  # a fresh VM after rundown: gen 1 again
        assert published(client, "Creating", 0) == [(1, "Creating")]
        client.request_state("Run")
        time.sleep(0.1)  # Starting is published; the backends are still starting
        client.request_state("Stop")
        assert published(client, "Destroyed", 2) == [(2, "Starting"), (3, "Stopped"), (4, "Destroyed")]
        host.assert_clean()
    finally:
        host.server.stop()


def test_a_monitor_wait_ends_at_our_deadline_and_the_server_drops_the_poll(host):
    handle = host.manager.create(host.spec())[0]
    host.server.start()
    client = PropolisClient(host.server.address, "web")
    client.ensure(host.backend.ensure_request(handle))
    begin = time.monotonic()
    with pytest.raises(PropolisTimeout) as err:  # Creating forever: nobody asked for Run
        client.wait_for(("Running",), 0.5)
    assert 0.5 <= time.monotonic() - begin < 3 and "still not Running after 0.5s" in err.value.message
    deadline = time.monotonic() + 3
    while host.server.abandoned_polls < 1:
        assert time.monotonic() < deadline, "the fake kept a long poll whose client had gone"
        time.sleep(0.05)


def test_a_server_holding_another_vm_is_never_driven(host):
    handle = host.manager.create(host.spec())[0]
    other = host.backend.ensure_request(handle)
    other["properties"].update(id="6f1c1e4e-3b1a-4c5e-9d1e-2a8c0b7c1f10", name="someone-else")
    host.server.start()
    client = PropolisClient(host.server.address, "other")
    client.ensure(other)
    client.request_state("Run")
    client.wait_for(("Running",), 5)
    assert host.manager.live_state("web") == VmState.PREPARED  # not ours: this VM is not running there
    for operation in (host.manager.start, host.manager.stop):
        with pytest.raises(PropolisError) as err:
            operation("web")
        assert err.value.code == "vmctl.propolis.foreign_vm" and "'someone-else'" in err.value.message
    assert [r["body"] for r in host.api("PUT", "/instance/state")] == ["Run"]  # only the other client's
    assert len(host.api("PUT", "/instance")) == 1 and host.server.state() == (3, "Running")
    host.assert_clean()


def test_the_console_relay_attaches_to_the_serial_websocket(host):
    """What ``vmctl console`` does, on a propolis VM: recent output first, typed bytes reach the guest
    (the fake echoes them), Ctrl+] detaches; attached again, the VM's stop ends the relay."""
    manager = host.manager
    manager.create(host.spec())
    manager.start("web")
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    stream = manager.open_console("web")
    os.write(in_w, b"root\r")
    result = {}
    relay = threading.Thread(target=lambda: result.update(outcome=console.relay(stream, in_r, out_w)))
    relay.start()
    seen = b""
    deadline = time.monotonic() + 10
    while not (b"web login: " in seen and b"root\r" in seen) and time.monotonic() < deadline:
        if select.select([out_r], [], [], 0.5)[0]:
            seen += os.read(out_r, 65536)
    assert b"web login: " in seen and b"root\r" in seen, seen
    os.write(in_w, b"\x1d")  # Ctrl+]
    relay.join(10)
    assert result["outcome"] == console.DETACHED
    stream.close()

    stream = manager.open_console("web")
    relay = threading.Thread(target=lambda: result.update(outcome=console.relay(stream, in_r, out_w)))
    relay.start()
    manager.stop("web", timeout=10)
    relay.join(10)
    assert result["outcome"] == console.CLOSED  # close 1001 "VM stopped"
    upgrades = host.api("GET", "/instance/serial")
    assert len(upgrades) == 2 and all(u["status"] == 101 for u in upgrades)
    host.assert_clean()
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)
