"""TAP networking on a real Linux bridge: QEMU's bridge helper attaches the VM, dnsmasq hands out
an address, the engine finds the guest's IP by the VM's MAC, and SSH reaches it on port 22."""

import contextlib
import os
import subprocess
import time

import pytest
from support.guests import debian_spec, ssh_argv

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig

pytestmark = [pytest.mark.slow, pytest.mark.guest]

BRIDGE_CONF = "/etc/qemu/bridge.conf"


def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def free_subnet():
    """A 10.213.N.0/24 that no route of this host uses: a bridge left behind by a killed run (or
    another run at the same time) keeps its route, and a second route to the same /24 would send
    our SSH packets to the wrong bridge ("No route to host")."""
    used = set(sh("ip", "-4", "-o", "route", "show", "table", "all").split())
    for n in range(77, 255):
        if "10.213.%d.0/24" % n not in used:
            return "10.213.%d" % n
    pytest.fail("no free 10.213.N.0/24 subnet on this host")


@pytest.fixture
def bridge(tmp_path):
    """A bridge on a free 10.213.N.0/24, allowed for qemu-bridge-helper, with dnsmasq serving DHCP on
    it; yields (bridge name, subnet prefix).

    QEMU's helper reads only /etc/qemu/bridge.conf, so the allow line goes there; the file (its bytes
    and mode, or its absence, and /etc/qemu's) is restored exactly afterwards.
    """
    name = "vmctlbr%d" % (os.getpid() % 10000)
    subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)  # left by a killed run
    subnet = free_subnet()
    sh("ip", "link", "add", "name", name, "type", "bridge")
    saved_conf = saved_mode = None
    made_dir = not os.path.isdir(os.path.dirname(BRIDGE_CONF))
    dnsmasq = None
    leases = "/var/lib/misc/vmctl-test-%s.leases" % name
    try:
        sh("ip", "addr", "add", subnet + ".1/24", "dev", name)
        sh("ip", "link", "set", name, "up")
        if os.path.exists(BRIDGE_CONF):
            with open(BRIDGE_CONF, "rb") as f:
                saved_conf = f.read()
            saved_mode = os.stat(BRIDGE_CONF).st_mode & 0o7777
        os.makedirs(os.path.dirname(BRIDGE_CONF), exist_ok=True)
        with open(BRIDGE_CONF, "a") as f:
            f.write("allow %s\n" % name)
        os.makedirs(os.path.dirname(leases), exist_ok=True)
        dnsmasq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
             "--interface=%s" % name, "--except-interface=lo", "--dhcp-range=%s.50,%s.99,1h" % (subnet, subnet),
             "--dhcp-leasefile=%s" % leases, "--pid-file=%s" % (tmp_path / "dnsmasq.pid")],
            stderr=open(tmp_path / "dnsmasq.log", "w"))
        yield name, subnet
    finally:
        if dnsmasq:
            dnsmasq.terminate()
            dnsmasq.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(leases)
        if saved_conf is None:
            with contextlib.suppress(OSError):
                os.unlink(BRIDGE_CONF)
            if made_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(BRIDGE_CONF))
        else:
            with open(BRIDGE_CONF, "wb") as f:
                f.write(saved_conf)
            os.chmod(BRIDGE_CONF, saved_mode)
        subprocess.run(["ip", "link", "del", name], check=False)


def test_tap_vm_gets_an_address_found_by_its_mac(test_images, bridge):
    bridge, subnet = bridge
    manager = VmManager()
    spec = debian_spec(test_images, name="tapvm", hostname="tapvm", network=NetworkConfig(type="tap", bridge=bridge))
    handle = manager.create(spec)[0]
    assert handle.ssh_host_port is None  # no SLIRP forward on a bridged VM
    try:
        handle = manager.start("tapvm")[0]
        # the tap device QEMU's helper made is a port of our bridge
        ports = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True, check=False).stdout
        assert "tap" in ports
        ip = manager.endpoint(handle, guest_ip_timeout=240)[0]
        assert ip.startswith(subnet + ".")
        out = None
        for _attempt in range(60):  # sshd may still be starting when DHCP is done
            result = subprocess.run(ssh_argv(handle, "cloud-init status --wait >/dev/null; cat /sys/class/net/*/address; hostname",
                                             host=ip, port=22), capture_output=True, text=True, timeout=300, check=False)
            if result.returncode == 0:
                out = result.stdout
                break
            time.sleep(3)
        assert out is not None, result.stderr
        assert handle.mac_addr.lower() in out.lower().split()
        assert out.split()[-1] == "tapvm"
    finally:
        manager.destroy("tapvm")
