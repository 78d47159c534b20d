"""Private networks without a guest: the VMFile node (v1 and v2 spellings; its mistakes are rows of test_vmfile's
BAD table), the checks every front-end shares, the cloud-init network-config, QEMU's argv, the
module's idempotence and check mode (noop backend), and the vde_switch's proof and lifecycle (a real vde_switch,
no QEMU)."""

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time

import pytest
import yaml

from ansible_collections.vmctl.core.plugins.module_utils import private_network, reconcile
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import switch as switches
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec
from ansible_collections.vmctl.core.plugins.module_utils.guest import network_config
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import CloudInitConfig, VmHandle, VmSpec
from ansible_collections.vmctl.core.plugins.module_utils.specs import spec_from_record
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "disk.qcow2").write_bytes(b"")
    return tmp_path


def write(project, text):
    path = project / "VMFile.kdl"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_v1_and_v2_spellings_give_the_same_records(project):
    v1 = vmfile.load(write(project, '''
        vm "web" {
            image "disk.qcow2"
            cloud-init
            private-network "lab" address="192.168.77.11/24"
            private-network "back" { address "fd00:77::11/64"; }
            private-network "open"
        }
    '''))
    v2 = vmfile.load(write(project, '''
        vm web {
            image disk.qcow2
            cloud-init
            private-network lab address="192.168.77.11/24"
            private-network back { address "fd00:77::11/64" }
            private-network open
        }
    '''))
    assert v1 == v2
    assert v1[0]["private_networks"] == [{"name": "lab", "address": "192.168.77.11/24"},
                                         {"name": "back", "address": "fd00:77::11/64"}, {"name": "open", "address": None}]


def test_the_same_address_on_two_switches_is_fine(project):
    records = vmfile.load(write(project, '''
        vm "web" { image "disk.qcow2"; cloud-init; private-network "lab" address="192.168.77.11/24"; }
        vm "db" { image "disk.qcow2"; cloud-init; private-network "other" address="192.168.77.11/24"; }
    '''))
    assert [r["private_networks"][0]["name"] for r in records] == ["lab", "other"]


@pytest.mark.parametrize("given,message", [
    ([{"name": "lab", "address": "10.0.0.1/8"}, {"name": "lab"}], "given twice"),
    ([{"name": "lab", "address": "10.0.0.1/8", "gateway": "10.0.0.254"}], "must be {name, address}"),
    ([{"name": "n%d" % i} for i in range(9)], "at most 8"),
    ("lab", "must be a list"),
    ([{"name": ""}], "invalid private network name"),
])
def test_module_and_cli_values_get_the_same_checks(given, message):
    """Bad input to the vm module (or the CLI) is refused by the one normalize(), naming what is wrong."""
    with pytest.raises(InvalidSpec, match=message):
        private_network.normalize(given)


def test_cli_option_and_ipv6():
    assert private_network.parse_option("lab:192.168.77.11/24") == {"name": "lab", "address": "192.168.77.11/24"}
    assert private_network.parse_option("lab:fd00::11/64") == {"name": "lab", "address": "fd00::11/64"}
    assert private_network.parse_option("lab") == {"name": "lab", "address": None}


def test_address_without_cloud_init_and_other_backends_are_refused():
    with pytest.raises(InvalidSpec, match="VM a: the address on private network lab is set by cloud-init"):
        VmSpec(name="a", image_path="x", private_networks=[{"name": "lab", "address": "10.1.0.2/24"}])
    with pytest.raises(InvalidSpec, match="need the qemu backend"):
        VmSpec(name="a", image_path="x", backend="propolis", private_networks=[{"name": "lab"}])
    VmSpec(name="a", image_path="x", private_networks=[{"name": "lab"}])  # no address: the guest configures it


def test_switch_ids_are_scoped_by_vmfile_and_macs_are_stable():
    one, two = private_network.switch_id("/p/one/VMFile.kdl", "lab"), private_network.switch_id("/p/two/VMFile.kdl", "lab")
    assert one != two and len(one) == 12 and one == private_network.switch_id("/p/one/VMFile.kdl", "lab")
    assert private_network.switch_id(None, "lab") == private_network.switch_id("", "lab")  # no VMFile: one shared scope
    mac = private_network.mac_for("web", one)
    assert mac == private_network.mac_for("web", one) and mac.startswith("52:56:") and len(mac) == 17
    assert mac != private_network.mac_for("db", one) != private_network.mac_for("web", two)


def test_network_config_matches_each_nic_by_mac_with_no_route():
    nets = [{"name": "lab", "address": "192.168.77.11/24"}, {"name": "raw", "address": None}]
    nics = private_network.attach("web", "/p/VMFile.kdl", nets)
    config = yaml.safe_load(network_config.build("52:54:00:aa:bb:cc", True, nics))
    assert config == {"version": 2, "ethernets": {
        "primary": {"match": {"macaddress": "52:54:00:aa:bb:cc"}, "dhcp4": True},  # the fallback config it replaces
        "private-lab": {"match": {"macaddress": nics[0]["mac"]}, "addresses": ["192.168.77.11/24"],
                        "dhcp4": False, "dhcp6": False}}}  # no gateway, no routes, no nameservers
    assert network_config.build("52:54:00:aa:bb:cc", True, nics[1:]) is None  # no address: cloud-init's fallback stays
    assert "primary" not in yaml.safe_load(network_config.build(None, False, nics))["ethernets"]  # network none


def test_qemu_argv_joins_the_switch_with_the_stable_mac(tmp_path):
    work = str(tmp_path / "data" / "vms" / "web")
    nics = private_network.attach("web", "/p/VMFile.kdl", [{"name": "lab", "address": "192.168.77.11/24"}])
    handle = VmHandle(id="1", name="web", work_dir=work, ssh_host_port=10022, mac_addr="52:54:00:00:00:01",
                      accel="tcg", vmfile="/p/VMFile.kdl", private_networks=nics)
    argv = QemuBackend().command_line(handle)
    ctl = str(tmp_path / "data" / "switches" / nics[0]["switch"] / "ctl")
    assert argv[argv.index("-netdev", argv.index("-netdev") + 1):][:4] == [
        "-netdev", "vde,id=priv0,sock=%s" % ctl, "-device", "virtio-net-pci,netdev=priv0,mac=%s" % nics[0]["mac"]]
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in argv[argv.index("-netdev") + 1]  # the primary network stays
    # a switch id or MAC written into vms.json is not used: both are derived again from name, VMFile and network
    forged = handle.replace(private_networks=[dict(nics[0], switch="../../../etc", mac="52:56:00:00:00:00,x=y")])
    assert QemuBackend().command_line(forged) == argv


def test_vm_module_options_are_idempotent_and_check_mode_touches_nothing(tmp_path, monkeypatch):
    from ansible_collections.vmctl.core.plugins.module_utils.backends.noop import NoopBackend
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    class Recording(NoopBackend):  # noop, recording the image as QEMU's prepare does
        def prepare(self, spec, handle):
            return NoopBackend.prepare(self, spec, handle).replace(image_path=os.path.abspath(spec.image_path))
    manager = VmManager(backend_factory=lambda tag: Recording())
    record = {"name": "web", "backend": "noop", "cloud_init": {"hostname": "web"},
              "private_networks": [{"name": "lab", "address": "192.168.77.11/24"}]}
    spec = spec_from_record(record, str(tmp_path / "disk"))
    assert reconcile.ensure_present(manager, spec, check_mode=True).changed and manager.find("web") is None
    first = reconcile.ensure_present(manager, spec)
    assert first.changed and first.handle.private_networks[0]["address"] == "192.168.77.11/24"
    assert not reconcile.ensure_present(manager, spec_from_record(record, str(tmp_path / "disk"))).changed
    moved = dict(record, private_networks=[{"name": "lab", "address": "192.168.77.12/24"}])
    with pytest.raises(InvalidSpec, match="private_networks") as err:
        reconcile.ensure_present(manager, spec_from_record(moved, str(tmp_path / "disk")))
    assert "recreate: true" in err.value.hint
    outcome = reconcile.ensure_present(manager, spec_from_record(moved, str(tmp_path / "disk")), recreate=True, check_mode=True)
    assert outcome.changed and outcome.actions == ["destroy", "create"]
    assert manager.get("web").private_networks[0]["address"] == "192.168.77.11/24"  # check mode changed nothing


def test_two_vms_on_one_switch_cannot_share_an_address(tmp_path, monkeypatch):
    """Across the store (VMs made one by one, e.g. by vmctl create): the second create is refused, naming the first."""
    from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    def qemu_allocating(tag):  # the QEMU backend's allocate (under the store lock), with noop's prepare
        backend = backend_for("noop")
        backend.allocate = QemuBackend().allocate
        return backend
    manager = VmManager(backend_factory=qemu_allocating)
    nets = [{"name": "lab", "address": "192.168.77.11/24"}]
    ci = CloudInitConfig(hostname="x")
    manager.create(VmSpec(name="web", image_path="d", backend="noop", cloud_init=ci, private_networks=nets))
    with pytest.raises(InvalidSpec, match="address 192.168.77.11/24 on private network lab is taken by VM web"):
        manager.create(VmSpec(name="db", image_path="d", backend="noop", cloud_init=ci, private_networks=nets))
    assert manager.find("db") is None  # nothing half-made is left
    manager.create(VmSpec(name="db", image_path="d", backend="noop", cloud_init=ci, vmfile="/p/VMFile.kdl",
                          private_networks=nets))  # another scope: another switch


# --- the switch process, without QEMU ---------------------------------------------------------------------

@pytest.fixture
def lab():
    """A switch in a data dir with a short path (pytest's tmp_path leaves too little room for a socket path)."""
    data = tempfile.mkdtemp(prefix="vl")
    s = switches.Switch(data, "0123456789ab", "lab")
    yield s
    with s.locked():
        s.stop()
    shutil.rmtree(data, ignore_errors=True)


def test_switch_starts_once_is_proven_and_stops(lab):
    with lab.locked():
        pid = lab.ensure_running()
        assert lab.ensure_running() == pid  # running: not started twice
    assert os.path.exists(os.path.join(lab.ctl, "ctl"))
    assert oct(os.stat(lab.ctl).st_mode & 0o777) == "0o700" and oct(os.stat(lab.folder).st_mode & 0o777) == "0o700"
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    assert b"-t" not in argv and b"--tap" not in argv  # no host interface
    with lab.locked():
        assert lab.stop() == pid
    assert lab.pid() is None and not os.path.exists(lab.ctl)


def test_a_killed_switch_is_started_again(lab):
    """SIGKILL leaves the pidfile and sockets behind: the next start clears them and starts a new switch."""
    with lab.locked():
        pid = lab.ensure_running()
    os.kill(pid, signal.SIGKILL)
    switches.SwitchProcess(lab.folder).wait_gone(pid, 5)
    assert lab.pid() is None and os.path.exists(lab.process.pidfile)
    with lab.locked():
        again = lab.ensure_running()
    assert again != pid and lab.pid() == again


def test_a_stale_pidfile_never_signals_another_process(lab):
    """The pidfile names an unrelated process (a sleep): it is not believed, not signalled, and a switch starts."""
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        os.makedirs(lab.folder, exist_ok=True)
        with open(lab.process.pidfile, "w") as f:
            f.write("%d\n" % bystander.pid)
        assert lab.pid() is None
        with lab.locked():
            assert lab.stop() is None
            pid = lab.ensure_running()
        assert pid != bystander.pid and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_switch_copy_without_the_lock_is_not_ours(lab, tmp_path):
    """A vde_switch on the same control dir that does not hold switch.lock (started by hand) is not believed."""
    os.makedirs(lab.folder, exist_ok=True)
    rc = tmp_path / "rc"
    rc.write_text("")
    subprocess.run(["vde_switch", "-s", lab.ctl, "-p", lab.process.pidfile, "-f", str(rc), "-d"], check=True)
    for _attempt in range(100):  # the daemon writes its pidfile after its parent has exited
        if os.path.exists(lab.process.pidfile) and open(lab.process.pidfile).read().strip():
            break
        time.sleep(0.05)
    with open(lab.process.pidfile) as f:
        stranger = int(f.read())
    try:
        assert lab.pid() is None
    finally:
        os.kill(stranger, signal.SIGTERM)


def test_a_data_dir_too_long_for_the_sockets_is_a_clear_error(tmp_path):
    """Bad input: a data dir whose switch sockets would not fit a unix socket path gets an error naming it and the
    way out, before any vde_switch runs."""
    from ansible_collections.vmctl.core.plugins.module_utils.errors import SwitchFailed
    s = switches.Switch(str(tmp_path / ("d" * 80)), "0123456789ab", "lab")
    with pytest.raises(SwitchFailed, match="control directory .* bytes long") as err, s.locked():
        s.ensure_running()
    assert "XDG_DATA_HOME" in err.value.hint


def test_vmctl_create_private_network_option(tmp_path, monkeypatch):
    """`vmctl create --private-network lab:ADDR/24` records the NIC (no boot); a bad value is refused before
    anything is made, with the hint (bad input: a name with a space)."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli import main as cli
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)

    def create(*extra):
        args = cli.build_parser().parse_args(["create", "--name", "db", "--image", str(disk)] + list(extra))
        return args.handler(args)
    with pytest.raises(InvalidSpec, match="invalid private network name 'l b'") as err:
        create("--private-network", "l b:192.168.77.12/24")
    assert "1 to 32 letters" in err.value.hint and VmManager().find("db") is None
    assert create("--private-network", "lab:192.168.77.12/24", "--private-network", "raw") == 0
    nics = VmManager().get("db").private_networks
    assert [(n["name"], n["address"]) for n in nics] == [("lab", "192.168.77.12/24"), ("raw", None)]
    assert nics[0]["switch"] == private_network.switch_id(None, "lab")


def test_a_record_with_garbage_private_networks_is_still_released(lab):
    """Bad input: vms.json edited so the VM's private networks do not check. Its stop/destroy still releases it
    (from its name alone: its marker goes, and the switch left without users stops)."""
    with lab.locked():
        lab.ensure_running()
        lab.mark("web")
    handle = VmHandle(id="1", name="web", work_dir=os.path.join(os.path.dirname(lab.root), "vms", "web"),
                      private_networks=[{"name": "../../x", "address": "nonsense"}])
    assert switches.release(handle, lambda work_dir: False) == []
    assert lab.users() == [] and lab.pid() is None
