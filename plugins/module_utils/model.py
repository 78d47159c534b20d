# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's data types: what a VM should be (VmSpec) and what it is (VmHandle).

VmHandle serializes to the JSON layout of vmctl's ``vms.json`` (the user guide's "State Management"
chapter): ``network`` is ``{"type": "User"}`` / ``{"type": "Tap", "bridge": …}``, the backend is a
lowercase tag. Fields we added are optional and defaulted, so files written by vmctl load, and
unknown keys are kept so that nothing written by a newer version is lost on rewrite.
"""

from __future__ import annotations

__metaclass__ = type

import dataclasses
import os

from ansible_collections.vmctl.core.plugins.module_utils import checks, forwards
from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_name
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec

BACKENDS = ("qemu", "propolis", "noop")
ACCELS = ("auto", "kvm", "tcg")

# The settings a VmSpec and a VmHandle both hold, by the same name: a new VM takes them from its spec, and
# a change of one of them on an existing VM is applied at its next boot (no new disk needed).
BOOT_SETTINGS = ("vcpus", "memory_mb", "accel", "cpu", "machine", "vnc", "vnc_tcp", "kernel", "initrd", "kernel_append")
BOOT_SETTINGS += ("port_forwards", "shares", "firmware")  # issue 14 (forwards.py, guest/shares.py, backends/qemu/ovmf.py)
FIRMWARES = ("bios", "uefi")
NEXT_START_SETTINGS = ("port_forwards",)  # may change while the VM runs: recorded now, used from its next start

# The one table of defaults: the VMFile reader, the record -> spec conversion, the types below and the CLI use it
# (module argument specs repeat these values, as their documentation must state them).
DEFAULTS = {
    "vcpus": 1,
    "memory": 1024,        # MiB
    "network": "user",
    "ssh_user": "vm",
    "host_key_checking": "yes",
    "accel": "auto",
    "backend": "auto",
    "vnc": True,
    "vnc_tcp": False,
    "firmware": "bios",
}


class VmState:
    """Lifecycle states (lowercase strings, as vmctl prints them)."""

    PREPARING = "preparing"
    PREPARED = "prepared"
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    FAILED = "failed"
    STORED = (PREPARING, PREPARED, RUNNING, SUSPENDED, STOPPED, FAILED)  # what a record may hold
    ACTIVE = (RUNNING, SUSPENDED)  # a QEMU process exists
    UNKNOWN = "unknown"  # shown, never stored: the process lives but its monitor does not answer
    LIVE = ACTIVE + (UNKNOWN,)  # a QEMU process exists, whether or not its monitor answers


@dataclasses.dataclass
class NetworkConfig:
    """``user`` (SLIRP + SSH forward), ``tap`` (on ``bridge``), ``vnic`` (illumos, ``name``), ``none``."""

    type: str = "user"
    bridge: str | None = None
    name: str | None = None

    TYPES = ("user", "tap", "vnic", "none")

    def __post_init__(self):
        self.type = (self.type or "user").lower()
        if self.type not in self.TYPES:
            raise InvalidSpec("unknown network type %r" % self.type,
                              hint="Use one of: %s" % ", ".join(self.TYPES))
        if self.type == "tap" and not self.bridge:
            self.bridge = "br0"
        if self.type == "tap":
            checks.check_bridge(self.bridge)
        if self.type == "vnic" and not self.name:
            raise InvalidSpec("network type 'vnic' needs a VNIC name", hint="Set network name, e.g. vnic0")

    def to_json(self):
        data = {"type": self.type.capitalize()}
        if self.type == "tap":
            data["bridge"] = self.bridge
        if self.type == "vnic":
            data["name"] = self.name
        return data

    @classmethod
    def from_json(cls, data):
        if data is None:
            return cls()
        if isinstance(data, str):  # tolerate a bare "User"
            return cls(type=data)
        return cls(type=data.get("type", "user"), bridge=data.get("bridge"), name=data.get("name"))


@dataclasses.dataclass
class CloudInitConfig:
    """What goes into the NoCloud seed.

    With ``user_data`` set it is passed through untouched. Otherwise vmctl generates a cloud-config
    for the SSH user with ``ssh_public_keys`` (plus a generated per-VM key when ``generate_key``).
    """

    hostname: str | None = None
    ssh_public_keys: list = dataclasses.field(default_factory=list)
    user_data: str | None = None
    instance_id: str | None = None
    generate_key: bool = False

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        if data is None:
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass
class SshConfig:
    user: str = DEFAULTS["ssh_user"]
    private_key_path: str | None = None
    # "yes": only keys vmctl generated or read from the console; "accept-new": else the first key seen (host_keys.py)
    host_key_checking: str = DEFAULTS["host_key_checking"]

    def __post_init__(self):
        if self.host_key_checking not in ("yes", "accept-new"):
            raise InvalidSpec("unknown host_key_checking %r" % self.host_key_checking, hint="Use yes or accept-new")

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        if data is None:
            return None
        return cls(user=data.get("user") or DEFAULTS["ssh_user"], private_key_path=data.get("private_key_path"),
                   host_key_checking=data.get("host_key_checking") or DEFAULTS["host_key_checking"])


@dataclasses.dataclass
class VmSpec:
    """The desired VM. ``image_path`` is a local file (the image cache resolves URLs before this)."""

    name: str
    image_path: str
    vcpus: int = DEFAULTS["vcpus"]
    memory_mb: int = DEFAULTS["memory"]
    disk_gb: int | None = None
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    cloud_init: CloudInitConfig | None = None
    ssh: SshConfig | None = None
    image_format: str | None = None
    accel: str = DEFAULTS["accel"]
    cpu: str | None = None
    machine: str | None = None
    backend: str = "qemu"
    vmfile: str | None = None
    vnc: bool = True
    vnc_tcp: bool = False  # VNC on 127.0.0.1 with a password, instead of a unix socket in the work dir
    # Direct kernel boot (optional): used by the tiny test guest, open for a VMFile `kernel` node.
    kernel: str | None = None
    initrd: str | None = None
    kernel_append: str | None = None
    port_forwards: list = dataclasses.field(default_factory=list)  # forwards.check_forwards
    shares: list = dataclasses.field(default_factory=list)  # guest/shares.check_shares
    firmware: str = DEFAULTS["firmware"]

    def __post_init__(self):
        validate_name(self.name)
        if isinstance(self.network, dict):
            self.network = self._check(lambda data: NetworkConfig(**data), self.network)
        self._check_devices()
        self._check(checks.check_vcpus, self.vcpus)
        self._check(checks.check_memory, self.memory_mb)
        if self.disk_gb is not None:
            self._check(checks.check_disk, self.disk_gb)
        for label in ("cpu", "machine"):
            if getattr(self, label) is not None:
                self._check(checks.check_word, getattr(self, label))
        if self.kernel_append is not None:
            self._check(checks.check_text, "kernel_append", self.kernel_append)
        if self.accel not in ACCELS:
            raise InvalidSpec("VM %s: unknown accel %s" % (self.name, checks.short(self.accel)), hint="Use one of: %s" % ", ".join(ACCELS))
        if self.backend not in BACKENDS:
            raise InvalidSpec("VM %s: unknown backend %s" % (self.name, checks.short(self.backend)), hint="Use one of: %s" % ", ".join(BACKENDS))
        ci = self.cloud_init
        if ci is not None and ci.hostname is not None:
            self._check(checks.validate_hostname, ci.hostname)
        if self.ssh is not None:
            if ci is not None and ci.user_data is None:  # cloud-init creates this user
                self._check(checks.validate_user, self.ssh.user, prefix="cloud-init cannot create the user: ")
            else:
                self._check(checks.validate_login_user, self.ssh.user)

    def _check_devices(self):
        """Port forwards, shares and firmware (issue 14): checked and normalized, so that equal settings compare equal."""
        self.port_forwards = self._check(forwards.check_forwards, self.port_forwards)
        self.shares = self._check(shares.check_shares, self.shares)
        if self.firmware not in FIRMWARES:
            raise InvalidSpec("VM %s: unknown firmware %s" % (self.name, checks.short(self.firmware)),
                              hint="Use one of: %s" % ", ".join(FIRMWARES))
        if self.port_forwards and self.network.type != "user":
            raise InvalidSpec("VM %s: port forwards need user networking, not %s" % (self.name, self.network.type),
                              hint="Use network user, or reach the guest by its address on the %s network" % self.network.type)

    def _check(self, check, *args, prefix=""):
        """Run one of the shared checks; its message gets the VM's name, its class, hint and details stay."""
        try:
            return check(*args)
        except InvalidSpec as err:
            raise err.with_message("VM %s: %s%s" % (self.name, prefix, err.message))


# A snapshot record's fields and their types (the store checks each one on load).
SNAPSHOT_FIELDS = {"name": str, "ram": bool, "size": int, "vm_state_size": int, "created_at": float}


# Fields of vmctl's own handle, in its order; everything after is ours.
_HANDLE_PATHS = ("work_dir", "overlay_path", "seed_iso_path", "qmp_socket", "console_socket")


@dataclasses.dataclass
class VmHandle:
    """A managed VM as recorded in the store."""

    id: str
    name: str
    backend: str = "qemu"
    work_dir: str = ""
    overlay_path: str | None = None
    seed_iso_path: str | None = None
    pid: int | None = None
    qmp_socket: str | None = None
    console_socket: str | None = None
    vnc_addr: str | None = None
    vcpus: int = DEFAULTS["vcpus"]
    memory_mb: int = DEFAULTS["memory"]
    disk_gb: int | None = None
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    ssh_host_port: int | None = None
    mac_addr: str | None = None
    # --- additions (all optional) ---
    state: str = VmState.PREPARED
    image_path: str | None = None
    image_format: str | None = None
    accel: str = DEFAULTS["accel"]
    cpu: str | None = None
    machine: str | None = None
    vnc: bool = True
    vnc_tcp: bool = False  # VNC on 127.0.0.1 with a password, instead of a unix socket in the work dir
    pidfile: str | None = None
    console_log: str | None = None
    hostname: str | None = None
    ssh_user: str | None = None
    private_key_path: str | None = None
    known_hosts: str | None = None
    host_key_checking: str = DEFAULTS["host_key_checking"]  # SshConfig.host_key_checking
    console_offset: int = 0  # size of console.log when the latest start began: older text is never trusted
    cloud_init: bool = False
    vmfile: str | None = None
    created_at: float | None = None
    kernel: str | None = None
    initrd: str | None = None
    kernel_append: str | None = None
    port_forwards: list = dataclasses.field(default_factory=list)
    shares: list = dataclasses.field(default_factory=list)
    firmware: str = DEFAULTS["firmware"]
    # The provision plan as last run by up/provision: {"digest": "sha256:…", "completed": bool}, or None.
    provision: dict | None = None
    # Snapshots in the VM's overlay, oldest first: {"name", "ram" (RAM and devices held), "size" (bytes the
    # overlay grew by when it was taken), "vm_state_size", "created_at"} (see SNAPSHOT_FIELDS).
    snapshots: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)

    def to_json(self):
        data = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            data[f.name] = value.to_json() if f.name == "network" else value
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def from_json(cls, data):
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["network"] = NetworkConfig.from_json(data.get("network"))
        if isinstance(kwargs.get("backend"), str):
            kwargs["backend"] = kwargs["backend"].lower()
        handle = cls(**kwargs)
        handle.extra = {k: v for k, v in data.items() if k not in known}
        return handle

    @property
    def provision_log(self):
        """Where the output of the VM's provision steps is appended."""
        return os.path.join(self.work_dir, "provision.log")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
