# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The private networks' switches: one rootless ``vde_switch`` (Debian's vde2) per switch id.

A switch lives in ``<data_dir>/switches/<id>/`` (0700; the id is a digest of the VMFile's path and the
network's name, see private_network.switch_id): ``ctl/`` is vde's control directory (QEMU joins with
``-netdev vde,sock=<ctl>``; sockets 0600), ``switch.pid`` its pidfile, ``switch.lock`` a lock file whose
flock the switch holds for its whole life (the descriptor is inherited at spawn), ``op.lock`` serializes
start, attach and release, and ``users/<vm>`` marks each VM attached. No tap, no host interface, no route:
only the VMs' NICs are ports of the switch.

The switch's pid is believed (and signalled) only when the process named by its pidfile is a live
``vde_switch`` whose command line gives this very control directory and which holds ``switch.lock`` open
(checked in /proc/<pid>/fd by device and inode): a stale pidfile never hits an unrelated process.

Lifecycle: a VM's start attaches it (under ``op.lock``: the switch is started when it is not running,
a dead one is restarted, then QEMU is spawned and the marker written); its stop, destroy or a failed
start releases it: the marker goes, then markers of VMs whose QEMU no longer runs (crashed, killed) are
swept, and a switch without users is stopped. A crash at any point leaves at worst a stale marker or a
switch without users, which the next attach or release of that switch corrects.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import time

from ansible_collections.vmctl.core.plugins.module_utils import paths, private_network
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, StopFailed, SwitchFailed
from ansible_collections.vmctl.core.plugins.module_utils.proc import ProvenProcess, cmdline_and_state, find_tool
from ansible_collections.vmctl.core.plugins.module_utils.store import file_lock

BINARY = "vde_switch"
# A unix socket's path has at most 107 bytes; the longest under the control directory is a client's
# ``.<pid>-<n>`` (libvdeplug binds it there), up to 16 bytes with a 7-digit pid.
MAX_CTL = 107 - 16
START_TIMEOUT = 10.0
SIGNAL_WAIT = 5.0


def data_dir_of(work_dir):
    """The data dir a VM's work dir ``<data_dir>/vms/<name>`` belongs to."""
    return os.path.dirname(os.path.dirname(work_dir))


class SwitchProcess(ProvenProcess):
    """The vde_switch of one switch folder, proven as described above."""

    def __init__(self, folder):
        self.folder = folder
        self.ctl = os.path.join(folder, "ctl")
        self.pidfile = os.path.join(folder, "switch.pid")
        self.holder = os.path.join(folder, "switch.lock")

    def pid(self):
        try:
            with open(self.pidfile, "rb") as f:
                content = f.read(64).decode("ascii", "replace").strip()
        except OSError:
            return None
        return int(content) if content.isdigit() and self.is_ours(int(content)) else None

    def is_ours(self, pid):
        seen = cmdline_and_state(pid)
        try:
            holder = os.stat(self.holder)
        except OSError:
            return False
        if seen is None:
            return False
        argv, state = seen
        if state == "Z" or os.path.basename(argv[0]) != BINARY.encode() or \
                not any(a == b"-s" and b == self.ctl.encode() for a, b in zip(argv, argv[1:])):
            return False
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return False
        for fd in fds:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(fd_dir, fd))
                if (st.st_dev, st.st_ino) == (holder.st_dev, holder.st_ino):
                    return True
        return False


class Switch:
    """One switch folder under ``<data_dir>/switches``; ``name`` is only for messages. ``alive(work_dir)`` says
    whether the QEMU of the VM in ``work_dir`` runs (the backend's proof; without it no VM counts as live)."""

    def __init__(self, data_dir, switch_id, name=None, alive=None):
        self.id, self.name = switch_id, name or switch_id
        self.alive = alive or (lambda work_dir: False)
        self.root = os.path.join(data_dir, "switches")
        self.folder = os.path.join(self.root, switch_id)
        self.vms_dir = os.path.join(data_dir, "vms")
        self.process = SwitchProcess(self.folder)
        self.ctl = self.process.ctl
        self.users_dir = os.path.join(self.folder, "users")

    @contextlib.contextmanager
    def locked(self):
        paths.ensure_private_dir(self.root)
        paths.ensure_private_dir(self.folder)
        with file_lock(os.path.join(self.folder, "op.lock")):
            yield self

    def pid(self):
        return self.process.pid()

    def users(self):
        with contextlib.suppress(FileNotFoundError):
            return sorted(os.listdir(self.users_dir))
        return []

    def live_users(self):
        """Attached VMs whose QEMU runs (``alive``); markers of the others are removed."""
        live = []
        for vm in self.users():
            if self.alive(os.path.join(self.vms_dir, vm)):
                live.append(vm)
            else:
                self.mark(vm, False)
        return live

    def generation(self):
        """``"<pid>:<start time>"`` of the running switch (a restarted switch has another), or None."""
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(OSError, IndexError):
            with open("/proc/%d/stat" % pid) as f:
                return "%d:%s" % (pid, f.read().rsplit(")", 1)[1].split()[19])
        return None

    def joined(self, vm):
        """The generation of the switch VM ``vm`` joined (its marker's content), or None."""
        with contextlib.suppress(OSError):
            with open(os.path.join(self.users_dir, vm)) as f:
                return f.read(64).strip() or None
        return None

    def mark(self, vm, attached=True):
        path = os.path.join(self.users_dir, vm)
        if attached:
            paths.ensure_private_dir(self.users_dir)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.generation() or "")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # --- the process (call with the switch locked) ------------------------------------------------------
    def ensure_running(self):
        """The switch's pid, starting it when it does not run (a dead or killed switch is started again)."""
        pid = self.pid()
        if pid is not None:
            return pid
        binary = find_tool(BINARY, hint="Install it (Debian/Ubuntu: apt install vde2)")
        if len(self.ctl.encode()) > MAX_CTL:
            raise SwitchFailed("private network %s: the switch's control directory %s is %d bytes long; its sockets "
                               "need it at most %d" % (self.name, self.ctl, len(self.ctl.encode()), MAX_CTL),
                               hint="Use a shorter data directory (XDG_DATA_HOME)", network=self.name)
        self._clear()
        fd = os.open(self.process.holder, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SwitchFailed("private network %s: %s is held by a process that is not its switch (its pidfile %s "
                                   "does not name it)" % (self.name, self.process.holder, self.process.pidfile),
                                   hint="Find it with fuser -v %s and end it; then start the VM again" % self.process.holder,
                                   network=self.name)
            rcfile = os.path.join(self.folder, "switch.rc")  # empty: no ~/.vderc or /etc/vde2/vde_switch.rc is read
            with open(rcfile, "w"):
                pass
            argv = [binary, "-s", self.ctl, "-p", self.process.pidfile, "-f", rcfile, "-d",
                    "-m", "0600", "--dirmode", "0700"]
            try:
                result = subprocess.run(argv, pass_fds=(fd,), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                        timeout=START_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise SwitchFailed("private network %s: vde_switch did not daemonize within %ss" % (self.name, START_TIMEOUT),
                                   network=self.name, argv=argv)
        finally:
            os.close(fd)  # the switch keeps the lock through its own copy of the descriptor
        if result.returncode != 0:
            raise SwitchFailed("private network %s: vde_switch failed (exit %d): %s"
                               % (self.name, result.returncode, (result.stderr or result.stdout).strip()),
                               hint="Run the command by hand to see why: %s" % " ".join(argv), network=self.name, argv=argv)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            pid = self.pid()
            if pid is not None and os.path.exists(os.path.join(self.ctl, "ctl")):
                return pid
            if time.monotonic() >= deadline:
                raise SwitchFailed("private network %s: vde_switch started but its pidfile or control socket did not "
                                   "appear in %s" % (self.name, self.folder), network=self.name, argv=argv)
            time.sleep(0.05)

    def stop(self):
        """End the switch (SIGTERM, then SIGKILL) and remove its sockets; returns the pid ended or None."""
        pid = self.pid()
        if pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not self.process.signal(pid, sig) or self.process.wait_gone(pid, SIGNAL_WAIT):
                    break
            else:
                raise StopFailed("private network %s: vde_switch (pid %s) survived SIGKILL" % (self.name, pid))
        self._clear()
        return pid

    def _clear(self):
        """Remove what a switch that no longer runs left behind (its control directory and pidfile)."""
        if os.path.islink(self.ctl):
            os.unlink(self.ctl)
        elif os.path.isdir(self.ctl):
            shutil.rmtree(self.ctl, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.process.pidfile)


# --- what the QEMU backend calls --------------------------------------------------------------------------

def _switches(handle, alive=None):
    data_dir = data_dir_of(handle.work_dir)
    seen = {}
    for nic in private_network.nics_of(handle):
        seen.setdefault(nic["switch"], Switch(data_dir, nic["switch"], nic.get("name"), alive))
    return [seen[key] for key in sorted(seen)]  # locked in one order: no deadlock between two starts


@contextlib.contextmanager
def attached(handle, alive):
    """Hold the VM's switches locked and running, the VM marked as a user of each, while QEMU is spawned in the
    block; on failure the VM is released (a switch it started alone is stopped again). The marker is written
    before QEMU starts: killed in between, it is a marker of a VM whose QEMU may or may not run, which the
    next release of the switch judges by the QEMU's own proof."""
    with contextlib.ExitStack() as stack:
        switches = [stack.enter_context(s.locked()) for s in _switches(handle, alive)]
        for s in switches:
            s.ensure_running()
            s.mark(handle.name)
        try:
            yield switches
        except BaseException:
            for s in switches:
                s.mark(handle.name, False)
                if not s.live_users():
                    s.stop()
            raise


def release(handle, alive):
    """After the VM's QEMU has gone: unmark it; stop each of its switches that has no live user left. A record
    whose private networks do not check (an edited vms.json) is released from the VM's name alone."""
    try:
        mine = _switches(handle, alive)
    except InvalidSpec:
        release_work_dir(handle.work_dir, handle.name, alive)
        return []
    stopped = []
    for s in mine:
        with s.locked():
            s.mark(handle.name, False)
            if not s.live_users() and s.stop() is not None:
                stopped.append(s.name)
    return stopped


def release_work_dir(work_dir, name, alive):
    """For a VM whose record is unusable: unmark ``name`` on every switch, stopping those left without users."""
    root = os.path.join(data_dir_of(work_dir), "switches")
    with contextlib.suppress(FileNotFoundError):
        for switch_id in sorted(os.listdir(root)):
            s = Switch(data_dir_of(work_dir), switch_id, alive=alive)
            if stat.S_ISDIR(os.lstat(s.folder).st_mode) and name in s.users():
                with s.locked():
                    s.mark(name, False)
                    if not s.live_users():
                        s.stop()


def links(handle):
    """``{network name: state}`` of a running VM's private NICs: ``up``; ``down`` (its switch does not run: it
    was killed); ``cut off`` (the switch was started again since the VM joined: QEMU does not rejoin, so the
    VM is on the switch again only after its next start)."""
    result = {}
    for nic in private_network.nics_of(handle):
        s = Switch(data_dir_of(handle.work_dir), nic["switch"], nic["name"])
        generation = s.generation()
        result[nic["name"]] = "down" if generation is None else "up" if s.joined(handle.name) == generation else "cut off"
    return result


def ports(handle):
    """``[(control directory, MAC)]``: where each private NIC of the VM joins its switch, in the VM's order."""
    data_dir = data_dir_of(handle.work_dir)
    return [(Switch(data_dir, nic["switch"]).ctl, nic["mac"]) for nic in private_network.nics_of(handle)]
