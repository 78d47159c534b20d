# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement across hypervisors: wall time of ``ansible-playbook vmctl.core.up`` for 4 tiny-guest VMs (no SSH)
placed on two hypervisors (2 + 2) and on four (1 each), beside the same 4 VMs on one hypervisor, in alternating
runs of one session (``--hypervisors 1,2`` for the first two layouts only).

The hypervisors are network namespaces with their own sshd, user and data directory (tests/system/support/
hypervisors.py); the up playbook delegates each VM's vm and vm_state tasks to its hypervisor over Ansible's ssh
connection, and QEMU runs inside the namespace. Every run starts from nothing (``down -e destroy=true`` after
each, not timed). Needs root (namespaces, users).

All hypervisors are namespaces of this one 2-core machine, so more hypervisors do not add CPUs: what the figure
shows is the cost of the placement itself (more SSH connections, delegation to more hosts) and whether the
hosts' tasks run in parallel, not the speed-up of real separate machines.

Run: . scripts/env.sh && python benchmarks/hypervisors_up.py [--rounds 2] [--hypervisors 1,2,4]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))

from support.hypervisors import running  # noqa: E402

VM = ('vm "%s" {\n  image "%s"\n  memory 256\n  hypervisor "%s"\n  kernel "%s" {\n    initrd "%s"\n'
      '    append "console=ttyS0"\n  }\n}\n')


def images():
    manifest = os.environ.get("VMCTL_TEST_IMAGES") or subprocess.run(
        [os.path.join(ROOT, "scripts", "build-test-image")], check=True, capture_output=True, text=True).stdout.split()[-1]
    with open(manifest) as f:
        return json.load(f)


def inventory(hvs, path):
    lines = ["all:", "  hosts:"]
    for hv in hvs:
        lines += ["    %s:" % hv.name, "      ansible_host: %s" % hv.address, "      ansible_user: %s" % hv.user,
                  "      ansible_ssh_private_key_file: %s" % hv.user_key,
                  "      ansible_python_interpreter: /usr/bin/python3",
                  "      ansible_ssh_common_args: -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % hv.known_hosts]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def playbook(hosts, vmfile, name, *extra):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_NOCOLOR="1")
    start = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", hosts, "vmctl.core.%s" % name, "-e", "vmfile=%s" % vmfile] + list(extra),
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (name, proc.stdout[-4000:]))
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hypervisors", default="1,2,4", help="layouts: the 4 VMs spread over this many hypervisors "
                        "(each a divisor of 4; the first is the reference; default %(default)s)")
    args = parser.parse_args()
    spreads = [int(c) for c in args.hypervisors.split(",")]
    if not spreads or any(c not in (1, 2, 4) for c in spreads):
        parser.error("--hypervisors takes 1, 2 and 4")
    tiny = images()["tiny"]
    work = tempfile.mkdtemp(prefix="vmctl-bench-hv-")
    os.chmod(work, 0o755)
    try:
        with running(max(spreads)) as hvs:
            disk = os.path.join(work, "tiny.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
            os.chmod(disk, 0o644)
            hosts = os.path.join(work, "hosts.yml")
            inventory(hvs, hosts)
            layouts = {"4 VMs on %d hypervisor%s" % (c, "s" if c > 1 else ""): ["hv%d" % (i % c + 1) for i in range(4)]
                       for c in spreads}
            times = {name: [] for name in layouts}
            for round_ in range(args.rounds):
                for name, placement in (list(layouts.items()) if round_ % 2 == 0 else list(layouts.items())[::-1]):
                    vmfile = os.path.join(work, "VMFile.kdl")
                    with open(vmfile, "w") as f:
                        f.write("".join(VM % ("b%d" % i, disk, hv, tiny["kernel"], tiny["initrd"])
                                        for i, hv in enumerate(placement)))
                    seconds = playbook(hosts, vmfile, "up")
                    playbook(hosts, vmfile, "down", "-e", "destroy=true")
                    times[name].append(seconds)
                    print("round %d, %s: up %.1f s" % (round_ + 1, name, seconds), flush=True)
            reference = list(layouts)[0]
            print()
            print("%-26s %-36s %s" % ("layout", "up wall time (median of %d)" % args.rounds, "/ %s" % reference))
            for name in layouts:
                median = statistics.median(times[name])
                print("%-26s %-36s %.2fx" % (name, "%.1f s  (%s)" % (median, ", ".join("%.1f" % t for t in times[name])),
                                             median / statistics.median(times[reference])))
            print("(reference: %s, measured in the same session)" % reference)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
