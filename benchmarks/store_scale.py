# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Store scale: ``vmctl list`` and one ``create`` at 10, 100 and 1,000 VMs (noop backend), this checkout
beside reference commits measured in the same run (default: a9f4983, the per-line store that rewrote
the whole vms.json on every change; 91f05ca, the store before it).

For each size N, a store of N-1 VMs is written once as the guide's vms.json (the layout every version
reads), then each version times the creates of VMs N .. N+6 in-process through VmManager (a create
is two store transactions, reserve and save); the figure is the lowest median over --rounds fresh
stores (fsync times swing with the other work on this shared machine), and ``bin/vmctl list`` of its
own N-VM store (wall time of the real executable, Python start-up included). Targets: list of 1,000 VMs
under 1 s; the 1,000th create at most 3x the 10th.

This checkout appends a change to ``vms.json.journal`` once vms.json is 64 KiB or more, and folds the
journal in (one whole-file write) when it reaches a quarter of vms.json: with 1,000 VMs about once
per 100 creates, so the seven creates timed here need not include a fold; its cost is one whole-file
write (about what every create paid before), spread over those creates.

Run: . scripts/env.sh && python benchmarks/store_scale.py [--sizes 10,100,1000] [--ref a9f4983,91f05ca]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = r'''
import json, os, statistics, sys, time
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
try:
    from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec
except ImportError:  # a reference from before the layout by concern
    from ansible_collections.vmctl.core.plugins.module_utils.types import VmSpec
image, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manager = VmManager()
times = []
for i in range(first, first + count):
    begin = time.perf_counter()
    manager.create(VmSpec(name="vm%05d" % i, image_path=image, backend="noop"))
    times.append(time.perf_counter() - begin)
print(json.dumps(times))
'''


def collection_path(checkout, scratch):
    """A PYTHONPATH entry under which ``ansible_collections.vmctl.core`` is ``checkout``."""
    base = os.path.join(scratch, "collections-%s" % os.path.basename(checkout.rstrip("/")))
    os.makedirs(os.path.join(base, "ansible_collections", "vmctl"), exist_ok=True)
    link = os.path.join(base, "ansible_collections", "vmctl", "core")
    if not os.path.lexists(link):
        os.symlink(checkout, link)
    return base


def run(checkout, scratch, data_home, args, what):
    env = dict(os.environ, XDG_DATA_HOME=data_home, PYTHONPATH=collection_path(checkout, scratch),
               ANSIBLE_COLLECTIONS_PATH=collection_path(checkout, scratch))
    begin = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - begin
    if proc.returncode != 0:
        raise SystemExit("%s failed (%s): %s%s" % (what, checkout, proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc.stdout, elapsed


def populate(data_home, count, image, prefix="vm"):
    """A store of ``count`` noop VMs named ``<prefix>00001`` on, written directly as the guide's vms.json (with
    their directories)."""
    vmctl = os.path.join(data_home, "vmctl")
    os.makedirs(os.path.join(vmctl, "vms"), exist_ok=True)
    records = {}
    for i in range(1, count + 1):
        name = "%s%05d" % (prefix, i)
        work = os.path.join(vmctl, "vms", name)
        os.makedirs(work, exist_ok=True)
        records[name] = {
            "id": "%012x" % i, "name": name, "backend": "noop", "work_dir": work, "overlay_path": None,
            "seed_iso_path": None, "pid": None, "qmp_socket": None, "console_socket": None, "vnc_addr": None,
            "vcpus": 1, "memory_mb": 1024, "disk_gb": None, "network": {"type": "User"},
            "ssh_host_port": 20000 + i, "mac_addr": "52:54:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255),
            "state": "prepared", "image_path": image, "accel": "auto", "vnc": True, "cloud_init": False,
            "created_at": 0.0,
        }
    with open(os.path.join(vmctl, "vms.json"), "w") as f:
        f.write("{\n%s\n}\n" % ",\n".join("  %s: %s" % (json.dumps(n), json.dumps(r)) for n, r in records.items()))


def measure(checkout, scratch, size, image, label, rounds):
    """``(create seconds, list seconds)``: the create figure is the lowest, over ``rounds`` fresh stores,
    of the median of 7 creates (the least disturbed by other work on the machine, for every version
    alike); ``vmctl list`` is timed on the first store."""
    creates, listing = [], None
    for dummy in range(rounds):
        data_home = tempfile.mkdtemp(prefix="store-%s-%d-" % (label, size), dir=scratch)
        populate(data_home, size - 1, image)
        out, _elapsed = run(checkout, scratch, data_home, [sys.executable, "-c", DRIVER, image, str(size), "7"], "create")
        creates.append(statistics.median(json.loads(out.strip().splitlines()[-1])))
        if listing is None:
            _out, listing = run(checkout, scratch, data_home, [sys.executable, os.path.join(checkout, "bin", "vmctl"), "list"], "list")
        shutil.rmtree(data_home, ignore_errors=True)
    return min(creates), listing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--ref", default="a9f4983,91f05ca", help="reference commits, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="fresh stores per figure (the lowest median is shown)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    refs = [r for r in args.ref.split(",") if r]
    scratch = tempfile.mkdtemp(prefix="store-scale-")
    try:
        checkouts = [("this", ROOT)]
        for ref in refs:
            path = os.path.join(scratch, "ref-" + ref)
            os.makedirs(path)
            archive = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
            checkouts.append((ref, path))
        image = os.path.join(scratch, "base.img")
        open(image, "wb").close()
        print("%-6s" % "VMs" + "".join("%16s" % ("list (%s)" % label) for label, _path in checkouts)
              + "  " + "".join("%18s" % ("create (%s)" % label) for label, _path in checkouts))
        results = {}
        for size in sizes:
            results[size] = [measure(path, scratch, size, image, label, args.rounds) for label, path in checkouts]
            print("%-6d" % size + "".join("%14.3f s" % listing for _create, listing in results[size])
                  + "  " + "".join("%15.1f ms" % (create * 1000) for create, _listing in results[size]), flush=True)
        if len(sizes) > 1:
            small, large = sizes[0], sizes[-1]
            for index, (label, _path) in enumerate(checkouts):
                ratio = results[large][index][0] / results[small][index][0]
                print("create at %d / create at %d (%s): %.1fx (target <= 3x)" % (large, small, label, ratio))
            print("list of %d VMs (this): %.3f s (target < 1 s)" % (large, results[large][0][1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
