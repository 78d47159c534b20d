"""Benchmark: controller memory per connected VM, of vm_ssh's session daemon(s).

Run on demand (not a test):  . scripts/env.sh && python benchmarks/session_memory.py [--before REV] [--counts 1,10,50]

For N = 1, 10 and 50 VMs (store entries, noop backend, each with its own known_hosts file, all pointing at
one real OpenSSH sshd on loopback), ``ansible all -m raw -a true -f 10`` runs through the real connection
plugin (vmctl.core.vm_ssh), which opens one SSH session per VM in the session daemon(s) of a fresh control
directory. Then the daemons' RSS is read (VmRSS in /proc/PID/status, summed over every session daemon
process of that collection tree, found in /proc by its command line) while the sessions are open (idle
timeout 600 s): "connected". Then every VM gets an 8 MB ``ansible.builtin.copy`` (10 forks at once, SFTP
through the daemon) and the RSS is read again: "after copy".

Printed for this checkout and, in the same run, for the reference REV (default: the last revision with a
daemon per VM): daemons, total RSS, and MB per additional connected VM, (RSS(N) - RSS(1)) / (N - 1).
Target: at most 10 MB per additional connected VM. The load average is printed because the machine is shared.
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
sys.path.insert(0, HERE)

from revision import revision  # noqa: E402
from support.ansible_run import _env  # noqa: E402
from support.sshd_server import LoopbackSshd  # noqa: E402
from support.vm_ssh_helpers import daemons, stop_daemons  # noqa: E402

PER_VM_DAEMONS = "e576611"  # main before the daemon per control directory: one session daemon per VM
TARGET_MB = 10.0
PAYLOAD = None  # the 8 MB file every VM gets, made in main()


def daemon_pids(tree_root):
    """Pids of the session daemons started from the collections dir ``tree_root`` (their argv names it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"daemon_main()" in arg and tree_root.encode() in arg for arg in argv):
            pids.append(int(entry))
    return pids


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def total_rss(root, control, count):
    """MB of RSS of the session daemons of ``root``, checked to hold ``count`` sessions."""
    pids = daemon_pids(root)
    answering = daemons(control)
    sessions = sum(len(d.get("sessions", [None])) for d in answering)
    if sessions != count or not set(d["pid"] for d in answering) <= set(pids):
        raise SystemExit("expected %d sessions, the daemons hold %d (pids %s, found %s)"
                         % (count, sessions, [d["pid"] for d in answering], pids))
    return len(pids), sum(rss_kb(pid) for pid in pids) / 1024.0


def ansible(argv, env):
    begin = time.monotonic()
    proc = subprocess.run(["ansible"] + argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        raise SystemExit("ansible failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return time.monotonic() - begin


def measure(sshd, count, collections, work):
    """Open ``count`` sessions through ``ansible``: ``(daemons, RSS MB connected, RSS MB after copy, seconds)``."""
    xdg = tempfile.mkdtemp(prefix="data-", dir=work)
    control = tempfile.mkdtemp(prefix="vmcpm-", dir="/tmp")
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = xdg
    try:
        names = ["m%02d" % i for i in range(count)]
        for name in names:
            sshd.store_vm(name, None)
        inventory = os.path.join(xdg, "hosts.ini")
        with open(inventory, "w") as f:
            f.write("\n".join(names) + "\n[all:vars]\nansible_connection=vmctl.core.vm_ssh\n")
        env = _env({"XDG_DATA_HOME": xdg, "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_IDLE_TIMEOUT": "600"})
        if collections:
            env.update(ANSIBLE_COLLECTIONS_PATH=collections, PYTHONPATH=collections)
        seconds = ansible(["all", "-i", inventory, "-m", "raw", "-a", "true", "-f", "10"], env)
        time.sleep(1.0)
        root = collections or os.environ["ANSIBLE_COLLECTIONS_PATH"].split(":")[0]
        daemon_count, connected = total_rss(root, control, count)
        dest = tempfile.mkdtemp(prefix="copies-", dir=work)
        ansible(["all", "-i", inventory, "-m", "copy", "-a", "src=%s dest=%s/{{ inventory_hostname }}" % (PAYLOAD, dest),
                 "-f", "10", "-e", "ansible_python_interpreter=/usr/bin/python3"], env)
        shutil.rmtree(dest, ignore_errors=True)
        return daemon_count, connected, total_rss(root, control, count)[1], seconds
    finally:
        stop_daemons(control)
        shutil.rmtree(control, ignore_errors=True)
        if saved is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--before", default=PER_VM_DAEMONS, metavar="REV",
                        help="the reference revision, measured in the same run (default %(default)s: a daemon per VM)")
    parser.add_argument("--counts", default="1,10,50", help="numbers of connected VMs (default %(default)s)")
    args = parser.parse_args()
    counts = sorted(set(int(c) for c in args.counts.split(",")))
    if counts[0] != 1:
        counts.insert(0, 1)
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    work = tempfile.mkdtemp(prefix="vmctl-bench-mem-")
    results = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        old = stack.enter_context(revision(args.before))
        global PAYLOAD
        PAYLOAD = os.path.join(work, "payload.bin")
        with open(PAYLOAD, "wb") as f:
            f.write(os.urandom(8 << 20))
        sshd = LoopbackSshd(os.path.join(work, "sshd")).start()
        stack.callback(sshd.stop)
        designs = [("this checkout", None), ("%s (reference)" % args.before, old)]
        for index, count in enumerate(counts):
            for label, collections in (designs if index % 2 == 0 else designs[::-1]):
                results[label, count] = measure(sshd, count, collections, work)
                print("  %-22s N=%-3d daemons %-3d RSS %7.1f MB connected, %7.1f MB after copy  (ansible %.1f s)"
                      % ((label, count) + results[label, count]))
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    print()
    print("%-22s %4s %8s %15s %14s %15s %14s" % ("design", "N", "daemons", "connected (MB)", "MB per +VM",
                                                 "after copy (MB)", "MB per +VM"))

    def per_vm(label, count, column):
        return (results[label, count][column] - results[label, 1][column]) / (count - 1)

    for label, _collections in designs:
        for count in counts:
            row = results[label, count]
            extra = ("", "") if count == 1 else ("%.2f" % per_vm(label, count, 1), "%.2f" % per_vm(label, count, 2))
            print("%-22s %4d %8d %15.1f %14s %15.1f %14s" % (label, count, row[0], row[1], extra[0], row[2], extra[1]))
    top = counts[-1]
    if top > 1:
        for column, what in ((1, "connected"), (2, "after copy")):
            ours, theirs = per_vm(designs[0][0], top, column), per_vm(designs[1][0], top, column)
            print("MB per additional connected VM at N=%d, %s: %.2f (reference %.2f; target <= %.0f: %s)"
                  % (top, what, ours, theirs, TARGET_MB, "met" if ours <= TARGET_MB else "NOT MET"))


if __name__ == "__main__":
    main()
