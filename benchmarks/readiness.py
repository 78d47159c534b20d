"""Benchmark: from the guest printing cloud-init's final message on its console to the readiness wait returning.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/readiness.py [--runs 2]

Boots the Debian test guest (fresh VMs from the same image, under VMCTL_ACCEL, default tcg) and, in
alternation in the same run, waits for it with:

- ``readiness``: today's wait, ``readiness.wait_until_ready`` (what ``vm_state`` runs: login attempts
  every second, then on the guest a loop that ends when ``/run/cloud-init/result.json`` appears);
- ``before``: the wait as it was before the stall-aware wait, reimplemented here as the reference
  (login attempts, then ``test -e result.json || cloud-init status --wait`` over SSH).

A thread tails console.log and stamps the moment ``Cloud-init v. … finished at`` appears (QEMU writes
the serial console to the log as it comes). The figure is the time from that stamp to the wait
returning. Target: at most 2 s for ``readiness``, printed beside ``before``.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

from support.guests import debian_spec  # noqa: E402

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh  # noqa: E402
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager  # noqa: E402
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import Retryable, SshSession  # noqa: E402

FINAL = re.compile(rb"Cloud-init v\. \S+ finished at")


class ConsoleWatch(threading.Thread):
    """Stamps (time.monotonic) the first appearance of cloud-init's final message in a console log."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stamp, self.stop = path, None, threading.Event()

    def run(self):
        seen = b""
        offset = 0
        while not self.stop.is_set() and self.stamp is None:
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                data = b""
            if data:
                offset += len(data)
                seen = (seen + data)[-4096:]
                if FINAL.search(seen):
                    self.stamp = time.monotonic()
            time.sleep(0.02)


# The reference: the wait as it was before the stall-aware wait (SshSession.open of then), a login retried
# every second, then the cloud-init command it ran.
OLD_CLOUD_INIT_WAIT = "test -e /run/cloud-init/result.json || cloud-init status --wait >/dev/null 2>&1; true"


def old_wait(target, wait_timeout):
    pkey = SshSession.credentials(target)
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            session = SshSession.attempt(target, pkey, 10)
            break
        except Retryable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    try:
        session.run(OLD_CLOUD_INIT_WAIT, timeout=max(5.0, deadline - time.monotonic()))
    finally:
        session.close()


def one_run(manager, images, name, method):
    manager.create(debian_spec(images, name=name, hostname=name, vcpus=2, memory_mb=1024))
    handle = manager.get(name)
    watch = ConsoleWatch(handle.console_log)
    watch.start()
    begin = time.monotonic()
    handle, _before = manager.start(name)
    if method == "readiness":
        readiness.wait_until_ready(handle, deadline=900)
    else:
        old_wait(ssh.target_for(handle), 900)
    returned = time.monotonic()
    watch.join(2)
    watch.stop.set()
    manager.destroy(name)
    if watch.stamp is None:
        return None, returned - begin
    return returned - watch.stamp, returned - begin


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each method, alternating (default %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("VMCTL_ACCEL", "tcg")
    manifest = os.environ.get("VMCTL_TEST_IMAGES") or subprocess.run(
        [os.path.join(HERE, "..", "scripts", "build-test-image")], capture_output=True, text=True, check=True).stdout.split()[-1]
    with open(manifest) as f:
        images = json.load(f)
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="vmctl-bench-readiness-")
    manager = VmManager()
    figures = {"readiness": [], "before": []}
    for run in range(args.runs):
        for method in ("readiness", "before"):
            lag, total = one_run(manager, images, "bench-%s-%d" % (method, run), method)
            load = os.getloadavg()[0]
            if lag is None:
                print("%-9s run %d: the final message was not seen on the console (wait took %.1f s)" % (method, run + 1, total))
                continue
            figures[method].append(lag)
            print("%-9s run %d: final message -> wait returned %.2f s (start -> ready %.1f s, load %.1f)"
                  % (method, run + 1, lag, total, load))
    print()
    for method, lags in figures.items():
        if lags:
            print("%-9s median %.2f s over %d runs (min %.2f, max %.2f)" % (method, statistics.median(lags), len(lags), min(lags), max(lags)))
    if figures["readiness"]:
        verdict = "met" if statistics.median(figures["readiness"]) <= 2.0 else "NOT met"
        print("target: readiness <= 2 s after cloud-init's final message: %s" % verdict)


if __name__ == "__main__":
    main()
