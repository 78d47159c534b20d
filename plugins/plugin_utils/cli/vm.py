# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl create|start|stop|destroy|suspend|resume|list|status|log``: one VM's lifecycle and what is known of it."""

from __future__ import annotations

__metaclass__ = type

import os
import sys
import time

from ansible_collections.vmctl.core.plugins.module_utils import errors, forwards, paths
from ansible_collections.vmctl.core.plugins.module_utils.model import DEFAULTS
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import snapshot
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import (
    EXIT_FAILED, EXIT_OK, Progress, command, dash, name_arg, note, out, print_json, vm_command, vm_manager)


def cmd_create(args):
    from ansible_collections.vmctl.core.plugins.module_utils.specs import resolve_image, spec_from_record
    record = {
        "name": args.name, "vcpus": args.vcpus, "memory": args.memory, "disk": args.disk,
        "network": {"type": "tap", "bridge": args.bridge} if args.bridge else {"type": "user"},
        "ssh": {"user": args.user, "private_key": _private_half(args.ssh_key), "host_key_checking": args.host_key_checking},
        "kernel": _abspath(args.kernel), "initrd": _abspath(args.initrd), "kernel_append": args.kernel_append,
        "vnc": not args.no_vnc, "vnc_tcp": args.vnc_tcp,
        **_device_options(args),
    }
    if args.cloud_init:
        record["cloud_init"] = {"user_data": args.cloud_init}
    elif args.ssh_key:
        record["cloud_init"] = {"ssh_key": args.ssh_key}
    elif not args.no_cloud_init:
        record["cloud_init"] = {"generate_key": True}
    if "cloud_init" not in record and not record["ssh"]["private_key"] and args.host_key_checking == "yes":
        record["ssh"] = None  # nothing to log in with: no SSH settings at all
    from ansible_collections.vmctl.core.plugins.module_utils.model import validate_name
    validate_name(args.name)  # before a download, not after
    progress = Progress(args.image_url)
    try:
        image = resolve_image(args.image, args.image_url, args.checksum, progress=progress)
    finally:
        progress.finish()
    manager = vm_manager()
    spec = spec_from_record(record, image["path"], image.get("format"))
    for warning in forwards.exposure_warnings(spec.name, spec.port_forwards):
        note("warning: %s" % warning)
    handle, created = manager.create(spec)
    if not created:
        raise errors.VmExists("VM %r already exists" % args.name, name=args.name,
                              hint="Destroy it first (vmctl destroy %s), or pick another name" % args.name)
    out("created VM %s (%s)" % (handle.name, handle.work_dir))
    if args.start:
        _started(manager.start(args.name)[0])
    return EXIT_OK


def _device_options(args):
    """``--forward``, ``--share`` and ``--uefi`` as the record's port_forwards, shares and firmware (issue 14)."""
    from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
    return {"port_forwards": [forwards.parse(text) for text in args.forward or ()],
            "shares": [shares.parse(text) for text in args.share or ()],
            "firmware": "uefi" if args.uefi else DEFAULTS["firmware"]}


def _private_half(public_key):
    """The private key next to ``public_key`` (``x.pub`` -> ``x``), to log in with; None if absent."""
    if public_key and public_key.endswith(".pub"):
        private = os.path.expanduser(public_key[:-4])
        if os.path.isfile(private):
            return private
    return None


def _abspath(path):
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _started(handle):
    how = "ssh: vmctl ssh %s" % handle.name if handle.ssh_user and handle.private_key_path else "console: vmctl console %s" % handle.name
    port = ", ssh port %s" % handle.ssh_host_port if handle.ssh_host_port else ""
    out("started VM %s (pid %s%s; %s)" % (handle.name, dash(handle.pid), port, how))


def cmd_start(args):
    handle, before = vm_manager().start(args.name)
    if before == "running":
        out("VM %s is already running (pid %s)" % (handle.name, dash(handle.pid)))
    else:
        _started(handle)
    return EXIT_OK


def cmd_stop(args):
    begin = time.monotonic()
    handle, before = vm_manager().stop(args.name, timeout=args.timeout)
    if before not in ("running", "suspended", "unknown"):
        out("VM %s is not running (%s)" % (handle.name, before))
        return EXIT_OK
    how = {"acpi": "ACPI power-off", "sigterm": "terminated after %d s" % args.timeout,
           "sigkill": "killed"}.get(handle.extra.get("last_stop"), handle.extra.get("last_stop") or "stopped")
    out("stopped VM %s (%s, %.1f s)" % (handle.name, how, time.monotonic() - begin))
    return EXIT_OK


def cmd_destroy(args):
    old = vm_manager().destroy(args.name)
    if old is None:
        raise errors.VmNotFound("no VM named %r" % args.name, name=args.name)
    if isinstance(old, errors.BadRecord):
        note("warning: %s" % old.message)
        out("destroyed VM %s (from its name alone: its record was unusable)" % args.name)
    else:
        out("destroyed VM %s" % args.name)
    return EXIT_OK


def cmd_suspend(args):
    before = vm_manager().suspend(args.name)[1]
    if before == "suspended":
        out("VM %s is already suspended" % args.name)
    else:
        out("suspended VM %s (resume it with: vmctl resume %s)" % (args.name, args.name))
    return EXIT_OK


def cmd_resume(args):
    before = vm_manager().resume(args.name)[1]
    out("VM %s is already running" % args.name if before == "running" else "resumed VM %s" % args.name)
    return EXIT_OK


LIST_FORMAT = "%-16s %-8s %-7s %-4s %-11s %-8s %-6s %-5s %-10s %s"  # the guide's columns, SNAPS, STATE and FORWARDS added


def cmd_list(args):
    manager = vm_manager()
    handles = manager.list()  # one read of the store for the whole list
    records = [manager.describe(name, handle) for name, handle in sorted(handles.items())]
    for name, err in sorted(manager.store.bad.items()):
        note("error: %s" % err.message)
    if args.json:
        return print_json(records + [{"name": name, "error": err.to_dict()} for name, err in sorted(manager.store.bad.items())])
    out(LIST_FORMAT % ("NAME", "BACKEND", "VCPUS", "MEM", "NETWORK", "PID", "SSH", "SNAPS", "STATE", "FORWARDS"))
    for r in records:
        active = r["state"] in ("running", "suspended")
        ssh_port = r["ssh_host_port"] if r["network"]["type"] == "User" else None
        out(LIST_FORMAT % (r["name"], r["backend"], r["vcpus"], r["memory_mb"], r["network"]["type"].lower(),
                           dash(r["pid"] if active else None), dash(ssh_port), len(r.get("snapshots") or []), _state_text(r),
                           _forwards_text(r, short=True)))
    for name in sorted(manager.store.bad):
        out(LIST_FORMAT % (name, "-", "-", "-", "-", "-", "-", "-", "bad record (see the error above)", "-"))
    return EXIT_FAILED if manager.store.bad else EXIT_OK


def _forwards_text(record, short=False):
    """``8080->80/tcp,…`` (``list`` leaves out the default address 127.0.0.1), or - without forwards."""
    texts = [forwards.describe(f) for f in record.get("port_forwards") or ()]
    if short:
        texts = [text[len(forwards.LOOPBACK) + 1:] if text.startswith(forwards.LOOPBACK + ":") else text for text in texts]
    return ",".join(texts) or "-"


def _state_text(record):
    """``running``, or ``unknown (monitor not answering)`` for a VM whose QEMU does not answer."""
    reason = record.get("state_reason")
    return "%s (%s)" % (record["state"], reason) if reason else record["state"]


def cmd_status(args):
    r = vm_manager().describe(args.name)
    if args.json:
        return print_json(r)
    active = r["state"] in ("running", "suspended")
    net = r["network"]
    network = net["type"].lower() + (" (bridge %s)" % net["bridge"] if net.get("bridge") else "") \
        + (" (vnic %s)" % net["name"] if net.get("name") else "")
    ssh = r["ssh"]
    rows = [
        ("Name", r["name"]), ("ID", r["id"]), ("Backend", r["backend"]), ("State", _state_text(r)),
        ("Problem", r["problem"]["message"] if r.get("problem") else None),
        ("Hint", r["problem"]["hint"] if r.get("problem") else None),
        ("vCPUs", r["vcpus"]), ("Memory", "%s MiB" % r["memory_mb"]),
        ("Disk", "%s GiB" % r["disk_gb"] if r["disk_gb"] else "image size"),
        ("Network", network), ("Work dir", r["work_dir"]), ("Overlay", r["overlay_path"]),
        ("Seed ISO", r["seed_iso_path"]), ("PID", r["pid"] if active else None),
        ("VNC", "%s%s" % (r["vnc_addr"], " (password in %s)" % os.path.join(r["work_dir"], "vnc.password") if r.get("vnc_tcp") else "")
         if active and r["vnc"] and r["vnc_addr"] else None),
        ("SSH port", r["ssh_host_port"]), ("MAC", r["mac_addr"]), ("Image", r["image_path"]),
        ("Accel", r["accel"]), ("VMFile", r["vmfile"]),
        ("Forwards", _forwards_text(r)), ("Shares", _shares_text(r)), ("Firmware", r.get("firmware")),
        ("SSH", "%s@%s:%s" % (ssh["user"], ssh["host"] or "?", ssh["port"]) if ssh else None),
        ("SSH key", ssh["private_key"] if ssh else None), ("Known hosts", ssh["known_hosts"] if ssh else None),
        ("Console", r["console_socket"]), ("Console log", r["console_log"]),
        ("Provisioned", _provisioned(r.get("provision"))), ("Provision log", r["provision_log"]),
        ("Snapshots", "; ".join(snapshot.describe(s) for s in r.get("snapshots") or []) or None),
    ]
    rows = [row for row in rows if row[1] is not None or row[0] not in ("Problem", "Hint")]
    width = max(len(row[0]) for row in rows) + 1
    for label, value in rows:
        out("%-*s %s" % (width, label + ":", dash(value)))
    return EXIT_OK


def _shares_text(record):
    from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
    return ", ".join(shares.describe(s) for s in record.get("shares") or ()) or None


def _provisioned(record):
    """What ``vmctl status`` says of the VM's provision plan (as ``up`` or ``provision`` last ran it)."""
    if not isinstance(record, dict):
        return "never (no plan has run on it)"
    if record.get("completed") is True:
        return "yes (plan %s)" % str(record.get("digest", "?"))[:19]
    return "no: its plan started but did not complete (vmctl up runs it again)"


def cmd_log(args):
    handle = vm_manager().get(args.name)
    logs = []
    if not args.provision:
        logs.append(("console", handle.console_log or paths.vm_files(handle.work_dir)["console_log"]))
    if not args.console:
        logs.append(("provision", handle.provision_log))
    shown = 0
    for label, path in logs:
        if not os.path.exists(path):
            if len(logs) == 1:
                raise errors.LogNotFound("VM %s has no %s log yet (%s)" % (args.name, label, path), name=args.name,
                                         hint="It is written when the VM boots" if label == "console"
                                         else "It is written by provisioning (vmctl up or vmctl provision)")
            continue
        if len(logs) > 1:
            out("==> %s <==" % path)
        _show_file(path, args.tail)
        shown += 1
    if args.follow:
        _follow([entry[1] for entry in logs])
    if not shown:
        raise errors.LogNotFound("VM %s has no logs yet" % args.name, name=args.name,
                                 hint="Start it (vmctl start %s) or bring it up (vmctl up)" % args.name)
    return EXIT_OK


def _show_file(path, tail):
    with open(path, "rb") as f:
        data = f.read()
    if tail:
        data = b"".join(data.splitlines(True)[-tail:])
    sys.stdout.buffer.write(data)
    if data and not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def _follow(paths_):
    """Print what is appended to ``paths_`` until Ctrl+C (files that do not exist yet are watched too)."""
    offsets = {p: os.path.getsize(p) if os.path.exists(p) else 0 for p in paths_}
    while True:
        for path in paths_:
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            if size < offsets[path]:
                offsets[path] = 0  # truncated or recreated
            if size > offsets[path]:
                with open(path, "rb") as f:
                    f.seek(offsets[path])
                    data = f.read(size - offsets[path])
                offsets[path] += len(data)
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
        time.sleep(0.5)


# --- arguments and help ------------------------------------------------------------------------------

@command("create", "Create a new VM", """\
Create a VM from a local image (--image) or a downloaded one (--image-url), and optionally start it.
By default a cloud-init seed is made with an SSH key generated for this VM, so `vmctl ssh NAME` works
(--ssh-key installs your public key instead, --cloud-init passes your own user-data, --no-cloud-init
makes none).

examples:
  vmctl create --name myvm --image-url https://example.com/image.img
  vmctl create --name myvm --image-url https://example.com/image.img \\
      --vcpus 4 --memory 4096 --disk 40 --ssh-key ~/.ssh/id_ed25519.pub --start
  vmctl create --name myvm --image ./ubuntu.qcow2 --bridge br0
  vmctl create --name web --image ./debian.qcow2 --forward 8080:80 --share ./site:/srv/site --uefi
""")
def _create_args(p):
    p.add_argument("--name", required=True, help="VM name (letters, digits, . _ -; at most 63)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="PATH", help="local disk image (qcow2 or raw)")
    source.add_argument("--image-url", metavar="URL", help="URL of an image to download and cache")
    p.add_argument("--checksum", metavar="SUM", help="sha256:<hex>, sha512:<hex> or a SHA256SUMS URL for --image-url")
    p.add_argument("--vcpus", type=int, default=DEFAULTS["vcpus"], help="virtual CPUs (default %(default)s)")
    p.add_argument("--memory", type=int, default=DEFAULTS["memory"], metavar="MiB", help="memory in MiB (default %(default)s)")
    p.add_argument("--disk", type=int, metavar="GiB", help="disk size in GiB (the overlay is grown to it)")
    p.add_argument("--bridge", metavar="BRIDGE", help="TAP networking on this bridge (default: user networking)")
    ci = p.add_mutually_exclusive_group()
    ci.add_argument("--cloud-init", metavar="PATH", help="your own cloud-init user-data file")
    ci.add_argument("--ssh-key", metavar="PATH", help="SSH public key to install for the user")
    ci.add_argument("--no-cloud-init", action="store_true", help="no cloud-init seed (images without cloud-init)")
    p.add_argument("--user", default=DEFAULTS["ssh_user"], help="SSH user cloud-init creates (default %(default)s)")
    p.add_argument("--host-key-checking", choices=("yes", "accept-new"), default=DEFAULTS["host_key_checking"],
                   help="yes (default): trust only the host key vmctl generated or the guest printed on its console; "
                        "accept-new: else pin the first key seen and refuse any change after it")
    p.add_argument("--kernel", metavar="PATH", help="boot this kernel directly")
    p.add_argument("--initrd", metavar="PATH", help="initial ramdisk for --kernel")
    p.add_argument("--kernel-append", metavar="CMDLINE", help="kernel command line for --kernel")
    p.add_argument("--forward", action="append", metavar="HOST:GUEST",
                   help="forward host port HOST on 127.0.0.1 to guest port GUEST (repeatable; HOST:GUEST/udp for UDP, "
                        "ADDRESS:HOST:GUEST for another host address)")
    p.add_argument("--share", action="append", metavar="SRC:DST",
                   help="share host folder SRC at DST in the guest, over virtio-9p (repeatable; SRC:DST:ro read-only)")
    p.add_argument("--uefi", action="store_true", help="boot with UEFI firmware (OVMF, Debian's ovmf package) instead of BIOS")
    vnc = p.add_mutually_exclusive_group()
    vnc.add_argument("--no-vnc", action="store_true", help="no VNC display (default: a unix socket, vnc.sock in the work dir)")
    vnc.add_argument("--vnc-tcp", action="store_true",
                     help="VNC on 127.0.0.1 instead, with a password generated at each start (vnc.password in the work dir)")
    p.add_argument("--start", action="store_true", help="start the VM after creating it")
    return cmd_create


vm_command("start", "Start an existing VM", """\
Start a VM that is prepared or stopped.

examples:
  vmctl start myvm
""", cmd_start)


@command("stop", "Stop a running VM", """\
ACPI power-off through QMP; if the guest is not off within --timeout seconds QEMU is terminated
(SIGTERM, then SIGKILL).

examples:
  vmctl stop myvm
  vmctl stop myvm --timeout 120
""")
def _stop_args(p):
    name_arg(p)
    p.add_argument("--timeout", type=int, default=30, metavar="SECONDS", help="graceful shutdown timeout (default 30)")
    return cmd_stop


vm_command("destroy", "Destroy a VM and clean up its files", """\
Stop the VM if it runs, remove its overlay, seed ISO, keys, sockets and logs, and unregister it.
This is irreversible.

examples:
  vmctl destroy myvm
""", cmd_destroy)


@command("list", "List all VMs", """\
One line per VM: NAME BACKEND VCPUS MEM NETWORK PID SSH STATE (PID and SSH port are - when not
available; STATE is read live from the hypervisor).

examples:
  vmctl list
  vmctl list --json
""")
def _list_args(p):
    p.add_argument("--json", action="store_true", help="machine-readable output (the vm_info module's records)")
    return cmd_list


@command("status", "Show detailed VM status", """\
Everything known about a VM: name, ID, backend, state, vCPUs, memory, disk, network, work directory,
overlay, seed ISO, PID, VNC address, SSH port, MAC address, and how to log in.

examples:
  vmctl status myvm
  vmctl status myvm --json
""")
def _status_args(p):
    name_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return cmd_status


vm_command("suspend", "Suspend (pause) a running VM", """\
Pauses the VM's vCPUs; it stays in memory. vmctl resume continues it.

examples:
  vmctl suspend myvm
""", cmd_suspend)


vm_command("resume", "Resume a suspended VM", """\
examples:
  vmctl resume myvm
""", cmd_resume)


@command("log", "Show VM logs", """\
Shows the console log (boot and cloud-init output) and the provision log, or only one of them.

examples:
  vmctl log myvm
  vmctl log myvm --provision
  vmctl log myvm --console --tail 50
  vmctl log myvm --console -f
""")
def _log_args(p):
    name_arg(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--console", action="store_true", help="only the console log")
    which.add_argument("--provision", action="store_true", help="only the provision log")
    p.add_argument("--tail", "-n", type=int, default=0, metavar="N", help="only the last N lines (0: all)")
    p.add_argument("--follow", "-f", action="store_true", help="keep showing what is appended (Ctrl+C ends)")
    return cmd_log
