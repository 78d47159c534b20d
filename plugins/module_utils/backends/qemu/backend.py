# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU/KVM backend (Linux).

Work directory per VM (its files are named in paths.VM_FILES): overlay.qcow2, seed.iso, qmp.sock,
console.sock, console.log, qemu.pid, keys and known_hosts. QEMU runs daemonized and holds a lock on its pidfile; we test that lock and
the process's command line before believing (or signalling) a PID, so a stale pidfile never hits
an unrelated process.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import errno
import hashlib
import os
import random
import re
import secrets
import signal
import socket
import stat
import time

from ansible_collections.vmctl.core.plugins.module_utils import forwards, paths, private_network
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import devices, net, snapshots, switch
from ansible_collections.vmctl.core.plugins.module_utils.guest import network_config
from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.backends.base import (
    SSH_DEADLINE, Backend, ConsoleEndpoint, prepare_cloud_init, write_known_hosts,
)
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    InvalidAccel, InvalidSpec, InvalidState, IoFailed, IpDiscoveryTimeout, MonitorNotAnswering, PortInUse, QmpError,
    QmpTimeout, SnapshotFailed, SpawnFailed, StopFailed, VmctlError,
)
from ansible_collections.vmctl.core.plugins.module_utils.proc import ProvenProcess, cmdline_and_state, find_tool, run
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.qmp import QmpClient
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

SSH_PORT_RANGE = (10022, 10122)
QEMU_BINARY = "qemu-system-x86_64"


qemu_escape = devices.qemu_escape  # QEMU option values: a comma is written as two


POWER_BUTTON_REPEAT = 5  # seconds between ACPI power button presses during a graceful stop
QMP_TIMEOUT = 3.0  # seconds for each QMP call: a hung monitor degrades that VM alone, quickly
SIGNAL_WAIT = 5.0  # seconds to wait for QEMU to exit after SIGTERM, then after SIGKILL


def resolve_accel(requested, binary="qemu-system-x86_64"):
    """``auto`` → kvm when KVM really works here, else tcg; ``VMCTL_ACCEL`` overrides ``auto``."""
    accel = requested or "auto"
    if accel == "auto":
        accel = os.environ.get("VMCTL_ACCEL", "auto") or "auto"
    if accel == "auto":
        accel = "kvm" if kvm_usable(binary) else "tcg"
    if accel not in ("kvm", "tcg"):
        raise InvalidAccel("unknown acceleration %r" % accel)
    return accel


_KVM_PROBE = {}


KVM_PROBE_TIMEOUT = 30.0


def kvm_usable(binary="qemu-system-x86_64"):
    """Whether QEMU can start a KVM vCPU with ``-cpu host`` (cached per process).

    An accessible /dev/kvm is not enough: under nested virtualization QEMU may abort at vCPU setup
    ("failed to set MSR"). The probe asks a paused QEMU for its status over QMP: QMP answers only
    after the machine (and its vCPUs) are set up, so an answer proves KVM works, however loaded the
    host is; an abort, or no answer within the probe's generous deadline, falls back to TCG.
    """
    if binary in _KVM_PROBE:
        return _KVM_PROBE[binary]
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if usable:
        argv = [binary, "-machine", "q35,accel=kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                "-S", "-monitor", "none", "-serial", "none", "-qmp", "stdio"]
        commands = b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n{"execute": "quit"}\n'
        try:
            probe = run(argv, input=commands, text=False, check=False, timeout=KVM_PROBE_TIMEOUT)
            usable = b'"status"' in probe.stdout and b'"prelaunch"' in probe.stdout
        except VmctlError:  # not installed, or no answer in time
            usable = False
    _KVM_PROBE[binary] = usable
    return usable


def port_is_free(port, host="127.0.0.1"):
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ssh_port(name, taken):
    """Deterministic first choice (hash of the name) in vmctl's range, then the next free one."""
    low, high = SSH_PORT_RANGE
    span = high - low + 1
    first = int(hashlib.sha256(name.encode()).hexdigest(), 16) % span
    for i in range(span):
        port = low + (first + i) % span
        if port not in taken and port_is_free(port):
            return port
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_mac(taken):
    while True:
        mac = "52:54:00:%02x:%02x:%02x" % (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
        if mac not in taken:
            return mac


class QemuProcess(ProvenProcess):
    """The QEMU process of one VM, proven through the VM's own pidfile ``<work_dir>/qemu.pid``.

    A PID is believed (and signalled) only when that process holds the POSIX lock QEMU takes on
    its ``-pidfile`` (checked in /proc/locks against the file's inode) and its command line gives
    that very pidfile: a stale file, a PID written by someone else, or another VM's QEMU never
    passes. Signals go through a pidfd taken before the proof is re-checked, so a PID reused in
    between is not hit either.
    """

    def __init__(self, work_dir):
        self.pidfile = paths.vm_files(work_dir)["pidfile"]

    def pid(self):
        """PID of the live QEMU that proves to own this pidfile, or None."""
        try:
            fd = os.open(self.pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            content = os.read(fd, 64).decode("ascii", "replace").strip() if stat.S_ISREG(st.st_mode) else ""
        finally:
            os.close(fd)
        if not content.isdigit():
            return None
        pid = int(content)
        return pid if self._holds_lock(pid, st) and self.is_ours(pid) else None

    @staticmethod
    def _holds_lock(pid, st):
        """Whether ``pid`` holds a POSIX lock on the file of ``st`` (lines of /proc/locks:
        ``1: POSIX ADVISORY WRITE <pid> <major>:<minor>:<inode> <start> <end>``)."""
        device = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        try:
            with open("/proc/locks") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 6 and fields[1] == "POSIX" and fields[4] == str(pid) \
                            and fields[5].endswith(":%d" % st.st_ino) and fields[5] == device:
                        return True
        except OSError:
            pass
        return False

    def is_ours(self, pid):
        """``pid`` is alive (not a zombie) and was started with ``-pidfile`` naming this pidfile."""
        seen = cmdline_and_state(pid)
        if seen is None:
            return False
        argv, state = seen
        wanted = self.pidfile.encode()
        return state != "Z" and any(a == b"-pidfile" and b == wanted for a, b in zip(argv, argv[1:]))


def _qemu_alive(work_dir):
    """Whether the QEMU of the VM in ``work_dir`` runs (its pidfile proof): a user of a private switch."""
    return QemuProcess(work_dir).pid() is not None


class QemuBackend(Backend):
    tag = "qemu"

    def __init__(self, binary=QEMU_BINARY, qmp_timeout=QMP_TIMEOUT, bridge_acl_file=None):
        self.binary = binary
        self.qmp_timeout = qmp_timeout
        self.bridge_acl_file = bridge_acl_file  # None: $VMCTL_BRIDGE_CONF or /etc/qemu/bridge.conf

    def _check_bridge(self, name, network):
        """A TAP VM's bridge must be allowed in qemu-bridge-helper's ACL (else QEMU fails obscurely)."""
        if network.type == "tap":
            net.check(network.bridge, name, self.bridge_acl_file)

    def allocate(self, spec, handle, known):
        """Pick SSH port and MAC unique among ``known`` handles (called under the store lock)."""
        others = [raw for name, raw in known.raw_items() if name != spec.name]
        changes = {}
        if not handle.mac_addr:
            changes["mac_addr"] = random_mac({raw.get("mac_addr") for raw in others})
        if spec.network.type == "user" and not handle.ssh_host_port:
            changes["ssh_host_port"] = pick_ssh_port(spec.name, self._taken_ports(others, spec.port_forwards))
        forwards.check_free(spec.name, spec.port_forwards, known)  # another VM's forward, or another program's port
        private_network.check_taken(spec.name, handle.private_networks, [(r.get("name"), r.get("private_networks")) for r in others])
        return handle.replace(**changes) if changes else handle

    @staticmethod
    def _taken_ports(others, own_forwards=()):
        """TCP ports an SSH forward must not take: other VMs' SSH and forwarded ports, and this VM's forwards."""
        taken = {raw.get("ssh_host_port") for raw in others}
        taken |= {port for raw in others for proto, port in forwards.host_ports(raw) if proto == "tcp"}
        return taken | {f["host"] for f in own_forwards if f["protocol"] == "tcp"}

    def prepare(self, spec, handle):
        """Create overlay, keys and seed ISO in the work directory. Safe to re-run after a crash."""
        find_tool(self.binary)
        self._check_bridge(spec.name, spec.network)
        files = paths.vm_files(handle.work_dir)
        for what, path in (("kernel", spec.kernel), ("initrd", spec.initrd)):
            if path:
                qemu_img.require_file(path, what)  # a FIFO or /dev/zero would hang QEMU's start
        paths.make_vm_dir(handle.work_dir)
        self._prepare_devices(spec, handle)
        image_format = spec.image_format or qemu_img.detect_format(spec.image_path)
        if spec.disk_gb:
            self.check_disk_size(spec.name, spec.image_path, spec.disk_gb)
        if not os.path.exists(files["overlay"]):
            tmp = files["overlay"] + ".tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            qemu_img.create_overlay(spec.image_path, tmp, image_format, spec.disk_gb)
            os.replace(tmp, files["overlay"])
        changes = dict(
            overlay_path=files["overlay"], qmp_socket=files["qmp"], console_socket=files["console"],
            console_log=files["console_log"], pidfile=files["pidfile"], image_path=os.path.abspath(spec.image_path),
            image_format=image_format, state=VmState.PREPARED,
        )
        ci = spec.cloud_init
        if ci is not None:
            changes.update(prepare_cloud_init(spec, handle, files, network_config.build(
                handle.mac_addr, spec.network.type in ("user", "tap"), private_network.nics_of(handle))))
        # No key generated (user-data, no cloud-init): pinned from the console, so `vmctl ssh --user --key` works too.
        changes.setdefault("known_hosts", files["known_hosts"])
        return handle.replace(**changes)

    @staticmethod
    def _prepare_devices(spec, handle):
        """Issue 14 at create: the shares' folders are usable, and a UEFI VM gets its own VARS copy (missing OVMF: error)."""
        devices.check_share_sources(spec.name, spec.shares)
        if spec.firmware == "uefi":
            devices.prepare_vars(handle.work_dir, devices.find_ovmf()[1])

    @staticmethod
    def check_disk_size(name, image_path, disk_gb):
        """An overlay cannot be smaller than its base image: refuse a ``disk_gb`` below the image's size."""
        virtual = qemu_img.info(image_path).get("virtual-size", 0)
        if disk_gb * 1024 ** 3 < virtual:
            raise InvalidSpec("VM %s: disk %d GB is smaller than the image's %.1f GB" % (name, disk_gb, virtual / 1024.0 ** 3),
                              hint="Set disk to at least the image size, or leave it unset", name=name)

    def before_start(self, handle, transaction):
        """A user-network VM whose SSH forward port another program took since it was created moves to a
        free port (recorded in the store; the pinned host key does not depend on the port). A forwarded port that
        is taken is an error (the forward's host port is the user's choice, never moved)."""
        self._check_forwards_free(handle, transaction)
        if handle.network.type != "user" or not handle.ssh_host_port or port_is_free(handle.ssh_host_port):
            return handle
        with transaction() as vms:
            taken = self._taken_ports([raw for _name, raw in vms.raw_items()], handle.port_forwards)
            port = pick_ssh_port(handle.name, taken)
            handle = handle.replace(ssh_host_port=port, extra=dict(handle.extra, port_moved_from=handle.ssh_host_port))
            vms[handle.name] = handle
        return handle

    @staticmethod
    def _pin_console_keys(handle):
        """Pin the host keys this boot printed (cloud-init prints them on the first boot only), before
        the window closes: at stop, and at the next start (after a crash)."""
        if handle.known_hosts:
            host_keys.pin_from_console(handle.known_hosts, handle.console_log, handle.console_offset, handle.ssh_host_port)

    _write_known_hosts = staticmethod(write_known_hosts)

    # --- process -------------------------------------------------------------------------------
    def _process(self, handle):
        # Paths come from the work dir only: a pidfile or socket path stored in the record is never trusted.
        return QemuProcess(handle.work_dir)

    def command_line(self, handle):
        """The argv that starts this VM (daemonized)."""
        f = paths.vm_files(handle.work_dir)
        accel = resolve_accel(handle.accel, self.binary)
        cpu = handle.cpu or ("host" if accel == "kvm" else "max")
        machine = handle.machine or "q35"
        argv = [
            self.binary,
            "-name", "%s,process=vmctl-%s" % (qemu_escape(handle.name), qemu_escape(handle.name)),
            "-machine", "%s,accel=%s" % (qemu_escape(machine), accel),
            "-cpu", qemu_escape(cpu),
            "-smp", str(handle.vcpus), "-m", str(handle.memory_mb),
            "-drive", "file=%s,if=virtio,format=qcow2,discard=unmap" % qemu_escape(f["overlay"]),
            "-device", "virtio-rng-pci",
            "-chardev", "socket,id=serial0,path=%s,server=on,wait=off,logfile=%s,logappend=on"
            % (qemu_escape(f["console"]), qemu_escape(f["console_log"])),
            "-serial", "chardev:serial0",
            "-qmp", "unix:%s,server=on,wait=off" % qemu_escape(f["qmp"]),
            "-display", "none",
            "-pidfile", f["pidfile"],
            "-daemonize",
        ]
        if handle.seed_iso_path:
            argv += ["-drive", "file=%s,if=virtio,format=raw,readonly=on" % qemu_escape(handle.seed_iso_path)]
        argv += self._network_args(handle)
        for index, (ctl, mac) in enumerate(switch.ports(handle)):  # the private networks' NICs
            argv += ["-netdev", "vde,id=priv%d,sock=%s" % (index, qemu_escape(ctl)),
                     "-device", "virtio-net-pci,netdev=priv%d,mac=%s" % (index, mac)]
        argv += devices.firmware_args(handle.work_dir, handle.firmware) + devices.virtfs_args(handle.shares)
        if handle.vnc and handle.vnc_tcp:
            argv += ["-vnc", "127.0.0.1:0,to=99,password=on"]  # the password is set over QMP once started
        elif handle.vnc:
            argv += ["-vnc", "unix:%s" % qemu_escape(f["vnc"])]
        if handle.kernel:
            argv += ["-kernel", handle.kernel]
            if handle.initrd:
                argv += ["-initrd", handle.initrd]
            if handle.kernel_append:
                argv += ["-append", handle.kernel_append]
        return argv

    @staticmethod
    def _network_args(handle):
        net = handle.network
        mac = handle.mac_addr
        if net.type == "user":
            return ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22%s" % (handle.ssh_host_port, devices.hostfwd(handle.port_forwards)),
                    "-device", "virtio-net-pci,netdev=net0,mac=%s" % mac]
        if net.type == "tap":
            # qemu-bridge-helper creates the tap and attaches it to the bridge (allowed in /etc/qemu/bridge.conf).
            return ["-netdev", "bridge,id=net0,br=%s" % qemu_escape(net.bridge),
                    "-device", "virtio-net-pci,netdev=net0,mac=%s" % mac]
        if net.type == "none":
            return ["-nic", "none"]
        raise InvalidState("VM %s: network type %r is not available on QEMU" % (handle.name, net.type),
                           hint="vnic networking needs the propolis backend on illumos; use user, tap or none")

    def start(self, handle):
        current = self.state(handle)
        if current in VmState.ACTIVE:
            return handle.replace(state=current, pid=self._process(handle).pid())
        find_tool(self.binary)
        self._check_bridge(handle.name, handle.network)
        f = paths.vm_files(handle.work_dir)
        if not os.path.exists(f["overlay"]):
            raise InvalidState("VM %s has no disk overlay %s" % (handle.name, f["overlay"]),
                               hint="The work directory was removed; destroy and recreate the VM")
        paths.check_vm_files(handle.work_dir)  # QEMU would follow a planted symlink (console.log)
        for stale in (f["qmp"], f["console"], f["pidfile"], f["vnc"], f["vnc_password"]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        self._pin_console_keys(handle)
        console_offset = host_keys.console_size(f["console_log"])  # only what this boot prints is trusted
        if handle.network.type == "user" and not port_is_free(handle.ssh_host_port):
            raise PortInUse("VM %s: SSH forward port 127.0.0.1:%d is in use by another program" % (handle.name, handle.ssh_host_port),
                            hint="Free the port, or destroy and recreate the VM to get another one")
        devices.check_share_sources(handle.name, handle.shares)  # a share's folder may be gone since create
        argv = self.command_line(handle)
        with switch.attached(handle, _qemu_alive):  # the private networks' switches run (and stay) while QEMU joins them
            result = run(argv, error=SpawnFailed, what="VM %s: starting QEMU" % handle.name, check=False, timeout=120)
            if result.rc != 0:
                hint = None
                if handle.network.type == "tap" and "acl file" in result.stderr:
                    hint = "qemu-bridge-helper refused bridge %s: add the line `allow %s` to %s" % (
                        handle.network.bridge, handle.network.bridge, net.DEFAULT_ACL_FILE)
                raise SpawnFailed("VM %s: QEMU failed to start (exit %d): %s" % (handle.name, result.rc, result.stderr.strip()),
                                  hint=hint, argv=argv)
            pid = self._process(handle).pid()
            if pid is None:
                raise SpawnFailed("VM %s: QEMU exited right after starting; see %s" % (handle.name, f["console_log"]))
        self._make_private(f)
        vnc_addr = None
        with self._qmp(handle) as qmp:
            if handle.vnc and handle.vnc_tcp:
                qmp.execute("change-vnc-password", {"password": self._new_vnc_password(f["vnc_password"])})
                vnc = qmp.query_vnc() or {}
                if vnc.get("enabled"):
                    vnc_addr = "%s:%s" % (vnc.get("host"), vnc.get("service"))
            elif handle.vnc:
                vnc_addr = "unix:%s" % f["vnc"]
        return handle.replace(state=VmState.RUNNING, pid=pid, vnc_addr=vnc_addr, console_offset=console_offset)

    @staticmethod
    def _check_forwards_free(handle, transaction):
        """Every forwarded host port is free at start; else the running VM of the store that holds it, or
        another program, is named."""
        if not handle.port_forwards or handle.network.type != "user":
            return
        with transaction() as known:
            def running(name):  # its QEMU proves to be alive (paths derived from the name, never the record's)
                with contextlib.suppress(VmctlError):
                    other = known.get(name)
                    return other is not None and QemuProcess(other.work_dir).pid() is not None
                return False
            forwards.check_free(handle.name, handle.port_forwards, known, running_holder=running)

    @staticmethod
    def _make_private(files):
        """QEMU's sockets, pidfile and console.log: 0600 (a daemonized QEMU sets umask 027 itself)."""
        for key in ("qmp", "console", "vnc", "pidfile", "console_log"):
            with contextlib.suppress(FileNotFoundError):
                if not os.path.islink(files[key]):
                    os.chmod(files[key], 0o600)

    @staticmethod
    def _new_vnc_password(path):
        """A fresh VNC password (VNC uses at most 8 characters), written to ``path`` with mode 0600."""
        alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        password = "".join(secrets.choice(alphabet) for dummy in range(8))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return password

    def _qmp(self, handle, timeout=None):
        """A connected QMP client (each call has a short deadline). A live QEMU whose monitor does not
        answer, or whose socket is gone, raises MonitorNotAnswering; a QEMU that exited, QmpError."""
        path = paths.vm_files(handle.work_dir)["qmp"]
        client = QmpClient(path, timeout or self.qmp_timeout)
        try:
            return client.connect()
        except QmpError as err:
            if isinstance(err, QmpTimeout) or err.details.get("errno") == errno.EAGAIN:  # EAGAIN: its backlog is full
                reason = "monitor not answering"
            else:
                reason = "monitor unreachable" if os.path.exists(path) else "monitor socket missing"
            raise self._monitor_error(handle, reason, err)

    def _monitor_error(self, handle, reason, err):
        """``err`` as MonitorNotAnswering when QEMU is alive; as itself when QEMU has exited."""
        pid = self._process(handle).pid()
        if pid is None:
            return err
        return MonitorNotAnswering(
            "VM %s: QEMU (pid %s) is alive, %s (%s)" % (handle.name, pid, reason, err.message),
            hint="QEMU may be stopped (SIGSTOP; 'kill -CONT %s' resumes it) or hung; 'vmctl stop %s' ends it "
                 "with SIGTERM, then SIGKILL" % (pid, handle.name), reason=reason, pid=pid, name=handle.name)

    def _query_status(self, handle):
        """QEMU's run status, or None when it is not running (or exited while asked)."""
        if self._process(handle).pid() is None:
            return None
        try:
            with self._qmp(handle) as qmp:
                return (qmp.query_status() or {}).get("status")
        except MonitorNotAnswering:
            raise
        except QmpTimeout as err:  # connected, then the call did not answer
            raise self._monitor_error(handle, "monitor not answering", err)
        except QmpError as err:
            if self._process(handle).pid() is not None:
                raise self._monitor_error(handle, "monitor unreachable", err)
            return None

    def pid(self, handle):
        """The pid of this VM's own QEMU (proven by its pidfile lock and command line), or None."""
        return self._process(handle).pid()

    def alive(self, handle):
        """QEMU runs (its proven pid; no monitor round trip): a guest that powers off ends QEMU."""
        return self._process(handle).pid() is not None

    def ssh_deadline(self, handle):
        """10 minutes under emulation (TCG), 5 with KVM: decided here, where the VM runs."""
        try:
            return SSH_DEADLINE[resolve_accel(handle.accel)]
        except Exception:  # an unusable accel setting fails at start, not here
            return SSH_DEADLINE["tcg"]

    def state(self, handle):
        """The live state; raises MonitorNotAnswering for a live QEMU whose monitor fails."""
        status = self._query_status(handle)
        if status is None:
            if handle.state in (VmState.PREPARING, VmState.PREPARED, VmState.FAILED):
                return handle.state
            return VmState.STOPPED
        if status == "running":
            return VmState.RUNNING
        if status in ("paused", "suspended"):
            return VmState.SUSPENDED
        if status in ("inmigrate", "prelaunch"):
            return VmState.PREPARING
        if status in ("shutdown", "guest-panicked", "internal-error", "io-error"):
            return VmState.FAILED
        return VmState.RUNNING

    def suspend(self, handle):
        current = self.state(handle)
        if current == VmState.SUSPENDED:
            return handle.replace(state=current)
        if current != VmState.RUNNING:
            raise InvalidState("VM %s is %s; only a running VM can be suspended" % (handle.name, current),
                               hint="Start it first")
        with self._qmp(handle) as qmp:
            qmp.stop()
        return handle.replace(state=VmState.SUSPENDED)

    def resume(self, handle):
        current = self.state(handle)
        if current == VmState.RUNNING:
            return handle.replace(state=current)
        if current != VmState.SUSPENDED:
            raise InvalidState("VM %s is %s; only a suspended VM can be resumed" % (handle.name, current),
                               hint="Use start for a stopped VM")
        with self._qmp(handle) as qmp:
            qmp.cont()
        return handle.replace(state=VmState.RUNNING)

    def stop(self, handle, timeout=30):
        """ACPI power-down, wait up to ``timeout``; then SIGTERM, then SIGKILL; verify the process is gone."""
        proc = self._process(handle)
        pid = proc.pid()
        self._pin_console_keys(handle)
        if pid is None:
            switch.release(handle, _qemu_alive)  # a crashed or killed QEMU: its switches may have no user left
            return handle.replace(state=VmState.STOPPED, pid=None, vnc_addr=None)
        method = "acpi"
        gone = False
        deadline = time.monotonic() + max(timeout, 0)
        first = True
        while timeout > 0 and not gone and time.monotonic() < deadline:
            # Pressed again every few seconds: a guest still booting may not have its ACPI handler yet.
            try:
                with self._qmp(handle) as qmp:
                    if first and (qmp.query_status() or {}).get("status") in ("paused", "suspended"):
                        qmp.cont()  # a paused guest cannot see the power button
                    qmp.system_powerdown()
            except QmpError:  # also a monitor that does not answer (MonitorNotAnswering)
                gone = proc.wait_gone(pid, 1)  # it may have just powered off; else fall through to signals
                break
            first = False
            gone = proc.wait_gone(pid, min(POWER_BUTTON_REPEAT, max(deadline - time.monotonic(), 0)))
        if not gone:
            method = "sigterm"
            proc.signal(pid, signal.SIGTERM)
            proc.signal(pid, signal.SIGCONT)  # a stopped (SIGSTOP) QEMU handles SIGTERM only once it runs
            if not proc.wait_gone(pid, SIGNAL_WAIT):
                method = "sigkill"
                proc.signal(pid, signal.SIGKILL)
                if not proc.wait_gone(pid, SIGNAL_WAIT):
                    raise StopFailed("VM %s: QEMU process %s survived SIGKILL" % (handle.name, pid))
        switch.release(handle, _qemu_alive)
        return handle.replace(state=VmState.STOPPED, pid=None, vnc_addr=None, extra=dict(handle.extra, last_stop=method))

    def destroy(self, handle):
        """Kill QEMU (the disk is discarded anyway) and remove the work directory."""
        proc = self._process(handle)
        pid = proc.pid()
        if pid is not None:
            try:
                with self._qmp(handle, timeout=3) as qmp:
                    qmp.quit()
            except QmpError:
                pass
            if not proc.wait_gone(pid, SIGNAL_WAIT):
                self.stop(handle, timeout=0)
        switch.release(handle, _qemu_alive)
        paths.remove_vm_dir(handle.work_dir, handle.name)
        if os.path.lexists(handle.work_dir):
            raise IoFailed("VM %s: could not remove %s" % (handle.name, handle.work_dir))

    def reap(self, work_dir):
        """The QEMU that proves to run from ``work_dir`` (its pidfile, lock and ``-pidfile`` argument), terminated."""
        proc = QemuProcess(work_dir)
        pid = proc.pid()
        if pid is None:
            switch.release_work_dir(work_dir, os.path.basename(work_dir), _qemu_alive)
            return []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not proc.signal(pid, sig) or proc.wait_gone(pid, SIGNAL_WAIT):
                switch.release_work_dir(work_dir, os.path.basename(work_dir), _qemu_alive)
                return [pid]
        raise IoFailed("QEMU (pid %s) of %s did not end after SIGKILL" % (pid, work_dir))

    # --- snapshots (backends/qemu/snapshots.py) ------------------------------------------------------
    def _snapshot_qmp(self, handle):
        # A snapshot job runs in QEMU's main loop: the monitor answers again only once it is done.
        return self._qmp(handle, timeout=snapshots.JOB_TIMEOUT)

    def _snapshot_mode(self, handle, what):
        """``live`` (QEMU runs: QMP jobs) or ``offline`` (qemu-img); InvalidState for a VM in between."""
        state = self.state(handle)
        if state in VmState.ACTIVE:
            return "live"
        if state in (VmState.STOPPED, VmState.PREPARED):
            return "offline"
        raise InvalidState("VM %s is %s; it cannot %s" % (handle.name, state, what),
                           hint="Start or stop it first (vmctl start/stop %s)" % handle.name, name=handle.name)

    def snapshot_list(self, handle):
        overlay = paths.vm_files(handle.work_dir)["overlay"]
        if self._process(handle).pid() is not None:
            with self._qmp(handle) as qmp:
                return snapshots.live_list(qmp, overlay)
        return snapshots.offline_list(overlay)

    def snapshot_create(self, handle, tag):
        overlay = paths.vm_files(handle.work_dir)["overlay"]
        what = "VM %s: snapshot %s" % (handle.name, tag)
        before = snapshots.allocated(overlay)
        if self._snapshot_mode(handle, "be snapshotted") == "live":
            with self._snapshot_qmp(handle) as qmp:
                node = snapshots.overlay_node(qmp, overlay)
                snapshots.run_job(qmp, "snapshot-save", {"tag": tag, "vmstate": node, "devices": [node]}, what)
                taken = snapshots.live_list(qmp, overlay).get(tag)
        else:
            snapshots.offline(overlay, "-c", tag, what)
            taken = snapshots.offline_list(overlay).get(tag)
        if taken is None:
            raise SnapshotFailed("%s: QEMU reported success, but the overlay has no such snapshot" % what, name=handle.name)
        return dict(taken, name=tag, size=max(snapshots.allocated(overlay) - before, 0))

    def snapshot_revert(self, handle, tag, ram):
        """A snapshot with RAM is loaded into the running QEMU (a stopped VM is started first), so the VM runs
        at once in the snapshot's state; a disk-only one is applied to the stopped VM's overlay."""
        overlay = paths.vm_files(handle.work_dir)["overlay"]
        what = "VM %s: revert to snapshot %s" % (handle.name, tag)
        mode = self._snapshot_mode(handle, "be reverted")
        if not ram:
            if mode == "live":
                raise InvalidState("%s: the snapshot is disk-only (taken while the VM was stopped), and the VM runs" % what,
                                   hint="Stop the VM first (vmctl stop %s), then revert" % handle.name, name=handle.name)
            snapshots.offline(overlay, "-a", tag, what)
            return handle, {"ram": False, "started": False, "seconds": None}
        started = mode == "offline"
        if started:
            handle = self.start(handle)
        with self._snapshot_qmp(handle) as qmp:
            node = snapshots.overlay_node(qmp, overlay)
            seconds = snapshots.run_job(qmp, "snapshot-load", {"tag": tag, "vmstate": node, "devices": [node]}, what)
        return handle.replace(state=self.state(handle)), {"ram": True, "started": started, "seconds": round(seconds, 3)}

    def snapshot_delete(self, handle, tag):
        overlay = paths.vm_files(handle.work_dir)["overlay"]
        what = "VM %s: delete snapshot %s" % (handle.name, tag)
        if self._snapshot_mode(handle, "have a snapshot deleted") == "live":
            with self._snapshot_qmp(handle) as qmp:
                node = snapshots.overlay_node(qmp, overlay)
                snapshots.run_job(qmp, "snapshot-delete", {"tag": tag, "devices": [node]}, what)
        else:
            snapshots.offline(overlay, "-d", tag, what)

    # --- network & console -----------------------------------------------------------------------
    def guest_ip(self, handle, timeout=0):
        net = handle.network.type
        if net == "user":
            return "127.0.0.1"
        if net == "tap":
            deadline = time.monotonic() + timeout
            while True:
                ip = find_ip_by_mac(handle.mac_addr)
                if ip or time.monotonic() >= deadline:
                    break
                time.sleep(1)
            if not ip:
                raise IpDiscoveryTimeout("VM %s: no IP address found for MAC %s on bridge %s"
                                         % (handle.name, handle.mac_addr, handle.network.bridge))
            return ip
        raise InvalidState("VM %s has network %r: no guest IP" % (handle.name, net), hint="Use user or tap networking")

    def console_endpoint(self, handle):
        return ConsoleEndpoint("unix", paths.vm_files(handle.work_dir)["console"])

    def private_links(self, handle):
        try:
            return switch.links(handle) if handle.private_networks else {}
        except InvalidSpec:  # an edited record: status still works, without the links
            return {}


_LEASE_DIRS = ("/var/lib/misc", "/var/lib/dnsmasq")


def find_ip_by_mac(mac, neigh_output=None, lease_files=None):
    """IPv4 address for ``mac`` from ``ip neigh`` (ARP) or dnsmasq lease files, or None."""
    mac = mac.lower()
    if neigh_output is None:
        try:
            neigh_output = run(["ip", "-4", "neigh", "show"], check=False, timeout=10).stdout
        except VmctlError:  # no ip tool, or no answer: the lease files may still know
            neigh_output = ""
    for line in neigh_output.splitlines():
        m = re.match(r"^(\d+\.\d+\.\d+\.\d+)\s.*\blladdr\s+([0-9a-fA-F:]{17})\b(?!.*\bFAILED\b)", line)
        if m and m.group(2).lower() == mac:
            return m.group(1)
    if lease_files is None:
        lease_files = [os.path.join(d, n) for d in _LEASE_DIRS if os.path.isdir(d)
                       for n in os.listdir(d) if n.endswith(".leases")]
    for path in lease_files:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                parts = line.split()  # expiry mac ip hostname client-id
                if len(parts) >= 3 and parts[1].lower() == mac:
                    return parts[2]
    return None
