# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``vms`` inventory across hypervisors: wall time of ``ansible-inventory --list`` over 1, 2 and 4 hypervisors
that each hold N recorded VMs, cold and from the inventory cache (jsonfile), beside a local-only store of the same
total read in the same run.

The hypervisors are network namespaces with their own sshd, user and data directory (tests/system/support/
hypervisors.py). Each one's store is written directly with N noop-backend records (store_scale.populate; no QEMU:
a noop VM's live state is its record's), names unique across hypervisors. "cold" reads every store: one SSH login
and one command per hypervisor, all at once, as the plugin does. "cache" is the same source with ``cache: true``
(``ansible.builtin.jsonfile``), timed on the runs after the one that fills it: no hypervisor is contacted. "local"
is one store on the controller with hypervisors x N records, no SSH: the reference, measured in the same run; its
time is mostly ansible-inventory's own start-up. Each figure is the median of --rounds runs; the sshd logins per
cold run are counted from the hypervisors' logs (one each is the design).

All hypervisors are namespaces of this one machine (2 shared cores), so their Python start-ups compete for the
same CPUs: the spread between 1 and 4 hypervisors here is an upper bound of what separate machines would show. Last, the
store reads alone (``read_views`` in this process, no ansible-inventory start-up), over 1, 2 and 4 stores and over 16
and 32 (the namespaces read several times at once, past the pool of 16 threads): wall time and the controller's CPU.
Nothing is extrapolated here; docs/scale.md reasons from these figures. Needs root (namespaces, users).

Run: . scripts/env.sh && python benchmarks/hypervisors_inventory.py [--sizes 10,50] [--hypervisors 1,2,4] [--rounds 3]
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
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "system"))
sys.path.insert(0, HERE)

from store_scale import populate  # noqa: E402
from support.hypervisors import running  # noqa: E402

from ansible_collections.vmctl.core.plugins.plugin_utils.hypervisors import Hypervisor, read_views  # noqa: E402


def source(path, lines, cache_dir=None):
    """An inventory source ``path`` of the vms plugin with ``lines`` (YAML), the jsonfile cache in ``cache_dir``."""
    text = ["plugin: vmctl.core.vms", "strict: true"] + lines
    if cache_dir:
        text += ["cache: true", "cache_plugin: ansible.builtin.jsonfile", "cache_connection: %s" % cache_dir,
                 "cache_timeout: 3600"]
    with open(path, "w") as f:
        f.write("\n".join(text) + "\n")
    return path


def listing(path, expected):
    """Seconds of ``ansible-inventory -i path --list``, checked to list ``expected`` VMs."""
    begin = time.monotonic()
    proc = subprocess.run(["ansible-inventory", "-i", path, "--list"], capture_output=True, text=True, timeout=600,
                          check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    seconds = time.monotonic() - begin
    if proc.returncode != 0:
        raise SystemExit("ansible-inventory -i %s failed:\n%s\n%s" % (path, proc.stdout[-2000:], proc.stderr[-3000:]))
    hosts = json.loads(proc.stdout).get("_meta", {}).get("hostvars", {})
    if len(hosts) != expected:
        raise SystemExit("ansible-inventory -i %s listed %d VMs, not %d:\n%s" % (path, len(hosts), expected, proc.stderr[-2000:]))
    return seconds


def timed(path, expected, rounds):
    times = [listing(path, expected) for _round in range(rounds)]
    return statistics.median(times), times


def measure(hvs, count, size, work, image, rounds):
    """``{mode: (median, runs)}`` and the sshd logins per cold run, for the first ``count`` hypervisors with ``size``
    VMs each (their stores rewritten for this size)."""
    used = hvs[:count]
    for hv in used:
        shutil.rmtree(hv.data_dir, ignore_errors=True)
        populate(os.path.dirname(hv.data_dir), size, image, prefix="%sv" % hv.name)
        hv.own(os.path.join(hv.home, ".local"))
    local = os.path.join(work, "local-%d-%d" % (count, size))
    populate(local, count * size, image)
    entries = ["hypervisors:"] + ["  - %s" % json.dumps(hv.mapping()) for hv in used]
    tag = "%d-%d" % (count, size)
    results = {}
    before = sum(hv.logins() for hv in used)
    results["cold"] = timed(source(os.path.join(work, "cold-%s.vmctl.yml" % tag), entries), count * size, rounds)
    logins = (sum(hv.logins() for hv in used) - before) / float(rounds)
    cached = source(os.path.join(work, "cache-%s.vmctl.yml" % tag), entries, os.path.join(work, "cache-" + tag))
    listing(cached, count * size)  # fills the cache
    before = sum(hv.logins() for hv in used)
    results["cache"] = timed(cached, count * size, rounds)
    if sum(hv.logins() for hv in used) != before:
        raise SystemExit("the cached runs logged in to a hypervisor: the cache was not used")
    results["local"] = timed(source(os.path.join(work, "local-%s.vmctl.yml" % tag),
                                    ["data_dir: %s" % os.path.join(local, "vmctl")]), count * size, rounds)
    shutil.rmtree(local, ignore_errors=True)
    return results, logins


def reads(hvs, count, expected, rounds):
    """``(wall, controller CPU)`` medians, seconds, of ``read_views`` in this process over ``count`` hypervisor entries
    (the namespaces taken in turn: more entries than namespaces read the same stores again, under other names),
    checked to find ``expected`` VMs in all."""
    entries = [Hypervisor("r%d" % i, **{k: v for k, v in hvs[i % len(hvs)].mapping().items() if k != "name"})
               for i in range(count)]
    walls, cpus = [], []
    for _round in range(rounds):
        wall, cpu = time.monotonic(), time.process_time()
        results = read_views(entries)
        walls.append(time.monotonic() - wall)
        cpus.append(time.process_time() - cpu)
        errors = [str(error) for _hv, _views, _bad, error in results if error]
        found = sum(len(views) for _hv, views, _bad, _error in results)
        if errors or found != expected:
            raise SystemExit("read_views of %d entries found %d VMs, not %d: %s" % (count, found, expected, errors))
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10,50", help="VMs per hypervisor (default %(default)s)")
    parser.add_argument("--hypervisors", default="1,2,4", help="numbers of hypervisors (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = sorted(set(int(c) for c in args.hypervisors.split(",")))
    work = tempfile.mkdtemp(prefix="vmctl-bench-inv-")
    os.chmod(work, 0o755)
    image = os.path.join(work, "base.img")
    open(image, "wb").close()
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    try:
        with running(max(counts)) as hvs:
            rows = []
            for size in sizes:
                for count in counts:
                    results, logins = measure(hvs, count, size, work, image, args.rounds)
                    rows.append((count, size, results, logins))
                    print("  %d hypervisor(s) x %d VMs: cold %.2f s, cache %.2f s, local %.2f s (runs: %s)" % (
                        count, size, results["cold"][0], results["cache"][0], results["local"][0],
                        "; ".join("%s %s" % (mode, ", ".join("%.2f" % t for t in results[mode][1]))
                                  for mode in ("cold", "cache", "local"))), flush=True)
            size = sizes[-1]
            populated = hvs[:max(counts)]
            first = reads(populated[:1], 1, size, 1)  # paramiko's import and the payload's zip: once per process
            reading = []
            for count in sorted(set(counts + [4 * max(counts), 8 * max(counts)])):
                reading.append((count, reads(populated[:count], count, count * size, args.rounds)))
            print("load average after: %.2f %.2f %.2f" % os.getloadavg())
            print()
            print("%-12s %-8s %-6s %10s %10s %10s %14s %8s"
                  % ("hypervisors", "VMs/hv", "total", "cold (s)", "cache (s)", "local (s)", "cold - local", "logins"))
            for count, size, results, logins in rows:
                cold, cache, local = (results[mode][0] for mode in ("cold", "cache", "local"))
                print("%-12d %-8d %-6d %10.2f %10.2f %10.2f %12.2f s %8.1f"
                      % (count, size, count * size, cold, cache, local, cold - local, logins))
            print("(median of %d runs each; local: one controller store of the same total, no SSH, the same run; "
                  "logins: sshd logins per cold run, all hypervisors)" % args.rounds)
            print()
            print("read_views in this process (no ansible-inventory start-up), %d VMs per store, pool of at most 16:" % size)
            print("%-10s %10s %22s %18s" % ("stores", "wall (s)", "controller CPU (s)", "CPU per store (ms)"))
            print("%-10s %10.2f %22.2f %18s" % ("1 (first)", first[0], first[1], "(paramiko import, zip)"))
            for count, (wall, cpu) in reading:
                print("%-10d %10.2f %22.2f %18.0f" % (count, wall, cpu, cpu * 1000 / count))
            print("(more stores than the %d namespaces: each namespace read several times at once, under other names; "
                  "their sshd and Python run on this machine too)" % max(counts))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
