# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``vmctl`` command: the commands of the vmctl user guide over the engine.

Thin on purpose: parse the command line, call the engine (VmManager, ImageCache, the VMFile reader,
the console relay), print. ``up``, ``down``, ``reload`` and ``provision`` run the collection's
playbooks. Engine errors are printed as ``error:`` and ``hint:`` lines and map to exit codes
(``EXIT_CODES``); ``main()`` returns the code instead of exiting, so it can be called in-process.
"""

from __future__ import annotations

__metaclass__ = type

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback

from ansible_collections.vmctl.core.plugins.module_utils import checks, errors, paths
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.module_utils.errors import UsageError, VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.model import DEFAULTS
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import ssh as ssh_cli

COLLECTION_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # plugins/plugin_utils/cli/main.py

# Exit codes, most specific first (``exit_code_of`` takes the first class that matches).
EXIT_OK = 0
EXIT_FAILED = 1          # the engine could not do it (QEMU, download, SSH, ...)
EXIT_USAGE = 2           # bad command line, VM name, VMFile or setting
EXIT_NOT_FOUND = 3       # no such VM, image or VMFile
EXIT_STATE = 4           # the VM is in the wrong state, or already exists
EXIT_TIMEOUT = 5         # something did not happen in time (SSH login, shutdown, ...)
EXIT_INTERNAL = 70       # a bug in vmctl (traceback with -v)
EXIT_INTERRUPTED = 130   # Ctrl+C
EXIT_CODES = (
    (errors.Timeout, EXIT_TIMEOUT),
    ((errors.VmNotFound, errors.ImageNotFound, errors.VmfileNotFound, errors.UnknownVm, errors.ImageNotCached,
      errors.LogNotFound), EXIT_NOT_FOUND),
    ((errors.InvalidState, errors.VmExists, errors.ImageInUse), EXIT_STATE),
    ((errors.InvalidName, errors.InvalidSpec, errors.InvalidChecksum, errors.InvalidImageUrl, vmfile.VmfileError,
      errors.UsageError), EXIT_USAGE),
)

PLAYBOOK_COMMANDS = ("up", "down", "reload", "provision")
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def exit_code_of(err):
    for classes, code in EXIT_CODES:
        if isinstance(err, classes):
            return code
    return EXIT_FAILED


def version():
    """The collection's version, from MANIFEST.json (installed) or galaxy.yml (a checkout)."""
    try:
        with open(os.path.join(COLLECTION_DIR, "MANIFEST.json")) as f:
            return json.load(f)["collection_info"]["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(os.path.join(COLLECTION_DIR, "galaxy.yml")) as f:
            match = re.search(r"^version:\s*['\"]?([^'\"\s]+)", f.read(), re.M)
        return match.group(1) if match else "unknown"
    except OSError:
        return "unknown"


def _out(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _note(text):
    """Progress and remarks go to stderr, so stdout stays what a script wants to read."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _manager():
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    return VmManager()


def _image_cache():
    return _manager().image_cache()


def _print_json(data):
    _out(json.dumps(data, indent=2, sort_keys=True))
    return EXIT_OK


def _dash(value):
    return "-" if value in (None, "", []) else str(value)


# --- VM commands -------------------------------------------------------------------------------------

def cmd_create(args):
    from ansible_collections.vmctl.core.plugins.module_utils.specs import resolve_image, spec_from_record
    record = {
        "name": args.name, "vcpus": args.vcpus, "memory": args.memory, "disk": args.disk,
        "network": {"type": "tap", "bridge": args.bridge} if args.bridge else {"type": "user"},
        "ssh": {"user": args.user, "private_key": _private_half(args.ssh_key), "host_key_checking": args.host_key_checking},
        "kernel": _abspath(args.kernel), "initrd": _abspath(args.initrd), "kernel_append": args.kernel_append,
        "vnc": not args.no_vnc, "vnc_tcp": args.vnc_tcp,
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
    progress = _Progress(args.image_url)
    try:
        image = resolve_image(args.image, args.image_url, args.checksum, progress=progress)
    finally:
        progress.finish()
    manager = _manager()
    handle, created = manager.create(spec_from_record(record, image["path"], image.get("format")))
    if not created:
        raise errors.VmExists("VM %r already exists" % args.name, name=args.name,
                              hint="Destroy it first (vmctl destroy %s), or pick another name" % args.name)
    _out("created VM %s (%s)" % (handle.name, handle.work_dir))
    if args.start:
        _started(manager.start(args.name)[0])
    return EXIT_OK


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
    _out("started VM %s (pid %s%s; %s)" % (handle.name, _dash(handle.pid), port, how))


def cmd_start(args):
    handle, before = _manager().start(args.name)
    if before == "running":
        _out("VM %s is already running (pid %s)" % (handle.name, _dash(handle.pid)))
    else:
        _started(handle)
    return EXIT_OK


def cmd_stop(args):
    begin = time.monotonic()
    handle, before = _manager().stop(args.name, timeout=args.timeout)
    if before not in ("running", "suspended", "unknown"):
        _out("VM %s is not running (%s)" % (handle.name, before))
        return EXIT_OK
    how = {"acpi": "ACPI power-off", "sigterm": "terminated after %d s" % args.timeout,
           "sigkill": "killed"}.get(handle.extra.get("last_stop"), handle.extra.get("last_stop") or "stopped")
    _out("stopped VM %s (%s, %.1f s)" % (handle.name, how, time.monotonic() - begin))
    return EXIT_OK


def cmd_destroy(args):
    manager = _manager()
    if manager.destroy(args.name) is None:
        raise errors.VmNotFound("no VM named %r" % args.name, name=args.name)
    _out("destroyed VM %s" % args.name)
    return EXIT_OK


def cmd_suspend(args):
    before = _manager().suspend(args.name)[1]
    if before == "suspended":
        _out("VM %s is already suspended" % args.name)
    else:
        _out("suspended VM %s (resume it with: vmctl resume %s)" % (args.name, args.name))
    return EXIT_OK


def cmd_resume(args):
    before = _manager().resume(args.name)[1]
    _out("VM %s is already running" % args.name if before == "running" else "resumed VM %s" % args.name)
    return EXIT_OK


LIST_FORMAT = "%-16s %-8s %-7s %-4s %-11s %-8s %-6s %s"  # the guide's columns, STATE added last


def cmd_list(args):
    manager = _manager()
    handles = manager.list()  # one read of the store for the whole list
    records = [manager.describe(name, handle) for name, handle in sorted(handles.items())]
    for name, err in sorted(manager.store.bad.items()):
        _note("error: %s" % err.message)
    if args.json:
        return _print_json(records + [{"name": name, "error": err.to_dict()} for name, err in sorted(manager.store.bad.items())])
    _out(LIST_FORMAT % ("NAME", "BACKEND", "VCPUS", "MEM", "NETWORK", "PID", "SSH", "STATE"))
    for r in records:
        active = r["state"] in ("running", "suspended")
        ssh_port = r["ssh_host_port"] if r["network"]["type"] == "User" else None
        _out(LIST_FORMAT % (r["name"], r["backend"], r["vcpus"], r["memory_mb"], r["network"]["type"].lower(),
                            _dash(r["pid"] if active else None), _dash(ssh_port), _state_text(r)))
    for name in sorted(manager.store.bad):
        _out(LIST_FORMAT % (name, "-", "-", "-", "-", "-", "-", "bad record (see the error above)"))
    return EXIT_FAILED if manager.store.bad else EXIT_OK


def _state_text(record):
    """``running``, or ``unknown (monitor not answering)`` for a VM whose QEMU does not answer."""
    reason = record.get("state_reason")
    return "%s (%s)" % (record["state"], reason) if reason else record["state"]


def cmd_status(args):
    r = _manager().describe(args.name)
    if args.json:
        return _print_json(r)
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
        ("SSH", "%s@%s:%s" % (ssh["user"], ssh["host"] or "?", ssh["port"]) if ssh else None),
        ("SSH key", ssh["private_key"] if ssh else None), ("Known hosts", ssh["known_hosts"] if ssh else None),
        ("Console", r["console_socket"]), ("Console log", r["console_log"]),
        ("Provisioned", _provisioned(r.get("provision"))), ("Provision log", r["provision_log"]),
    ]
    rows = [row for row in rows if row[1] is not None or row[0] not in ("Problem", "Hint")]
    width = max(len(row[0]) for row in rows) + 1
    for label, value in rows:
        _out("%-*s %s" % (width, label + ":", _dash(value)))
    return EXIT_OK


def _provisioned(record):
    """What ``vmctl status`` says of the VM's provision plan (as ``up`` or ``provision`` last ran it)."""
    if not isinstance(record, dict):
        return "never (no plan has run on it)"
    if record.get("completed") is True:
        return "yes (plan %s)" % str(record.get("digest", "?"))[:19]
    return "no: its plan started but did not complete (vmctl up runs it again)"


def cmd_console(args):
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli import console
    manager = _manager()
    sock = manager.open_console(args.name)
    _note("Connected to the serial console of %s. Press Ctrl+] to detach." % args.name)
    try:
        outcome = console.relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    finally:
        sock.close()
    # \r: the terminal was in raw mode, the cursor may be anywhere on the line
    _note("\r\n[detached from %s]" % args.name if outcome == console.DETACHED else "\r\n[console of %s closed: the VM stopped]" % args.name)
    return EXIT_OK


# --- ssh ---------------------------------------------------------------------------------------------

def _vm_from_vmfile(path):
    """The one VM of the VMFile at ``path`` (or ./VMFile.kdl), for commands whose NAME is optional."""
    found = vmfile.find(path)
    records = vmfile.load(found)
    if len(records) != 1:
        names = ", ".join(r["name"] for r in records)
        raise UsageError("%s defines %d VMs (%s); say which one" % (found, len(records), names),
                         hint="Give its name: vmctl ssh NAME (one of %s)" % names)
    return records[0]["name"]


def cmd_ssh(args):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    if args.name and args.name_option and args.name != args.name_option:
        raise UsageError("two VM names given: %s and --name %s" % (args.name, args.name_option), hint="Give one")
    if args.user is not None:
        checks.validate_login_user(args.user)  # it reaches ssh's argv: never an option
    name = args.name or args.name_option or _vm_from_vmfile(args.file)
    manager = _manager()
    handle = manager.get(name)
    ssh.require_running(handle)
    key = args.key or handle.private_key_path or next(
        (k for k in (os.path.expanduser(p) for p in DEFAULT_KEYS) if os.path.isfile(k)), None)
    target = ssh.target_for(handle, user=args.user, private_key_path=key, guest_ip_timeout=args.wait)
    target.check()
    if args.wait > 0:  # the readiness wait of vmctl up: a login, then cloud-init's end; progress on stderr
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
        readiness.ReadinessWait(handle, deadline=args.wait, stall=min(args.wait, readiness.DEFAULT_STALL),
                                on_progress=_note, target=target, backend=manager.backend(handle)).run()
    checking = _host_key_checking(target)
    from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
    argv = [find_tool("ssh"),
            "-o", "StrictHostKeyChecking=%s" % checking, "-o", "UserKnownHostsFile=%s" % target.known_hosts,
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-i", target.private_key_path, "-p", str(target.port), "-l", target.user, "--", target.host]
    argv += args.remote_command  # after the destination, ssh takes everything as the remote command
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return EXIT_FAILED  # not reached


def _host_key_checking(target):
    """OpenSSH's StrictHostKeyChecking for ``target``, after pinning the keys its console printed.

    ``yes`` when a key is pinned; ``accept-new`` when the VM opted in and nothing is pinned yet (OpenSSH
    then pins the first key in the VM's known_hosts and refuses any change after it); else an error.
    """
    from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
    target.pin_console_keys()
    if host_keys.pinned_keys(target.known_hosts):
        return "yes"
    if target.learn_host_keys == "accept-new":
        return "accept-new"
    raise errors.HostKeyUnknown(
        "VM %s: no host key pinned in %s yet, and the guest has not printed cloud-init's SSH HOST KEY KEYS "
        "block on its console since it started" % (target.vm, target.known_hosts),
        hint="Wait for the guest to finish booting (vmctl ssh --wait SECONDS %s), or, for an image that prints no host "
             "keys, create the VM with --host-key-checking accept-new" % target.vm,
        name=target.vm)


# --- images ------------------------------------------------------------------------------------------

class _Progress:
    """A download's progress on stderr: a live line on a terminal, a line every few seconds otherwise."""

    def __init__(self, url):
        self.url = url
        self.tty = sys.stderr.isatty()
        self.begin = self.shown = time.monotonic()
        self.active = False

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.shown < (0.2 if self.tty else 5.0) and not (total and done >= total):
            return
        from ansible_collections.vmctl.core.plugins.module_utils.progress import download_text
        self.shown = now
        text = download_text(done, total, now - self.begin)
        if self.tty:
            sys.stderr.write("\rpulling %s: %s\033[K" % (os.path.basename(self.url), text))
            self.active = True
        else:
            sys.stderr.write("pulling %s: %s\n" % (self.url, text))
        sys.stderr.flush()

    def finish(self):
        if self.active:
            sys.stderr.write("\n")
            self.active = False


def cmd_image_pull(args):
    from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
    progress = _Progress(args.url)
    begin = time.monotonic()
    try:
        entry = _image_cache().pull(args.url, checksum=args.checksum, name=args.name, progress=progress, force=args.force,
                                    deadline=args.deadline, stall_timeout=args.stall_timeout,
                                    max_size=args.max_size << 30 if args.max_size else None)
    finally:
        progress.finish()
    if entry.downloaded:
        _note("downloaded %s (%s, %s) in %.1f s" % (args.url, entry.format, human_size(entry.size), time.monotonic() - begin))
    else:
        _note("%s is already cached" % args.url)
    _out(entry.path)
    return EXIT_OK


IMAGE_LIST_FORMAT = "%-40s %-10s %-7s %-60s %s"


def cmd_image_list(args):
    from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
    entries = _image_cache().list()
    if args.json:
        return _print_json([e.to_dict(digest=False) for e in entries])
    _out(IMAGE_LIST_FORMAT % ("NAME", "SIZE", "FORMAT", "PATH", "USED BY"))
    for e in sorted(entries, key=lambda e: os.path.basename(e.path)):
        _out(IMAGE_LIST_FORMAT % (os.path.basename(e.path), human_size(e.size or 0), _dash(e.format), e.path,
                                  ", ".join(e.used_by or []) or "-"))
    return EXIT_OK


def cmd_image_inspect(args):
    from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
    info = _image_cache().inspect(args.image)
    if args.json:
        return _print_json(info)
    sizes = ("virtual_size", "disk_size", "size", "source_size")
    order = ("path", "format", "virtual_size", "disk_size", "size", "backing_file", "backing_format",
             "external_references", "dirty", "cached", "url", "name", "sha256", "compression", "source_size",
             "fetched_at", "etag", "last_modified", "used_by")
    for key in order + tuple(sorted(k for k in info if k not in order and k != "source_digests")):
        if key not in info or (key not in ("path", "format", "cached") and info[key] in (None, [], {}, False)):
            continue
        value = info[key]
        if key in sizes and isinstance(value, int):
            value = "%s (%d bytes)" % (human_size(value), value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        _out("%-20s %s" % (key.replace("_", " ") + ":", _dash(value)))
    return EXIT_OK


def cmd_image_rm(args):
    entry = _image_cache().remove(args.image, force=args.force)
    if entry is None:
        raise errors.ImageNotFound("%s is not in the image cache" % args.image, hint="See vmctl image list")
    _out("removed %s (%s)" % (entry.path, entry.url))
    return EXIT_OK


def cmd_image_prune(args):
    from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
    removed = _image_cache().prune(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        _out("%s %s (%s, %s)" % (verb, item["path"], item["reason"], human_size(item["size"])))
    _note("%s %d file(s), %s" % (verb, len(removed), human_size(sum(i["size"] for i in removed))))
    return EXIT_OK


# --- VMFile commands: the collection's playbooks -----------------------------------------------------

def _seconds(text):
    """An argparse type: a whole number of seconds, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("%r is not a whole number of seconds of at least 1" % text)
    return value


def _ansible_playbook():
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if os.access(beside, os.X_OK):
        return beside
    from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
    return find_tool("ansible-playbook")


def playbook_argv(args):
    """``ansible-playbook vmctl.core.<command>`` with the extra vars of the command's options."""
    path = os.path.abspath(vmfile.find(args.file))
    vmfile.load(path, names=[args.name] if args.name else None)  # a mistake is reported here, with file:line:col
    argv = [_ansible_playbook(), "vmctl.core." + args.command, "-e", "vmfile=%s" % path]
    if args.name:
        argv += ["-e", "name=%s" % args.name]
    if getattr(args, "no_provision", False):
        argv += ["-e", "no_provision=true"]
    for option, variable in (("timeout", "ssh_timeout"), ("stall_timeout", "stall_timeout")):
        if getattr(args, option, None) is not None:
            argv += ["-e", "%s=%d" % (variable, getattr(args, option))]
    if getattr(args, "destroy", False):
        argv += ["-e", "destroy=true"]
    if args.verbose:
        argv.append("-" + "v" * args.verbose)
    return argv + list(args.extra)


def playbook_env():
    """The environment for ansible-playbook: this collection first on its collections path."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_DIR)))  # the dir holding ansible_collections/
    if os.path.basename(os.path.dirname(os.path.dirname(COLLECTION_DIR))) == "ansible_collections":
        rest = env.get("ANSIBLE_COLLECTIONS_PATH") or env.get("ANSIBLE_COLLECTIONS_PATHS")
        env["ANSIBLE_COLLECTIONS_PATH"] = root + (os.pathsep + rest if rest else "")
    return env


def cmd_playbook(args):
    argv = playbook_argv(args)
    if args.verbose:
        _note("running: %s" % " ".join(argv))
    proc = subprocess.Popen(argv, env=playbook_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # ansible-playbook got the same Ctrl+C; let it clean up
        return proc.wait()


# --- log ---------------------------------------------------------------------------------------------

def cmd_log(args):
    handle = _manager().get(args.name)
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
            _out("==> %s <==" % path)
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


# --- the parser --------------------------------------------------------------------------------------

EXIT_HELP = """\
exit codes:
  0    success
  1    the operation failed (QEMU, download, SSH, ...)
  2    usage: bad option, VM name, VMFile or setting
  3    not found: no such VM, image or VMFile
  4    wrong state: the VM is not running / already exists / the image is in use
  5    timeout
  70   internal error (run with -v for the traceback)
  130  interrupted
  up, down, reload, provision return ansible-playbook's exit code; ssh returns ssh's.

environment:
  XDG_DATA_HOME  where VMs and images are kept (default ~/.local/share; vmctl uses its vmctl/ folder)
  VMCTL_ACCEL    kvm or tcg: QEMU acceleration for VMs created with accel auto
  VMCTL_LOG      debug, info or warning: how much the engine logs on stderr (like -v, -vv)
"""

COMMANDS = []  # (name, help, description with examples, function to add arguments, handler)


def command(name, summary, examples):
    def register(add_arguments):
        COMMANDS.append((name, summary, examples, add_arguments))
        return add_arguments
    return register


def _name(parser, what="VM name"):
    parser.add_argument("name", metavar="NAME", help=what)


def _vm_command(name, summary, description, handler):
    """A command whose only argument is the VM's NAME."""
    def add_arguments(parser):
        _name(parser)
        return handler
    COMMANDS.append((name, summary, description, add_arguments))


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
    vnc = p.add_mutually_exclusive_group()
    vnc.add_argument("--no-vnc", action="store_true", help="no VNC display (default: a unix socket, vnc.sock in the work dir)")
    vnc.add_argument("--vnc-tcp", action="store_true",
                     help="VNC on 127.0.0.1 instead, with a password generated at each start (vnc.password in the work dir)")
    p.add_argument("--start", action="store_true", help="start the VM after creating it")
    return cmd_create


_vm_command("start", "Start an existing VM", """\
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
    _name(p)
    p.add_argument("--timeout", type=int, default=30, metavar="SECONDS", help="graceful shutdown timeout (default 30)")
    return cmd_stop


_vm_command("destroy", "Destroy a VM and clean up its files", """\
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
    _name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return cmd_status


_vm_command("console", "Attach to a VM's serial console", """\
Shows what the guest prints on its serial port and sends what you type. Press Ctrl+] to detach.
The console log (vmctl log NAME --console) has what was printed before you attached.

examples:
  vmctl console myvm
""", cmd_console)


@command("ssh", "SSH into a VM", """\
Runs the system ssh with the VM's key, checking the guest's host key against the one vmctl pinned
when it made the VM (StrictHostKeyChecking=yes). NAME may be left out when the VMFile (./VMFile.kdl
or --file) defines one VM. Arguments after -- are run as a command.

examples:
  vmctl ssh
  vmctl ssh myvm
  vmctl ssh myvm --user root --key ~/.ssh/special_key
  vmctl ssh myvm -- uname -a
""")
def _ssh_args(p):
    p.add_argument("name", metavar="NAME", nargs="?", help="VM name (default: the only VM of the VMFile)")
    p.add_argument("--name", dest="name_option", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--user", help="SSH user (default: the VM's)")
    p.add_argument("--key", metavar="PATH", help="private key (default: the VM's, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
    p.add_argument("--file", metavar="PATH", help="VMFile to find NAME in (default ./VMFile.kdl)")
    p.add_argument("--wait", type=int, default=30, metavar="SECONDS",
                   help="wait this long for the guest to accept SSH and finish cloud-init (default 30; 0: do not wait)")
    return cmd_ssh


command("ssh-config", "Print OpenSSH Host stanzas for VMs", ssh_cli.SSH_CONFIG_HELP)(ssh_cli.ssh_config_args)
command("cp", "Copy files between the host and a VM", ssh_cli.CP_HELP)(ssh_cli.cp_args)


_vm_command("suspend", "Suspend (pause) a running VM", """\
Pauses the VM's vCPUs; it stays in memory. vmctl resume continues it.

examples:
  vmctl suspend myvm
""", cmd_suspend)


_vm_command("resume", "Resume a suspended VM", """\
examples:
  vmctl resume myvm
""", cmd_resume)


@command("image", "Manage VM images", """\
examples:
  vmctl image pull https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
  vmctl image list
  vmctl image inspect ./my-image.qcow2
  vmctl image rm https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
  vmctl image prune --dry-run
""")
def _image_args(p):
    sub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True
    pull = _subparser(sub, "pull", "Download an image to the cache", """\
Downloads (resuming an interrupted download), decompresses .zst/.xz/.gz, checks the format and
caches the image by URL; progress goes to stderr, the cached path to stdout.

examples:
  vmctl image pull https://example.com/debian-12.qcow2
  vmctl image pull https://example.com/debian-12.qcow2.zst --name debian-12 --checksum sha256:<hex>
""")
    pull.add_argument("url", metavar="URL", help="URL to download")
    pull.add_argument("--name", help="readable name of the cached file")
    pull.add_argument("--checksum", metavar="SUM", help="sha256:<hex>, sha512:<hex> or the URL of a SHA256SUMS file")
    pull.add_argument("--force", action="store_true", help="download again even if cached")
    pull.add_argument("--deadline", type=int, metavar="SECONDS",
                      help="give up when the download takes longer (default: its size at 256 KB/s, at least 600 s)")
    pull.add_argument("--stall-timeout", type=int, metavar="SECONDS",
                      help="give up when less than 64 KB arrive in this long (default 60)")
    pull.add_argument("--max-size", type=int, metavar="GB",
                      help="largest image accepted on disk, decompressed (default 64; less when its qcow2 header declares less)")
    pull.set_defaults(handler=cmd_image_pull)
    listing = _subparser(sub, "list", "List cached images", "examples:\n  vmctl image list\n")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_image_list)
    inspect = _subparser(sub, "inspect", "Show an image's format and details",
                         "examples:\n  vmctl image inspect ./my-image.qcow2\n  vmctl image inspect https://example.com/image.img\n")
    inspect.add_argument("image", metavar="PATH|URL", help="an image file, or the URL of a cached image")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=cmd_image_inspect)
    rm = _subparser(sub, "rm", "Remove an image from the cache",
                    "Refused while a VM uses it, unless --force.\n\nexamples:\n  vmctl image rm https://example.com/image.img\n")
    rm.add_argument("image", metavar="URL|PATH", help="the image's URL, or its path in the cache")
    rm.add_argument("--force", action="store_true", help="remove it even if VMs use it")
    rm.set_defaults(handler=cmd_image_rm)
    prune = _subparser(sub, "prune", "Remove images no VM uses and unfinished downloads",
                       "examples:\n  vmctl image prune --dry-run\n  vmctl image prune\n")
    prune.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    prune.set_defaults(handler=cmd_image_prune)
    return None


def _vmfile_args(p, no_provision=False, destroy=False):
    p.add_argument("--file", metavar="PATH", help="the VMFile (default ./VMFile.kdl)")
    p.add_argument("--name", metavar="VM", help="only this VM of the VMFile")
    if no_provision:
        p.add_argument("--no-provision", action="store_true", help="skip the provision steps")
        p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                       help="deadline of the wait for SSH and cloud-init (default: the VMFile's ssh { boot-timeout }, "
                            "else 600 under TCG, 300 with KVM)")
        p.add_argument("--stall-timeout", type=_seconds, metavar="SECONDS",
                       help="fail the wait when the guest shows no progress for this long (default: the VMFile's "
                            "ssh { stall-timeout }, else 120)")
    if destroy:
        p.add_argument("--destroy", action="store_true", help="destroy the VMs instead of stopping them")
    p.set_defaults(extra=[])
    return cmd_playbook


@command("up", "Bring up VMs from VMFile.kdl", """\
Create, start and provision every VM of the VMFile (in parallel): a running VM is left alone (unless
its provision steps never completed: then they run), a stopped one is started and provisioned again.
The wait for SSH fails a guest that shows no progress for --stall-timeout seconds, or that is not
ready by the --timeout deadline. Runs ansible-playbook vmctl.core.up.

examples:
  vmctl up
  vmctl up --name webserver
  vmctl up --no-provision
  vmctl up --file path/to/VMFile.kdl
  vmctl up --timeout 1200 --stall-timeout 300    # a slow host
""")
def _up_args(p):
    return _vmfile_args(p, no_provision=True)


@command("down", "Bring down VMs from VMFile.kdl", """\
Stop the VMs of the VMFile (ACPI power-off, terminated after 30 s), or with --destroy remove them.
Runs ansible-playbook vmctl.core.down.

examples:
  vmctl down
  vmctl down --name webserver
  vmctl down --destroy
""")
def _down_args(p):
    return _vmfile_args(p, destroy=True)


@command("reload", "Destroy and recreate VMs from VMFile.kdl", """\
Destroy each VM of the VMFile, then create, start and provision it afresh. Runs ansible-playbook
vmctl.core.reload.

examples:
  vmctl reload
  vmctl reload --name webserver
  vmctl reload --no-provision
""")
def _reload_args(p):
    return _vmfile_args(p, no_provision=True)


@command("provision", "Re-run provisioners from VMFile.kdl", """\
Run the provision steps of the VMFile again on running VMs, streaming their output (also appended to
provision.log). Runs ansible-playbook vmctl.core.provision.

examples:
  vmctl provision
  vmctl provision --name builder
""")
def _provision_args(p):
    return _vmfile_args(p)


@command("log", "Show VM logs", """\
Shows the console log (boot and cloud-init output) and the provision log, or only one of them.

examples:
  vmctl log myvm
  vmctl log myvm --provision
  vmctl log myvm --console --tail 50
  vmctl log myvm --console -f
""")
def _log_args(p):
    _name(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--console", action="store_true", help="only the console log")
    which.add_argument("--provision", action="store_true", help="only the provision log")
    p.add_argument("--tail", "-n", type=int, default=0, metavar="N", help="only the last N lines (0: all)")
    p.add_argument("--follow", "-f", action="store_true", help="keep showing what is appended (Ctrl+C ends)")
    return cmd_log


def _verbosity(parser, default):
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more output (engine log; for up/down/reload/provision also ansible-playbook -v)")


def _subparser(sub, name, summary, description):
    p = sub.add_parser(name, help=summary, description=summary + ".\n\n" + description, epilog=EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbosity(p, argparse.SUPPRESS)
    return p


def build_parser():
    parser = argparse.ArgumentParser(
        prog="vmctl", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_HELP,
        description="Create, run, provision and tear down VMs (QEMU/KVM) - the commands of vmctl, "
                    "over the vmctl.core Ansible collection.\n\n"
                    "examples:\n  vmctl create --name demo --image-url https://example.com/image.img --start\n"
                    "  vmctl ssh demo\n  vmctl up && vmctl ssh && vmctl down --destroy\n\n"
                    "'vmctl COMMAND --help' shows a command's options and examples.")
    parser.add_argument("--version", action="version", version="vmctl %s (vmctl.core at %s)" % (version(), COLLECTION_DIR))
    _verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for name, summary, description, add_arguments in COMMANDS:
        if name in PLAYBOOK_COMMANDS:
            description += "\nArguments after -- go to ansible-playbook, e.g. vmctl %s -- --forks 10\n" % name
        p = _subparser(sub, name, summary, description)
        handler = add_arguments(p)
        if handler is not None:
            p.set_defaults(handler=handler)
    return parser


def _split_extra(argv):
    """``up ... -- -f 10``: what follows ``--`` goes to ansible-playbook (or ssh), untouched by argparse."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def _configure_logging(verbose):
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
    level = levels.get(os.environ.get("VMCTL_LOG", "").lower(), logging.WARNING)
    if verbose:
        level = min(level, logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="vmctl: %(levelname)s: %(message)s")
    # paramiko logs each failed attempt of a retried login (a booting guest) with a traceback; our own
    # error carries the last one, so its log shows only with -vv.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, after = _split_extra(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if after is not None and args.command not in PLAYBOOK_COMMANDS + ("ssh",):
        parser.error("arguments after -- are only for ssh and %s" % ", ".join(PLAYBOOK_COMMANDS))
    args.remote_command = after or []  # ssh: the command to run on the VM
    args.extra = after or []           # up, down, ...: more ansible-playbook arguments
    verbose = args.verbose = getattr(args, "verbose", 0) or 0
    _configure_logging(verbose)
    try:
        return args.handler(args)
    except VmctlError as err:
        _note("error: %s" % err.message)
        if err.hint and err.hint not in err.message:  # a VMFile problem renders its own hint under its line
            _note("hint: %s" % err.hint)
        if verbose:
            _note("code: %s" % err.code)
        return exit_code_of(err)
    except KeyboardInterrupt:
        _note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # vmctl list | head
        return EXIT_OK
    except Exception as err:  # a bug: say so, with the traceback when asked
        full = errors.no_space(err, paths.data_dir())  # not a bug: a full disk
        if full is not None:
            _note("error: %s" % full.message)
            _note("hint: %s" % full.hint)
            return EXIT_FAILED
        _note("error: internal error: %s: %s" % (type(err).__name__, err))
        if verbose:
            _note(traceback.format_exc())
        else:
            _note("hint: run again with -v for the traceback, and please report it")
        return EXIT_INTERNAL
