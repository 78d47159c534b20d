"""Benchmark: ImageCache.pull of a large .zst image from a local nginx, against curl | zstd -d.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/image_pull.py [--runs 3] [--keep DIR]

Builds image-like data once (a raw disk converted from a real qcow2, padded with a mix of random,
low-entropy and zero 4 MB segments so that the .zst is >= 300 MB), serves it with nginx, and for
each run measures, each on a fresh output directory after a ``sync``:

- baseline: ``curl -s URL | zstd -d > file`` (exactly that pipeline, as the target is stated);
- baseline+fsync: the same followed by ``sync FILE`` (a durable copy, as the cache makes);
- pull: ``VmManager().image_cache().pull(URL)`` in a child process; its peak RSS is the child's ``ru_maxrss``.
  The pull does not hash the decompressed image; ``image.digest()`` afterwards does (timed
  apart, as a vm_image task would pay it).

Prints throughput in MB/s of decompressed output and of compressed input, the ratio to the
baseline next to the target (>= 0.9x), and the peak RSS next to the target (< 100 MB).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

from support.nginx_server import NginxServer  # noqa: E402

MB = 1 << 20
SEGMENT = 4 * MB

CHILD = r"""
import json, os, sys, time
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
url = sys.argv[1]
marks = {}
def progress(done, total):
    if total and done >= total and "last_byte" not in marks:
        marks["last_byte"] = time.monotonic()
t0 = time.monotonic()
image = VmManager().image_cache().pull(url, progress=progress)
t1 = time.monotonic()
sha256 = image.digest()
t2 = time.monotonic()
print(json.dumps({"seconds": t1 - t0, "transfer_seconds": marks.get("last_byte", t1) - t0, "sha256_seconds": t2 - t1,
                  "size": image.size, "source_size": image.source_size, "sha256": sha256,
                  "downloaded": image.downloaded}))
"""


def low_entropy(n):
    """Bytes from a 16-letter alphabet: about 2:1 for zstd, like text and binaries in a disk."""
    table = bytes(ord("a") + (i & 15) for i in range(256))
    return os.urandom(n).translate(table)


def build_data(workdir):
    raw = os.path.join(workdir, "disk.raw")
    zst = raw + ".zst"
    if os.path.exists(zst):
        return raw, zst
    print("building image data in %s ..." % workdir, flush=True)
    # A real qcow2 (random, low-entropy and empty clusters), converted back to raw: the start of the disk.
    seed_raw, qcow2 = os.path.join(workdir, "seed.raw"), os.path.join(workdir, "seed.qcow2")
    with open(seed_raw, "wb") as f:
        for i in range(256 * MB // SEGMENT):
            kind = i % 4
            f.write(os.urandom(SEGMENT) if kind == 0 else low_entropy(SEGMENT) if kind == 1 else bytes(SEGMENT))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", seed_raw, qcow2], check=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", qcow2, raw], check=True)
    os.unlink(seed_raw)
    # Padding: 1280 MB in 4 MB segments: random, zero, low-entropy, zero, zero.
    with open(raw, "ab") as f:
        for i in range(1280 * MB // SEGMENT):
            kind = i % 5
            f.write(os.urandom(SEGMENT) if kind == 0 else low_entropy(SEGMENT) if kind == 2 else bytes(SEGMENT))
    subprocess.run(["zstd", "-q", "-T0", "-3", "-f", raw, "-o", zst], check=True)
    return raw, zst


def timed_shell(cmd):
    """(wall seconds, CPU seconds of the pipeline's processes)."""
    subprocess.run(["sync"], check=True)
    before = os.times()
    t0 = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return time.monotonic() - t0, cpu


def run_pull(url, data_home):
    subprocess.run(["sync"], check=True)
    env = dict(os.environ, XDG_DATA_HOME=data_home)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url], env=env, stdout=subprocess.PIPE)
    out = proc.stdout.read()
    status, usage = os.wait4(proc.pid, 0)[1:]
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    if proc.returncode != 0:
        raise SystemExit("pull failed (exit %s)" % proc.returncode)
    result = json.loads(out)
    result["maxrss_mb"] = usage.ru_maxrss / 1024.0  # Linux reports kilobytes
    result["cpu"] = usage.ru_utime + usage.ru_stime  # includes interpreter start-up
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="work directory to keep (and reuse) the generated data in")
    args = parser.parse_args()
    for tool in ("nginx", "curl", "zstd", "qemu-img"):
        if not shutil.which(tool):
            raise SystemExit("%s is needed (run scripts/setup)" % tool)
    workdir = args.keep or tempfile.mkdtemp(prefix="vmctl-bench-")
    os.makedirs(workdir, exist_ok=True)
    server = None
    try:
        raw, zst = build_data(workdir)
        raw_size, zst_size = os.path.getsize(raw), os.path.getsize(zst)
        server = NginxServer(os.path.join(workdir, "nginx"))
        server.start()
        os.makedirs(server.root, exist_ok=True)
        served = os.path.join(server.root, "disk.raw.zst")
        if not os.path.exists(served):
            os.link(zst, served)
        url = server.url("disk.raw.zst")
        print("image: %.0f MB raw, %.0f MB .zst (%s)" % (raw_size / MB, zst_size / MB, url))
        print("cpu: %d cores; Python %s" % (os.cpu_count(), sys.version.split()[0]))

        best = {}
        rss = []
        cpu = {}
        load_before = os.getloadavg()[0]
        for run in range(args.runs):
            out = os.path.join(workdir, "out")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            plain, plain_cpu = timed_shell("curl -s %s | zstd -d > %s/baseline.raw" % (url, out))
            best["baseline"] = min(best.get("baseline", plain), plain)
            cpu.setdefault("baseline", []).append(plain_cpu)
            durable = timed_shell("curl -s %s | zstd -d > %s/durable.raw && sync %s/durable.raw" % (url, out, out))[0]
            best["baseline_fsync"] = min(best.get("baseline_fsync", durable), durable)
            os.unlink(os.path.join(out, "baseline.raw"))
            os.unlink(os.path.join(out, "durable.raw"))
            result = run_pull(url, os.path.join(out, "xdg"))
            if result["size"] != raw_size or not result["downloaded"]:
                raise SystemExit("pull produced a wrong image: %r" % result)
            best["pull"] = min(best.get("pull", result["seconds"]), result["seconds"])
            best["pull_transfer"] = min(best.get("pull_transfer", result["transfer_seconds"]), result["transfer_seconds"])
            best["sha256"] = min(best.get("sha256", result["sha256_seconds"]), result["sha256_seconds"])
            rss.append(result["maxrss_mb"])
            cpu.setdefault("pull", []).append(result["cpu"])
            print("run %d: baseline %.2fs, baseline+fsync %.2fs, pull %.2fs (last byte at %.2fs), then sha256 %.2fs, "
                  "peak RSS %.1f MB" % (run + 1, plain, durable, result["seconds"], result["transfer_seconds"],
                                        result["sha256_seconds"], result["maxrss_mb"]), flush=True)
            shutil.rmtree(out, ignore_errors=True)

        def rates(seconds):
            return "%7.0f MB/s decompressed, %6.0f MB/s compressed" % (raw_size / MB / seconds, zst_size / MB / seconds)

        print()
        print("best of %d runs" % args.runs)
        print("  curl -s URL | zstd -d > file      %6.2fs  %s" % (best["baseline"], rates(best["baseline"])))
        print("  ... && sync file (durable)         %6.2fs  %s" % (best["baseline_fsync"], rates(best["baseline_fsync"])))
        print("  ImageCache.pull (durable)          %6.2fs  %s" % (best["pull"], rates(best["pull"])))
        print("      of which until the last byte  %6.2fs" % best["pull_transfer"])
        print("  then image.digest() (hash once)  %6.2fs" % best["sha256"])
        print("  ratio pull / curl|zstd            %6.2fx   (target >= 0.9x)" % (best["baseline"] / best["pull"]))
        print("  ratio pull / curl|zstd + sync     %6.2fx" % (best["baseline_fsync"] / best["pull"]))
        print("  peak RSS of the pulling process   %6.1f MB (max over runs; target < 100 MB)" % max(rss))
        print("  CPU seconds (min over runs)       pull+sha256 %.2f, curl+zstd %.2f; %d cores; load average %.2f before, %.2f after"
              % (min(cpu["pull"]), min(cpu["baseline"]), os.cpu_count(), load_before, os.getloadavg()[0]))
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
