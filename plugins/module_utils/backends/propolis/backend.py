# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Propolis/bhyve backend (illumos): one zone per VM, one propolis-server per zone, its REST API.

Layout: the VM's work directory holds ``disk0.raw`` (the image converted to raw, grown to the VM's
disk size) and ``seed.iso``; the zone ``vmctl-<name>`` (exclusive IP, the VM's VNIC, the bhyve
devices, the work directory lofs-mounted at the same path) runs propolis-server from its SMF
service, listening on the VM's ``address``.

propolis-server holds one VM, and ``Stop`` destroys it (Stopping → Stopped → Destroyed): a
stopped VM is "no VM in propolis-server" (or no server), and ``start`` sends a new
``PUT /instance``. Every illumos command goes through one runner object (``runner(argv)``).
"""

from __future__ import annotations

__metaclass__ = type

import base64
import contextlib
import hashlib
import os
import re
import shlex
import time
import uuid

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis import websocket
from ansible_collections.vmctl.core.plugins.module_utils.backends.base import SSH_DEADLINE, Backend, ConsoleEndpoint, prepare_cloud_init
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    IllumosCommandFailed, InvalidSpec, IoFailed, IpDiscoveryTimeout, PropolisApiError, PropolisCreateFailed, PropolisError,
    PropolisForeignVm, PropolisNoNetwork, PropolisNoSettings, PropolisTimeout, PropolisUnreachable, PropolisUnsupported,
    VnicMissing, ZoneMissing,
)
from ansible_collections.vmctl.core.plugins.module_utils import proc
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.api import TERMINAL_STATES, PropolisClient, split_address
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

DEFAULT_ADDRESS = "127.0.0.1:12400"
SERVICE = "svc:/system/illumos/propolis-server"
MAX_CPUS = 32  # bhyve's VM_MAXCPU
SEED_INLINE_MAX = 256 * 1024  # base64 bytes; above this the seed is a file backend (the body cap is 1 MiB)
NIL_UUID = "00000000-0000-0000-0000-000000000000"
VNIC_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,29}[0-9]")

# propolis InstanceState → our VmState. Creating: the VM objects exist but it was never run.
STATE_MAP = {
    "Creating": VmState.PREPARED, "Starting": VmState.RUNNING, "Running": VmState.RUNNING,
    "Rebooting": VmState.RUNNING, "Migrating": VmState.RUNNING, "Repairing": VmState.RUNNING,
    "Stopping": VmState.STOPPED, "Stopped": VmState.STOPPED, "Destroyed": VmState.STOPPED,
    "Failed": VmState.FAILED,
}


def env_settings():
    """Host-wide settings from the environment (documented in docs/propolis.md)."""
    env = os.environ
    return {
        "address": env.get("VMCTL_PROPOLIS_ADDRESS") or DEFAULT_ADDRESS,
        "prefix": shlex.split(env.get("VMCTL_PROPOLIS_COMMAND_PREFIX", "")),
        "brand": env.get("VMCTL_PROPOLIS_BRAND") or "sparse",
        "zone_root": env.get("VMCTL_PROPOLIS_ZONE_ROOT") or "/zones",
    }


def zone_name(vm):
    name = "vmctl-" + vm
    if len(name) > 64:
        name = "vmctl-%s-%s" % (vm[:48], hashlib.sha256(vm.encode()).hexdigest()[:8])
    return name


def normalize_mac(mac):
    """``2:8:20:a:b:c`` (illumos arp) and ``02:08:20:0a:0b:0c`` compare equal."""
    try:
        return ":".join("%02x" % int(part, 16) for part in mac.replace("\\:", ":").split(":"))
    except ValueError:
        return None


def parse_arp(output, mac):
    """The IPv4 address for ``mac`` in illumos ``arp -an`` output, or None."""
    want = normalize_mac(mac)
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", fields[1]) and normalize_mac(fields[-1]) == want:
            return fields[1]
    return None


def parse_zones(output):
    """``{zonename: state}`` from ``zoneadm list -cp``."""
    zones = {}
    for line in output.splitlines():
        fields = line.split(":")
        if len(fields) >= 3:
            zones[fields[1]] = fields[2]
    return zones


class IllumosRunner:
    """Runs illumos commands (proc.run): ``runner(argv, check=True)`` → proc.Result. ``prefix`` goes in front of
    every command (``["pfexec"]``, or ``["ssh", "root@host"]`` to drive another machine); tests pass a
    runner of their own that records and answers the commands."""

    def __init__(self, prefix=()):
        self.prefix = list(prefix)

    def __call__(self, argv, check=True, timeout=300):
        hint = "Check the command prefix (VMCTL_PROPOLIS_COMMAND_PREFIX)" if self.prefix else "This command exists on illumos hosts only"
        # an error names the illumos command, not the prefix, and not a long argument (zonecfg's script): details have all
        what = " ".join(arg if len(arg) <= 64 else "<%d characters>" % len(arg) for arg in argv)
        return proc.run(self.prefix + list(argv), error=IllumosCommandFailed, what=what, check=check, timeout=timeout,
                        missing_hint=hint)


class PropolisBackend(Backend):
    tag = "propolis"
    disk_format = "raw"

    def __init__(self, runner=None, address=None, server_timeout=60.0, start_timeout=120.0, settings=None):
        self.settings = dict(env_settings(), **(settings or {}))
        if address:
            self.settings["address"] = address
        self.runner = runner or IllumosRunner(self.settings["prefix"])
        self.server_timeout = server_timeout
        self.start_timeout = start_timeout

    # --- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def info(handle):
        info = handle.extra.get("propolis")
        if not info:
            raise PropolisNoSettings("VM %s has no propolis settings in the store" % handle.name)
        return info

    def client(self, handle, timeout=15.0):
        return PropolisClient(self.info(handle)["address"], handle.name, timeout=timeout)

    def instance(self, client, handle):
        """The server's instance if it is this VM's (``properties.id``), None without one; a server
        holding another VM that is not finished is an error: vmctl never drives someone else's VM."""
        instance = client.instance()
        if instance is None or instance["state"] in TERMINAL_STATES:
            return instance
        theirs = instance["properties"]
        if theirs["id"] != self.info(handle)["instance_id"]:
            raise PropolisForeignVm("VM %s: propolis-server at %s holds another VM, %r (%s), which is %s"
                                    % (handle.name, client.address, theirs.get("name"), theirs["id"], instance["state"]),
                                    address=client.address)
        return instance

    def run(self, argv, check=True):
        return self.runner(list(argv), check=check)

    def zone_state(self, zone):
        """The zone's state (configured, installed, running, …), or None when there is no such zone."""
        return parse_zones(self.run(["zoneadm", "list", "-cp"]).stdout).get(zone)

    # --- create --------------------------------------------------------------------------------------
    def allocate(self, spec, handle, known):
        """Record the propolis-server address (unique among VMs), the zone and the instance UUID."""
        if handle.extra.get("propolis"):
            return handle
        address = self.settings["address"]
        split_address(address)
        for other, raw in known.raw_items():
            if other != spec.name and isinstance(raw.get("propolis"), dict) and raw["propolis"].get("address") == address:
                raise InvalidSpec("VM %s: propolis-server address %s is already used by VM %s (one server holds one VM)"
                                  % (spec.name, address, other), name=spec.name,
                                  hint="Give each VM its own address (VMCTL_PROPOLIS_ADDRESS)")
        info = {"address": address, "zone": zone_name(spec.name), "instance_id": str(uuid.uuid4())}
        return handle.replace(extra=dict(handle.extra, propolis=info))

    def check_spec(self, spec):
        net = spec.network
        if net.type not in ("vnic", "none"):
            raise InvalidSpec("VM %s: network %r is not available on propolis" % (spec.name, net.type),
                              hint="Use network type vnic (an illumos VNIC) or none")
        if net.type == "vnic" and not VNIC_RE.fullmatch(net.name):
            raise InvalidSpec("VM %s: invalid VNIC name %r" % (spec.name, net.name),
                              hint="VNIC names are letters, digits and _, start with a letter, end with a digit, "
                                   "at most 31 characters (e.g. vnic0)")
        if spec.vcpus > MAX_CPUS:
            raise InvalidSpec("VM %s: propolis supports 1 to %d vCPUs, got %d" % (spec.name, MAX_CPUS, spec.vcpus))
        if spec.kernel:
            raise InvalidSpec("VM %s: propolis boots through its UEFI bootrom; direct kernel boot is not available"
                              % spec.name, hint="Leave kernel, initrd and kernel_append unset")
        if spec.shares:  # firmware: its bootrom is UEFI either way; port forwards need user networking (refused above)
            raise InvalidSpec("VM %s: propolis-server (API 5.0.0) has no shared-folder device; shares are not available"
                              % spec.name, hint="Leave shares unset, and copy files with a file provision step or vmctl cp",
                              name=spec.name)

    def prepare(self, spec, handle):
        """Raw disk and seed in the work directory, the VNIC's MAC, the zone configured and installed."""
        self.check_spec(spec)
        info = self.info(handle)
        files = paths.vm_files(handle.work_dir)
        changes = {"state": VmState.PREPARED, "image_path": os.path.abspath(spec.image_path)}
        if spec.network.type == "vnic":
            changes["mac_addr"] = self.vnic_mac(spec.name, spec.network.name)
        paths.make_vm_dir(handle.work_dir)
        if not os.path.exists(files["disk"]):
            tmp = files["disk"] + ".tmp"
            qemu_img.convert_raw(spec.image_path, tmp, spec.image_format)
            if spec.disk_gb and os.path.getsize(tmp) < spec.disk_gb * 1024 ** 3:
                qemu_img.resize(tmp, spec.disk_gb, "raw")
            os.replace(tmp, files["disk"])
        changes.update(overlay_path=files["disk"], image_format=spec.image_format)
        if spec.cloud_init is not None:
            changes.update(prepare_cloud_init(spec, handle, files))
        zone = info["zone"]
        state = self.zone_state(zone)
        if state is None:
            self.run(["zonecfg", "-z", zone, self.zone_config(handle, spec.network)])
            state = "configured"
        if state in ("configured", "incomplete"):
            self.run(["zoneadm", "-z", zone, "install"])
        return handle.replace(**changes)

    def zone_config(self, handle, network):
        """The zonecfg commands for the VM's zone (exclusive IP, bhyve devices, the work directory)."""
        zone = self.info(handle)["zone"]
        lines = ["create -b", "set brand=%s" % self.settings["brand"],
                 "set zonepath=%s" % os.path.join(self.settings["zone_root"], zone),
                 "set autoboot=false", "set ip-type=exclusive"]
        if network.type == "vnic":
            lines += ["add net", "set physical=%s" % network.name, "end"]
        for device in ("/dev/vmm/*", "/dev/vmmctl", "/dev/viona"):
            lines += ["add device", "set match=%s" % device, "end"]
        lines += ["add fs", "set dir=%s" % handle.work_dir, "set special=%s" % handle.work_dir, "set type=lofs", "end",
                  "commit"]
        return "; ".join(lines)

    def vnic_mac(self, vm, vnic):
        result = self.run(["dladm", "show-vnic", "-p", "-o", "LINK,OVER,MACADDRESS", vnic], check=False)
        if result.rc != 0:
            raise VnicMissing("VM %s: VNIC %s does not exist: %s" % (vm, vnic, (result.stderr or result.stdout).strip()),
                              vnic=vnic,
                              hint="Create it first, e.g. dladm create-vnic -l <physical link or etherstub> %s" % vnic)
        # -p with several fields escapes ':' as '\:'
        fields = re.split(r"(?<!\\):", result.stdout.strip().splitlines()[0])
        return normalize_mac(fields[2])

    # --- instance spec -------------------------------------------------------------------------------
    def ensure_request(self, handle):
        """The ``PUT /instance`` body (InstanceEnsureRequest) for this VM."""
        info = self.info(handle)
        if not 1 <= handle.vcpus <= MAX_CPUS:
            raise InvalidSpec("VM %s: propolis supports 1 to %d vCPUs, got %d" % (handle.name, MAX_CPUS, handle.vcpus))
        disk = handle.overlay_path or paths.vm_files(handle.work_dir)["disk"]
        components = {
            "com1": {"type": "serial_port", "component": {"num": "com1"}},
            "disk0": {"type": "virtio_disk", "component": {"backend_id": "disk0-backend", "pci_path": _pci(16)}},
            "disk0-backend": {"type": "file_storage_backend",
                              "component": {"path": disk, "readonly": False, "block_size": 512}},
            "boot-settings": {"type": "boot_settings", "component": {"order": [{"id": "disk0"}]}},
        }
        if handle.seed_iso_path:
            components["cloud-init"] = {"type": "virtio_disk",
                                        "component": {"backend_id": "cloud-init-backend", "pci_path": _pci(24)}}
            components["cloud-init-backend"] = self.seed_backend(handle.seed_iso_path)
        if handle.network.type == "vnic":
            components["net0"] = {"type": "virtio_nic", "component": {
                "backend_id": "net0-backend", "interface_id": NIL_UUID, "pci_path": _pci(8)}}
            components["net0-backend"] = {"type": "virtio_network_backend", "component": {"vnic_name": handle.network.name}}
        return {
            "properties": {
                "id": info["instance_id"], "name": handle.name, "description": "managed by vmctl.core",
                "metadata": {"project_id": NIL_UUID, "silo_id": NIL_UUID, "sled_id": NIL_UUID,
                             "sled_model": "vmctl", "sled_revision": 0, "sled_serial": os.uname()[1][:64]},
            },
            "init": {"method": "Spec", "value": {"spec": {
                "board": {"cpus": handle.vcpus, "memory_mb": handle.memory_mb,
                          "chipset": {"type": "i440_fx", "value": {"enable_pcie": False}}},
                "components": components,
            }}},
        }

    @staticmethod
    def seed_backend(path):
        """A small seed goes inline (no file needed in the zone); a large one is file-backed (1 MiB body cap)."""
        size = os.path.getsize(path)
        if 4 * ((size + 2) // 3) <= SEED_INLINE_MAX:
            with open(path, "rb") as f:
                blob = base64.b64encode(f.read()).decode("ascii")
            return {"type": "blob_storage_backend", "component": {"base64": blob, "readonly": True}}
        return {"type": "file_storage_backend", "component": {"path": path, "readonly": True, "block_size": 512}}

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, handle):
        """Zone booted, propolis-server up, the VM ensured (a new one if the last was destroyed), Run, wait for Running."""
        info = self.info(handle)
        zone = info["zone"]
        state = self.zone_state(zone)
        if state is None:
            raise ZoneMissing("VM %s: zone %s does not exist" % (handle.name, zone))
        if state in ("configured", "incomplete"):
            self.run(["zoneadm", "-z", zone, "install"])
            state = "installed"
        if state != "running":
            self.run(["zoneadm", "-z", zone, "boot"])
        client = self.client(handle)
        try:
            instance = self.instance(client, handle)
        except PropolisUnreachable:  # no server yet: start the zone's service and wait for its first answer
            self.start_server(zone, info["address"])
            client.wait_until_up(self.server_timeout)
            instance = self.instance(client, handle)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if time.monotonic() > deadline:
                raise PropolisTimeout("VM %s: propolis-server still holds a VM being run down after %ss"
                                      % (handle.name, self.start_timeout), name=handle.name)
            current = instance["state"] if instance else None
            if current in ("Stopping", "Stopped"):  # the old VM is being run down: wait, then ensure anew
                client.wait_for(TERMINAL_STATES, max(deadline - time.monotonic(), 1))
                instance = self.instance(client, handle)
                continue
            if current is None or current in TERMINAL_STATES:
                instance = self._ensure(client, handle)
                continue
            break
        if instance["state"] == "Creating":
            client.request_state("Run")
        client.wait_for(("Running",), max(deadline - time.monotonic(), 1))
        return handle.replace(state=VmState.RUNNING, pid=None)

    def start_server(self, zone, address):
        """Point the zone's propolis-server service at ``address`` and enable it."""
        host, port = split_address(address)
        for argv in (["svccfg", "-s", SERVICE, "setprop", "config/listen_addr=%s" % host],
                     ["svccfg", "-s", SERVICE, "setprop", "config/listen_port=%d" % port],
                     ["svcadm", "refresh", SERVICE + ":default"],
                     ["svcadm", "enable", "-t", SERVICE + ":default"]):
            self.run(["zlogin", zone] + argv)

    def _ensure(self, client, handle):
        """``PUT /instance``; 409 (a VM appeared meanwhile) is answered by looking at it."""
        try:
            client.ensure(self.ensure_request(handle))
        except PropolisApiError as err:
            status = err.details.get("status")
            if status == 409:
                return self.instance(client, handle)
            if status and status >= 500:
                raise PropolisCreateFailed("VM %s: propolis-server could not create the VM: %s" % (handle.name, err.message),
                                           hint="Its disk file, VNIC, vCPU count or /dev/vmmctl access is wrong; "
                                                "see propolis-server's log in zone %s" % self.info(handle)["zone"],
                                           **err.details)
            raise
        return self.instance(client, handle)

    def stop(self, handle, timeout=30):
        """Stop (propolis powers the VM off and destroys it; the disk stays), wait for Destroyed, halt the zone."""
        client = self.client(handle)
        try:
            instance = self.instance(client, handle)
        except PropolisUnreachable:
            instance = None
        if instance is not None and instance["state"] not in TERMINAL_STATES:
            try:
                client.request_state("Stop")
            except PropolisApiError as err:
                if err.details.get("status") != 424:  # 424: it was run down meanwhile
                    raise
            client.wait_for(TERMINAL_STATES, max(timeout, 1))
        zone = self.info(handle)["zone"]
        if self.zone_state(zone) == "running":
            self.run(["zoneadm", "-z", zone, "halt"])
        return handle.replace(state=VmState.STOPPED, pid=None)

    def suspend(self, handle):
        raise PropolisUnsupported("VM %s: propolis-server (API 5.0.0) cannot pause a VM; its state requests are "
                                  "only Run, Stop and Reboot" % handle.name, name=handle.name,
                                  hint="Stop it instead (state=stopped keeps the disk), or use the qemu backend")

    def resume(self, handle):
        raise PropolisUnsupported("VM %s: propolis-server (API 5.0.0) has no paused VMs to resume" % handle.name,
                                  name=handle.name, hint="Start it (state=running)")

    def destroy(self, handle):
        """Stop the VM if a server holds it, then halt, uninstall and delete the zone; remove the work directory."""
        info = handle.extra.get("propolis") or {}
        zone = info.get("zone")
        if info:
            with contextlib.suppress(PropolisError):  # halting the zone below ends propolis-server anyway
                client = self.client(handle, timeout=5)
                instance = self.instance(client, handle)
                if instance is not None and instance["state"] not in TERMINAL_STATES:
                    client.request_state("Stop")
                    client.wait_for(TERMINAL_STATES, 10)
        state = self.zone_state(zone) if zone else None
        if state in ("running", "ready", "shutting_down", "down"):
            self.run(["zoneadm", "-z", zone, "halt"])
            state = "installed"
        if state in ("installed", "incomplete"):
            self.run(["zoneadm", "-z", zone, "uninstall", "-F"])
            state = "configured"
        if state == "configured":
            self.run(["zonecfg", "-z", zone, "delete", "-F"])
        paths.remove_vm_dir(handle.work_dir, handle.name)
        if os.path.lexists(handle.work_dir):
            raise IoFailed("VM %s: could not remove %s" % (handle.name, handle.work_dir))

    def ssh_deadline(self, handle):
        """bhyve guests run on the hardware: the shorter deadline."""
        return SSH_DEADLINE["kvm"]

    def state(self, handle):
        try:
            instance = self.instance(self.client(handle, timeout=5), handle)
        except PropolisUnreachable:
            instance = None
        except PropolisForeignVm:
            instance = None  # the server runs another VM: this one is not running there
        if instance is None:  # no server, or a server without a VM (or without this one)
            if handle.state in (VmState.PREPARING, VmState.PREPARED, VmState.FAILED):
                return handle.state
            return VmState.STOPPED
        return STATE_MAP.get(instance["state"], VmState.FAILED)

    # --- network & console ---------------------------------------------------------------------------
    def guest_ip(self, handle, timeout=0):
        """The guest's IPv4 address from the host's ARP table (``arp -an``), matched by the VNIC's MAC."""
        if handle.network.type != "vnic" or not handle.mac_addr:
            raise PropolisNoNetwork("VM %s has network %r: no guest IP" % (handle.name, handle.network.type))
        deadline = time.monotonic() + timeout
        while True:
            ip = parse_arp(self.run(["arp", "-an"]).stdout, handle.mac_addr)
            if ip or time.monotonic() >= deadline:
                break
            time.sleep(1)
        if not ip:
            raise IpDiscoveryTimeout("VM %s: no IP address in the ARP table for MAC %s (VNIC %s)"
                                     % (handle.name, handle.mac_addr, handle.network.name),
                                     hint="The guest may not have an address yet, or the host has not talked to it; "
                                          "check the guest's serial console")
        return ip

    def console_endpoint(self, handle):
        return ConsoleEndpoint("websocket", self.client(handle).serial_url())

    def open_console(self, handle):
        """The serial websocket as a stream (the last 16 KiB of output first, as propolis-cli does)."""
        return websocket.MessageStream(self.client(handle).serial(buffered=False))


def _pci(device):
    return {"bus": 0, "device": device, "function": 0}
