"""UEFI firmware and the VMFile ``kernel`` node on the tiny busybox guest (one boot, TCG): OVMF starts the Debian
kernel as an EFI program (its "EFI stub" line on the console; the Debian test image is an MBR/extlinux disk without
an EFI system partition, so its own boot loader cannot run under UEFI). Then, without more boots: port forwards
change idempotently (a running VM's from its next start), and a forward whose host port a decoy socket holds is an
error at start, before QEMU runs."""

import os
import socket

import pytest
from support.guests import wait_for_console

from ansible_collections.vmctl.core.plugins.module_utils import reconcile
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import devices
from ansible_collections.vmctl.core.plugins.module_utils.errors import PortInUse
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.specs import spec_from_record
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile

pytestmark = [pytest.mark.slow]

VMFILE = """\
vm "efi" {
    image "%(image)s"
    memory 256
    firmware "uefi"
    kernel "%(kernel)s" {
        initrd "%(initrd)s"
        append "console=ttyS0 loglevel=4"
    }
}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def efi(test_images, tmp_path_factory):
    """The tiny guest booted from a VMFile with firmware "uefi" and a kernel node, in its own data directory."""
    root = tmp_path_factory.mktemp("efi")
    tiny = test_images["tiny"]
    (root / "VMFile.kdl").write_text(VMFILE % {"image": test_images["debian"]["path"], "kernel": tiny["kernel"],
                                               "initrd": tiny["initrd"]})
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(root / "xdg-data")
    (record,) = vmfile.load(str(root / "VMFile.kdl"))
    manager = VmManager()
    handle = manager.create(spec_from_record(record, record["image"]))[0]
    handle = manager.start("efi")[0]
    yield manager, record, handle, tiny
    manager.destroy("efi")
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


def test_ovmf_boots_the_vmfiles_kernel(efi):
    manager, record, handle, tiny = efi
    wait_for_console(handle, tiny["ready_marker"], timeout=240)
    with open(handle.console_log, "rb") as f:
        console = f.read()
    assert b"EFI stub:" in console  # the kernel was started by UEFI firmware, not by SeaBIOS's linux loader
    argv = open("/proc/%d/cmdline" % manager.get("efi").pid, "rb").read().split(b"\0")
    code, template = devices.find_ovmf()
    own = os.path.join(handle.work_dir, devices.VARS_FILE)
    assert b"if=pflash,format=raw,unit=0,readonly=on,file=" + code.encode() in argv
    assert b"if=pflash,format=raw,unit=1,file=" + own.encode() in argv
    assert os.path.getsize(own) == os.path.getsize(template)  # the VM's own copy of the matched VARS
    assert argv[argv.index(b"-kernel") + 1] == record["kernel"].encode() and b"console=ttyS0 loglevel=4" in argv


def test_forwards_change_idempotently_and_a_running_vm_gets_them_at_its_next_start(efi):
    manager, record, handle, _tiny = efi
    port = free_port()

    def spec(*ports):
        return spec_from_record(dict(record, port_forwards=[{"host": p, "guest": 80} for p in ports]), record["image"])
    planned = reconcile.ensure_present(manager, spec(port), check_mode=True)
    assert planned.changed and manager.get("efi").port_forwards == []  # check mode wrote nothing
    done = reconcile.ensure_present(manager, spec(port))
    assert done.changed and done.actions[0].endswith("(applied at the next start)")
    assert done.diff["before"]["port_forwards"] == [] and done.diff["after"]["port_forwards"][0]["host"] == port
    assert not reconcile.ensure_present(manager, spec(port)).changed
    recorded = manager.get("efi")
    assert "hostfwd=tcp:127.0.0.1:%d-:80" % port in " ".join(manager.backend(recorded).command_line(recorded))
    assert manager.live_state("efi") == "running"  # nothing was restarted
    assert reconcile.ensure_present(manager, spec()).changed and not reconcile.ensure_present(manager, spec()).changed


def test_a_forward_whose_port_another_program_holds_fails_at_start(efi, test_images):
    """Bad input: a stopped VM whose forwarded host port a decoy socket took since create: start fails naming
    "another program", no QEMU is started, and it starts once the port is free (the tiny guest, no SSH)."""
    manager, _record, _handle, tiny = efi
    port = free_port()
    manager.create(spec_from_record({"name": "busy", "kernel": tiny["kernel"], "initrd": tiny["initrd"],
                                     "kernel_append": "console=ttyS0", "port_forwards": [{"host": port, "guest": 80}]},
                                    test_images["debian"]["path"]))
    try:
        with socket.socket() as decoy:
            decoy.bind(("127.0.0.1", port))
            decoy.listen()
            with pytest.raises(PortInUse) as err:
                manager.start("busy")
            assert "host port 127.0.0.1:%d/tcp is in use by another program" % port in err.value.message
            assert manager.backend(manager.get("busy")).pid(manager.get("busy")) is None
        handle = manager.start("busy")[0]  # the decoy is gone: it starts
        assert "hostfwd=tcp:127.0.0.1:%d-:80" % port in open("/proc/%d/cmdline" % handle.pid).read().replace("\0", " ")
    finally:
        manager.destroy("busy")
