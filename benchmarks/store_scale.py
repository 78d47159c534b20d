# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Store scale: ``vmctl list`` and one ``create`` at 10, 100 and 1,000 VMs (noop backend), this checkout
beside the reference code (default: commit 91f05ca, before the per-line store), measured in the same run.

For each size N, a store of N-1 VMs is written once (by this checkout: the file layout is the guide's
JSON object either version reads), then each version times the creates of VMs N, N+1, N+2 in-process
through VmManager (the median is printed), and ``bin/vmctl list`` of its own N-VM store (wall time of the
real executable, Python start-up included). Targets: list of 1,000 VMs under 1 s; the 1,000th create at
most 3x the 10th.

Run: . scripts/env.sh && python benchmarks/store_scale.py [--sizes 10,100,1000] [--ref 91f05ca]
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
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec
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


def populate(data_home, count, image):
    """A store of ``count`` noop VMs, written directly as the guide's vms.json (with their directories)."""
    vmctl = os.path.join(data_home, "vmctl")
    os.makedirs(os.path.join(vmctl, "vms"), exist_ok=True)
    records = {}
    for i in range(1, count + 1):
        name = "vm%05d" % i
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


def measure(checkout, scratch, size, image, label):
    data_home = tempfile.mkdtemp(prefix="store-%s-%d-" % (label, size), dir=scratch)
    populate(data_home, size - 1, image)
    out, _elapsed = run(checkout, scratch, data_home, [sys.executable, "-c", DRIVER, image, str(size), "3"], "create")
    create = statistics.median(json.loads(out.strip().splitlines()[-1]))
    _out, listing = run(checkout, scratch, data_home, [sys.executable, os.path.join(checkout, "bin", "vmctl"), "list"], "list")
    shutil.rmtree(data_home, ignore_errors=True)
    return create, listing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--ref", default="91f05ca", help="the reference commit (today's code)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    scratch = tempfile.mkdtemp(prefix="store-scale-")
    try:
        ref = os.path.join(scratch, "ref")
        os.makedirs(ref)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", ref], input=archive, check=True)
        image = os.path.join(scratch, "base.img")
        open(image, "wb").close()
        print("%-6s %14s %14s   %14s %14s" % ("VMs", "list (this)", "list (%s)" % args.ref, "create (this)", "create (%s)" % args.ref))
        results = {}
        for size in sizes:
            this = measure(ROOT, scratch, size, image, "this")
            old = measure(ref, scratch, size, image, "ref")
            results[size] = (this, old)
            print("%-6d %12.3f s %12.3f s   %11.1f ms %11.1f ms" % (size, this[1], old[1], this[0] * 1000, old[0] * 1000), flush=True)
        if len(sizes) > 1:
            small, large = sizes[0], sizes[-1]
            for label, index in (("this", 0), (args.ref, 1)):
                ratio = results[large][index][0] / results[small][index][0]
                print("create at %d / create at %d (%s): %.1fx (target <= 3x)" % (large, small, label, ratio))
            print("list of %d VMs (this): %.3f s (target < 1 s)" % (large, results[large][0][1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
