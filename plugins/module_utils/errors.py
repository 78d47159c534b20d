# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One exception family for the whole engine.

Every error has a stable ``code`` (``vmctl.<area>.<what>``), a message that names the object it is
about, and a ``hint`` that tells the user what to do next. Front-ends (modules, plugins, CLI) show
all three and never need to parse the message.

A code belongs to exactly one class, and only the class gives it (there is no ``code=`` argument):
whatever maps errors to outcomes (the CLI's exit codes) looks at the class, so one code always has
one outcome.
"""

from __future__ import annotations

__metaclass__ = type


class VmctlError(Exception):
    """Base of every engine error."""

    code = "vmctl.error"
    default_hint = ""

    def __init__(self, message, hint=None, **details):
        if "code" in details:
            raise TypeError("%s: an error's code comes from its class; raise the class of %r instead"
                            % (type(self).__name__, details["code"]))
        super(VmctlError, self).__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        self.details = details

    def with_message(self, message):
        """The same error (class, hint, details) with another message, e.g. prefixed with the VM's name."""
        return type(self)(message, hint=self.hint, **self.details)

    def __str__(self):
        if self.hint:
            return "%s (hint: %s)" % (self.message, self.hint)
        return self.message

    def to_dict(self):
        """What modules return next to ``msg`` (``error.code``, ``error.hint``, details)."""
        data = {"code": self.code, "message": self.message, "hint": self.hint}
        data.update(self.details)
        return data


class InvalidName(VmctlError):
    code = "vmctl.vm.invalid_name"
    default_hint = "Use 1-63 characters from A-Z a-z 0-9 . _ - (letters, digits, '.', '_', '-'), starting with a letter or digit"


class VmNotFound(VmctlError):
    code = "vmctl.vm.not_found"
    default_hint = "Run 'vmctl list' to see available VMs"


class VmExists(VmctlError):
    code = "vmctl.vm.exists"
    default_hint = "Destroy the existing VM first, or pick another name"


class InvalidState(VmctlError):
    code = "vmctl.vm.invalid_state"


class UsageError(VmctlError):
    """A bad command line (the CLI's own checks, beside argparse's)."""
    code = "vmctl.cli.usage"


class LogNotFound(VmctlError):
    code = "vmctl.log.not_found"


class IoFailed(VmctlError):
    code = "vmctl.io"


class StoreError(VmctlError):
    code = "vmctl.store.corrupt"
    default_hint = "Fix or move the file aside; vmctl never overwrites a registry it cannot read"


class BadRecord(StoreError):
    code = "vmctl.store.bad_record"


class UnsafePath(VmctlError):
    """A path below the data directory that vmctl did not make (a symlink, another user's directory, ...)."""
    code = "vmctl.store.unsafe_path"


class ToolMissing(VmctlError):
    code = "vmctl.host.tool_missing"


class SpawnFailed(VmctlError):
    code = "vmctl.qemu.spawn_failed"
    default_hint = ("Ensure qemu-system-x86_64 is installed and in PATH; for KVM check /dev/kvm access, "
                    "or set accel to tcg (VMCTL_ACCEL=tcg)")


class PortInUse(SpawnFailed):
    code = "vmctl.qemu.port_in_use"


class InvalidAccel(VmctlError):
    code = "vmctl.qemu.invalid_accel"
    default_hint = "Use auto, kvm or tcg"


class StopFailed(VmctlError):
    code = "vmctl.qemu.stop_failed"
    default_hint = "Check the process state with ps; it may be stuck in the kernel"


class BridgeNotAllowed(VmctlError):
    """qemu-bridge-helper's ACL (/etc/qemu/bridge.conf) does not let a TAP VM onto its bridge."""
    code = "vmctl.qemu.bridge_not_allowed"


class QmpError(VmctlError):
    code = "vmctl.qemu.qmp_command_failed"


class QmpConnectFailed(QmpError):
    code = "vmctl.qemu.qmp_connect_failed"
    default_hint = "QEMU may have crashed before the QMP socket was ready; check console.log in the work directory"


class QmpTimeout(QmpError):
    code = "vmctl.qemu.qmp_timeout"
    default_hint = "The QEMU monitor did not answer in time; the process may be hung. Stop it with a timeout or destroy the VM"


class MonitorNotAnswering(QmpError):
    """QEMU (a proven PID) is alive but its monitor does not answer or its socket is gone.

    ``reason`` is what ``vmctl list`` shows next to the state ``unknown``."""

    code = "vmctl.qemu.monitor_not_answering"


class OverlayFailed(VmctlError):
    code = "vmctl.image.overlay_creation_failed"
    default_hint = "Ensure qemu-img is installed and the base image exists and is readable"


class ImageError(VmctlError):
    code = "vmctl.image.error"


class ImageNotCached(ImageError):
    code = "vmctl.image.not_cached"


class ImageUnreadable(ImageError):
    code = "vmctl.image.unreadable"


class NotAnImageFile(ImageError):
    code = "vmctl.image.not_a_file"
    default_hint = "Give the path of a qcow2 or raw image file"


class ImageNotFound(ImageError):
    code = "vmctl.image.not_found"
    default_hint = "Check the path; relative paths are resolved against the VMFile's directory"


class FormatDetectionFailed(ImageError):
    code = "vmctl.image.format_detection_failed"
    default_hint = "Ensure qemu-img is installed and the file is a valid disk image"


class DownloadFailed(ImageError):
    code = "vmctl.image.download_failed"
    default_hint = "Check network connectivity and the URL"


class DownloadInterrupted(DownloadFailed):
    """The connection broke mid-download (the partial file is kept for the next pull)."""
    code = "vmctl.image.download_interrupted"
    default_hint = "The partial download is kept; run the pull again to resume it"


class ChecksumMismatch(ImageError):
    code = "vmctl.image.checksum_mismatch"
    default_hint = "The download does not match the expected checksum; check the checksum or the URL"


class UnsafeImage(ImageError):
    code = "vmctl.image.unsafe_backing_file"
    default_hint = "The image refers to another file; flatten it with 'qemu-img convert' or allow backing files explicitly"


class ImageInUse(ImageError):
    code = "vmctl.image.in_use"
    default_hint = "Destroy the VMs that use it first, or pass force"


class ImageTooLarge(ImageError):
    code = "vmctl.image.too_large"


class DiskFull(ImageError):
    code = "vmctl.image.disk_full"


class NoSpace(VmctlError):
    code = "vmctl.disk_full"


def no_space(err, data_dir):
    """The clean error for a full disk or quota (ENOSPC, EDQUOT) hit anywhere in the engine, for every
    front-end to report the same way; None for any other error (a bug, shown as one)."""
    import errno
    if not isinstance(err, OSError) or err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return NoSpace("no space left on the device%s" % (" (writing %s)" % err.filename if err.filename else ""),
                   hint="Free space in %s (vmctl image prune removes unused images), then run the command again" % data_dir)


class CloudInitError(VmctlError):
    code = "vmctl.cloudinit.iso_failed"
    default_hint = "Check the cloud-init settings; the seed ISO is built with pycdlib"


class InvalidSpec(VmctlError):
    code = "vmctl.vm.invalid_spec"


class InvalidHostname(InvalidSpec):
    code = "vmctl.cloudinit.invalid_hostname"
    default_hint = "Use letters, digits and '-' in dot-separated labels of at most 63 characters"


class InvalidGuestUser(InvalidSpec):
    """A user cloud-init creates."""
    code = "vmctl.cloudinit.invalid_user"


class InvalidAuthorizedKey(InvalidSpec):
    code = "vmctl.cloudinit.invalid_key"


class InvalidLoginUser(InvalidSpec):
    """A user vmctl logs in as."""
    code = "vmctl.ssh.invalid_user"


class InvalidPublicKey(InvalidSpec):
    code = "vmctl.ssh.invalid_public_key"
    default_hint = "Point it at the .pub file (a private key must never reach the guest)"


class KeygenFailed(VmctlError):
    code = "vmctl.ssh.keygen_failed"
    default_hint = "Internal error; please report it"


class SshError(VmctlError):
    code = "vmctl.ssh.failed"
    default_hint = "Check the SSH key, guest reachability, and that sshd runs in the guest (see console.log)"


class HostKeyMismatch(SshError):
    code = "vmctl.ssh.host_key_mismatch"
    default_hint = ("The guest presented a host key that is not the one vmctl pinned for this VM; "
                    "if the VM was recreated outside vmctl, destroy and recreate it")


class SshNotConfigured(SshError):
    """What a login needs (address, user, key, known_hosts) is missing."""
    code = "vmctl.ssh.not_configured"


class ParamikoMissing(SshError):
    code = "vmctl.ssh.paramiko_missing"
    default_hint = "Install it: pip install paramiko"


class SshDisconnected(SshError):
    code = "vmctl.ssh.disconnected"


class HostKeyUnknown(SshError):
    code = "vmctl.ssh.host_key_unknown"


class ConsoleUnsupported(VmctlError):
    code = "vmctl.console.unsupported"


class ConsoleFailed(VmctlError):
    code = "vmctl.console.failed"


class IpDiscoveryTimeout(VmctlError):
    code = "vmctl.network.ip_discovery_timeout"
    default_hint = "The guest may not have a DHCP lease; check the bridge, DHCP server and console.log"


class BackendNotAvailable(VmctlError):
    code = "vmctl.backend.not_available"
    default_hint = "This backend is not supported on this platform"


class PropolisError(VmctlError):
    """Anything the Propolis backend reports (propolis-server answers, illumos commands)."""

    code = "vmctl.propolis.error"


class PropolisNoSettings(PropolisError):
    code = "vmctl.propolis.no_settings"
    default_hint = "It was not created by the propolis backend; destroy and recreate it"


class PropolisForeignVm(PropolisError):
    """The VM's propolis-server holds another VM."""
    code = "vmctl.propolis.foreign_vm"
    default_hint = "Each VM needs its own propolis-server; check VMCTL_PROPOLIS_ADDRESS and the VM's zone"


class VnicMissing(PropolisError):
    code = "vmctl.propolis.vnic_missing"


class ZoneMissing(PropolisError):
    code = "vmctl.propolis.zone_missing"
    default_hint = "Destroy and recreate the VM"


class PropolisNoNetwork(PropolisError):
    code = "vmctl.propolis.no_network"
    default_hint = "Use network type vnic"


class InvalidPropolisAddress(PropolisError):
    code = "vmctl.propolis.invalid_address"
    default_hint = "Use host:port, e.g. 127.0.0.1:12400"


class PropolisBodyTooLarge(PropolisError):
    code = "vmctl.propolis.body_too_large"
    default_hint = "Large blobs (the cloud-init seed) must be file-backed, not inline"


class PropolisVmFailed(PropolisError):
    code = "vmctl.propolis.vm_failed"
    default_hint = "See the guest's serial console and propolis-server's log"


class PropolisVmGone(PropolisError):
    code = "vmctl.propolis.vm_gone"
    default_hint = "See the guest's serial console and propolis-server's log"


class PropolisUnreachable(PropolisError):
    code = "vmctl.propolis.unreachable"
    default_hint = "Ensure propolis-server is running and listening on the expected address"


class PropolisApiError(PropolisError):
    """propolis-server answered with an error status; ``status``, ``error_code`` and ``request`` are in the details."""

    code = "vmctl.propolis.api_error"
    default_hint = "See propolis-server's log in the VM's zone (svcs -L svc:/system/illumos/propolis-server)"


class PropolisCreateFailed(PropolisApiError):
    code = "vmctl.propolis.create_failed"


class PropolisUnsupported(PropolisError):
    code = "vmctl.propolis.unsupported"


class PropolisTimeout(PropolisError):
    code = "vmctl.propolis.timeout"
    default_hint = "propolis-server accepted the request but the VM did not get there in time; check the guest's serial console"


class IllumosCommandFailed(PropolisError):
    code = "vmctl.propolis.command_failed"
    default_hint = "Run the command by hand on the illumos host to see why; vmctl needs root or the matching RBAC profiles"


class ProvisionFailed(VmctlError):
    code = "vmctl.provision.failed"
    default_hint = "Check the provisioner and the VM's SSH reachability; see provision.log in the work directory"


class VmfileNotFound(VmctlError):
    code = "vmctl.vmfile.not_found"
    default_hint = "Create VMFile.kdl in the current directory or give its path"


class UnknownVm(VmctlError):
    """A VM name asked for that the VMFile does not define."""
    code = "vmctl.vmfile.unknown_vm"


class Timeout(VmctlError):
    code = "vmctl.timeout"


class DownloadTimeout(DownloadFailed, Timeout):
    """A download broke its overall deadline or stalled (``limit`` names which)."""

    code = "vmctl.image.download_timeout"


class InvalidChecksum(ImageError):
    code = "vmctl.image.invalid_checksum"
    default_hint = ("Give 'sha256:<64 hex digits>', 'sha512:<128 hex digits>', or the URL of a checksum file "
                    "(SHA256SUMS format), optionally prefixed with 'sha256:' or 'sha512:'")


class InvalidImageUrl(ImageError):
    code = "vmctl.image.invalid_url"
    default_hint = "Use an http:// or https:// URL, or a local path with 'image' instead of 'image-url'"


class CorruptImage(ImageError):
    code = "vmctl.image.corrupt"
    default_hint = "The published file is damaged or not what its name says; check the URL, or ask its publisher"


class SshAuthFailed(SshError):
    code = "vmctl.ssh.auth_failed"
    default_hint = "Check the VM's user and private key (vmctl list shows them); cloud-init installs the key on first boot"


class SshWaitTimeout(Timeout):
    code = "vmctl.ssh.wait_timeout"
    default_hint = "The guest did not accept an SSH login in time; see its console.log"


class WaitStalled(SshWaitTimeout):
    code = "vmctl.ssh.stalled"
    default_hint = "The guest showed no sign of progress for the stall window; see its console.log"


class SshTransferFailed(SshError):
    code = "vmctl.ssh.transfer_failed"
    default_hint = "Check the path, its directory and the permissions on the guest"


class SessionDaemonFailed(SshError):
    code = "vmctl.ssh.session_daemon_failed"
    default_hint = "See the session daemon's log next to its socket; set the connection option persistent to false to work without it"


class SnapshotFailed(VmctlError):
    code = "vmctl.snapshot.failed"
    default_hint = "See the VM's console.log; 'vmctl snapshot list NAME' shows the snapshots it has"


class SnapshotNotFound(VmctlError):
    code = "vmctl.snapshot.not_found"
    default_hint = "Run 'vmctl snapshot list NAME' to see the VM's snapshots"


class SnapshotUnsupported(VmctlError):
    code = "vmctl.snapshot.unsupported"
    default_hint = "Snapshots need the qemu backend; on propolis, destroy and recreate the VM instead"


class ConsoleTimeout(Timeout):
    code = "vmctl.console.timeout"
    default_hint = "The pattern did not appear on the serial console in time; see the console lines in the result or console.log"


def error_classes():
    """Every VmctlError class defined so far (this module's and those of modules already imported)."""
    found, todo = [], [VmctlError]
    while todo:
        cls = todo.pop()
        if cls not in found:  # a class with two error parents (DownloadTimeout) is seen twice
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return found
