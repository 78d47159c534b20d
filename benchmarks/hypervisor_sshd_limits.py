# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a hypervisor's sshd must allow: N tasks at once on one hypervisor, with OpenSSH's default limits
(MaxStartups 10:30:100, MaxSessions 10) beside raised ones (MaxStartups 100:30:200, MaxSessions 100), same run.

Two kinds of load, each with ``-f N`` (one fork per VM), on one namespace hypervisor (tests/system/support/
hypervisors.py):

- "delegated": ``ansible -m raw -a 'sleep 2'`` on N inventory aliases of the hypervisor, over Ansible's ssh
  connection (ControlMaster/ControlPersist: the aliases share one master, as the per-VM tasks that ``up``
  delegates to a VM's hypervisor do);
- "vm_ssh": ``ansible -m raw -a true`` on N stand-in VMs on the hypervisor (an sshd each on its 127.0.0.1), listed
  by the ``vms`` inventory and reached with vmctl.core.vm_ssh: one hypervisor login per VM session (a fresh
  session daemon each run).

Printed: hosts ok / failed / unreachable per run, the hypervisor's sshd logins, and the first error; then, with the
raised limits, the session daemon's RSS with 1, 10 and N VM sessions open through the hypervisor (two SSH transports
each: the hop and the VM), and the PSS of the hypervisor's sshd processes for those hop logins. No QEMU.
Needs root (namespaces, users).

Run: . scripts/env.sh && python benchmarks/hypervisor_sshd_limits.py [--vms 30] [--rounds 2]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "system"))

from support.ansible_run import _env  # noqa: E402
from support.hypervisors import running  # noqa: E402
from support.vm_ssh_helpers import daemons, stop_daemons  # noqa: E402

sys.path.insert(0, HERE)
from session_memory import rss_kb  # noqa: E402

LIMITS = {"OpenSSH defaults": None, "raised": ("MaxStartups 100:30:200", "MaxSessions 100")}


def configure(hv, limits):
    """Restart the hypervisor's sshd with ``limits`` (None: OpenSSH's defaults)."""
    hv.stop_sshd()
    with open(hv.config) as f:
        lines = [line for line in f.read().splitlines() if not line.startswith(("MaxStartups", "MaxSessions"))]
    with open(hv.config, "w") as f:
        f.write("\n".join(lines + list(limits or ())) + "\n")
    hv.start_sshd()


def aliases(hv, count, path):
    lines = ["all:", "  hosts:"]
    for i in range(count):
        lines += ["    a%02d:" % i, "      ansible_host: %s" % hv.address, "      ansible_user: %s" % hv.user,
                  "      ansible_ssh_private_key_file: %s" % hv.user_key,
                  "      ansible_ssh_common_args: -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % hv.known_hosts]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def masters(control):
    """Pids of the OpenSSH ControlMaster processes whose control socket is under ``control``."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and os.path.basename(argv[0]) == b"ssh" and any(control.encode() in arg for arg in argv):
            pids.append(int(entry))
    return pids


def run(argv, env):
    """``(ok, failed, unreachable, seconds, first error)`` of an ``ansible`` ad-hoc run."""
    env = dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_NOCOLOR="1")
    begin = time.monotonic()
    proc = subprocess.run(["ansible"] + argv, capture_output=True, text=True, env=env, timeout=900, check=False)
    seconds = time.monotonic() - begin
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout, re.M)
    if not recap:
        raise SystemExit("ansible printed no recap (%d):\n%s\n%s" % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    errors = re.findall(r'"msg": "(.*)"', proc.stdout)
    return (sum(1 for _h, u, f in recap if u == f == "0"), sum(1 for _h, u, f in recap if f != "0"),
            sum(1 for _h, u, f in recap if u != "0"), seconds, errors[0][:160] if errors else "")


def descendants(pid):
    """Pids of every process under ``pid``."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def pss_kb(pid):
    """The proportional set size of ``pid`` (its shared pages divided among their users), KB."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def hop_memory(hv, fleet, work, count):
    """``(sessions, daemons, RSS MB, hypervisor sshd RSS MB)`` after ``ansible -m raw`` on the first ``count``
    stand-in VMs, every session open through the hypervisor (idle timeout 600 s): the controller's session daemon,
    and the processes under the hypervisor's sshd (one per hop login)."""
    control = tempfile.mkdtemp(prefix="cpm-", dir=work)
    env = _env({"ANSIBLE_VMCTL_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_IDLE_TIMEOUT": "600"})
    try:
        ok = run(["all", "-i", fleet, "-m", "raw", "-a", "true", "-f", "10",
                  "--limit", ",".join("f%02d" % i for i in range(count))], env)[0]
        if ok != count:
            raise SystemExit("%d of %d stand-in VMs answered" % (ok, count))
        time.sleep(1.0)
        answering = daemons(control)
        return (sum(len(d.get("sessions", ())) for d in answering), len(answering),
                sum(rss_kb(d["pid"]) for d in answering) / 1024.0,
                sum(pss_kb(pid) for pid in descendants(hv.proc.pid)) / 1024.0)
    finally:
        stop_daemons(control)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--vms", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="vmctl-bench-limits-")
    os.chmod(work, 0o755)
    rows = []
    try:
        with running(1) as (hv,):
            for i in range(args.vms):
                hv.fake_vm("f%02d" % i, port=2300 + i)
            hosts = aliases(hv, args.vms, os.path.join(work, "aliases.yml"))
            fleet = os.path.join(work, "fleet.vmctl.yml")
            with open(fleet, "w") as f:
                f.write("plugin: vmctl.core.vms\nstrict: true\nhypervisors:\n  - %s\n" % json.dumps(hv.mapping()))
            for round_ in range(args.rounds):
                for label, limits in (list(LIMITS.items()) if round_ % 2 == 0 else list(LIMITS.items())[::-1]):
                    configure(hv, limits)
                    for kind in ("delegated", "vm_ssh"):
                        control = tempfile.mkdtemp(prefix="cp-", dir=work)
                        env = _env({"ANSIBLE_SSH_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control,
                                    "ANSIBLE_VMCTL_IDLE_TIMEOUT": "5"})
                        before = hv.logins()
                        if kind == "delegated":
                            argv = ["all", "-i", hosts, "-m", "raw", "-a", "sleep 2", "-f", str(args.vms)]
                        else:
                            argv = ["all", "-i", fleet, "-m", "raw", "-a", "true", "-f", str(args.vms)]
                        row = (label, kind) + run(argv, env) + (hv.logins() - before,)
                        stop_daemons(control)
                        for pid in masters(control):  # this run's ControlPersist masters: none outlives its run
                            os.kill(pid, signal.SIGTERM)
                        rows.append(row)
                        print("round %d, %-16s %-9s ok %2d failed %2d unreachable %2d  %.1f s  hv logins %d  %s"
                              % ((round_ + 1,) + row[:6] + (row[7], row[6])), flush=True)
            configure(hv, LIMITS["raised"])
            memory = [(count, hop_memory(hv, fleet, work, count))
                      for count in sorted({1, min(10, args.vms), args.vms})]
            print()
            print("%-16s %-9s %12s %s" % ("sshd limits", "load", "ok of %d" % args.vms, "(each run; hv logins)"))
            for label in LIMITS:
                for kind in ("delegated", "vm_ssh"):
                    mine = [row for row in rows if row[:2] == (label, kind)]
                    print("%-16s %-9s %12s %s" % (label, kind, "/".join(str(row[2]) for row in mine),
                                                  "; ".join("%d logins" % row[7] for row in mine)))
            print()
            print("session daemon memory, every VM session through the hypervisor (raised limits):")
            print("%-6s %9s %8s %10s %12s %24s" % ("VMs", "sessions", "daemons", "RSS (MB)", "MB per +VM",
                                                   "hypervisor sshd PSS (MB)"))
            for count, (sessions, daemon_count, rss, hv_rss) in memory:
                extra = "%.2f" % ((rss - memory[0][1][2]) / (count - 1)) if count > 1 else ""
                print("%-6d %9d %8d %10.1f %12s %24.1f" % (count, sessions, daemon_count, rss, extra, hv_rss))
            print("(hypervisor sshd PSS: the processes under its listening sshd, one or two per hop login, shared pages divided)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
