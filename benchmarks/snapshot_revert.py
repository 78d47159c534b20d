"""Benchmark: revert a running VM to a live snapshot until an SSH command answers, against a cold start of the
same VM until an SSH command answers, in the same run.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/snapshot_revert.py [--runs 2]

Boots the Debian test guest once (under VMCTL_ACCEL, default tcg) in a store of its own, waits until SSH and
cloud-init are done, takes the live snapshot ``warm`` (RAM and devices), then in alternation:

- ``revert``: ``VmManager.snapshot_revert`` of the running VM to ``warm``, then OpenSSH (the VM's key, its pinned
  known_hosts, StrictHostKeyChecking=yes) runs ``true`` until it answers;
- ``cold``: ``VmManager.stop`` (not timed), then ``VmManager.start`` and the same SSH loop (a second boot:
  cloud-init has nothing left to do, the fairest cold start).

Prints each run, the medians and their ratio. Target: revert at least 10x faster than the cold start.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

from support.guests import debian_spec, ssh_argv, wait_for_ssh  # noqa: E402

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager  # noqa: E402

NAME = "benchsnap"


def until_ssh_answers(handle, begin, timeout=600):
    """Seconds from ``begin`` until ``ssh … true`` exits 0."""
    while time.monotonic() - begin < timeout:
        if subprocess.run(ssh_argv(handle, "true"), capture_output=True, timeout=60, check=False).returncode == 0:
            return time.monotonic() - begin
        time.sleep(0.2)
    raise SystemExit("no SSH answer from %s within %ss" % (handle.name, timeout))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    manifest = os.environ.get("VMCTL_TEST_IMAGES") or subprocess.run(
        [os.path.join(HERE, "..", "scripts", "build-test-image")], capture_output=True, text=True, check=True).stdout.split()[-1]
    import json
    with open(manifest) as f:
        images = json.load(f)
    os.environ.setdefault("VMCTL_ACCEL", "tcg")
    home = tempfile.mkdtemp(prefix="vmctl-bench-snap-")
    os.environ["XDG_DATA_HOME"] = home
    manager = VmManager()
    try:
        manager.create(debian_spec(images, name=NAME))
        handle = manager.start(NAME)[0]
        print("first boot (not measured): SSH and cloud-init after %.1f s" % wait_for_ssh(handle, timeout=600), flush=True)
        taken = manager.snapshot_create(NAME, "warm")[2]
        print("live snapshot 'warm': %.1f MiB of RAM and device state" % (taken["vm_state_size"] / 2.0 ** 20), flush=True)
        reverts, colds = [], []
        for run in range(args.runs):
            begin = time.monotonic()
            handle, _changed, details = manager.snapshot_revert(NAME, "warm")
            reverts.append(until_ssh_answers(handle, begin))
            print("run %d revert: %.2f s (QEMU's load job %.2f s)" % (run + 1, reverts[-1], details["seconds"]), flush=True)
            manager.stop(NAME, timeout=60)
            begin = time.monotonic()
            handle = manager.start(NAME)[0]
            colds.append(until_ssh_answers(handle, begin))
            print("run %d cold start: %.2f s" % (run + 1, colds[-1]), flush=True)
        revert, cold = statistics.median(reverts), statistics.median(colds)
        print("revert to a live snapshot until SSH answers: %.2f s (median of %d)" % (revert, len(reverts)))
        print("cold start until SSH answers:               %.2f s (median of %d)" % (cold, len(colds)))
        print("ratio: revert is %.1fx faster (target: at least 10x)" % (cold / revert))
    finally:
        manager.destroy(NAME)
        subprocess.run(["rm", "-rf", home], check=False)


if __name__ == "__main__":
    main()
