"""Benchmark: ``ansible-playbook vmctl.core.up`` of one VM beside a hand-written shell script, and of two VMs.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/up.py [--runs 2]

On the Debian test image (scripts/build-test-image), with the acceleration the engine picks here
(``auto``: KVM when it works, else TCG; ``VMCTL_ACCEL`` overrides it), each run measures, each from
nothing (a fresh XDG_DATA_HOME) and torn down afterwards:

- up: wall time of ``ansible-playbook vmctl.core.up`` of a VMFile with one VM (2 vCPUs, 1024 MB, user
  networking, cloud-init, one inline shell step and one file upload);
- baseline: wall time of benchmarks/up_baseline.sh doing the same by hand (ssh-keygen, qemu-img create,
  genisoimage, qemu-system-x86_64 with the engine's options, ssh polled until a login works and
  ``cloud-init status --wait`` returned, the command over ssh, scp of the file);
- up x2: wall time of ``up`` of a VMFile with two such VMs (brought up in parallel).

up runs with ``-e ssh_timeout=600``: its default of 120 s for the login and cloud-init can run out
under TCG when other guests share the CPUs. The baseline waits up to 600 s too.

The order alternates between runs (up, baseline, up x2, then the reverse). Prints each run, the medians,
up's overhead over the baseline beside the target (<= 5 s), the two-VM/one-VM ratio, and where up's time
went (its tasks, from the benchmark callback task_seconds, beside the baseline's phases). Also CPU seconds:
"guest", of the QEMU processes until up returned (under TCG the guest's own work, which the host's load
changes little), and "host", of ansible-playbook and its module processes, or of the script and its
tools (neither counts daemons: QEMU, vm_ssh's session daemon). The load average is printed because the
machine is shared: other guests booting under TCG slow every wall time here.
"""

import argparse
import contextlib
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import resolve_accel
from revision import BEFORE_LAYOUT, revision

HERE = os.path.dirname(os.path.abspath(__file__))

VCPUS, MEMORY = 2, 1024
COMMAND = 'echo "hello from $(hostname)" && sudo mkdir -p /srv/bench'
DEST = "/tmp/greeting.txt"
TARGET_OVERHEAD = 5.0
# up's default (vm_up's vm_up_ssh_timeout, 120 s) is too short for two guests under TCG on a busy 2-CPU machine
SSH_TIMEOUT = 600


def vm_block(name, image):
    q = json.dumps  # a KDL string is written like a JSON one
    return """vm %s {
    image %s
    vcpus %d
    memory %d
    cloud-init {
        hostname %s
    }
    ssh {
        user "bench"
    }
    provision "shell" {
        inline %s
    }
    provision "file" {
        source "files/greeting.txt"
        destination %s
    }
}
""" % (q(name), q(image), VCPUS, MEMORY, q(name), q(COMMAND), q(DEST))


def write_inputs(workdir, image):
    os.makedirs(os.path.join(workdir, "files"))
    with open(os.path.join(workdir, "files", "greeting.txt"), "w") as f:
        f.write("uploaded by benchmarks/up.py\n")
    vmfiles = {}
    for label, names in (("one", ["one"]), ("two", ["one", "two"])):
        vmfiles[label] = os.path.join(workdir, "VMFile-%s.kdl" % label)
        with open(vmfiles[label], "w") as f:
            f.write("".join(vm_block(name, image) for name in names))
    return vmfiles


def children_cpu():
    times = os.times()
    return times.children_user + times.children_system


def qemu_cpu(pidfiles):
    """CPU seconds the QEMU processes have used so far: under TCG, the guests' own work, whatever the load."""
    total = 0.0
    for path in pidfiles:
        with open(path) as f, open("/proc/%d/stat" % int(f.read().strip())) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def playbook(workdir, xdg, name, vmfile, *extra, collections=None):
    """Run vmctl.core.NAME on VMFILE (of the collection in ``collections``, default this checkout's):
    (wall seconds, task_seconds report)."""
    env = dict(os.environ, XDG_DATA_HOME=xdg, ANSIBLE_VMCTL_CONTROL_PATH_DIR=os.path.join(xdg, "cp"),
               ANSIBLE_STDOUT_CALLBACK="task_seconds", ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_RETRY_FILES_ENABLED="0")
    if collections:
        env.update(ANSIBLE_COLLECTIONS_PATH=collections, PYTHONPATH=collections)
    argv = ["ansible-playbook", "vmctl.core.%s" % name, "-e", "vmfile=%s" % vmfile] + list(extra)
    begin = time.time()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.time() - begin
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"failures": ["no report"]}
    if proc.returncode != 0 or report["failures"]:
        raise SystemExit("%s failed:\n%s\n%s" % (" ".join(argv), proc.stdout[-3000:], proc.stderr[-3000:]))
    report["begin"] = begin
    return seconds, report


def run_up(workdir, vmfile, tag, collections=None):
    """{seconds, host_cpu (ansible-playbook and its module processes), guest_cpu, report}"""
    xdg = os.path.join(workdir, "xdg-%s" % tag)
    try:
        cpu = children_cpu()
        seconds, report = playbook(workdir, xdg, "up", vmfile, "-e", "ssh_timeout=%d" % SSH_TIMEOUT, collections=collections)
        return {"seconds": seconds, "host_cpu": children_cpu() - cpu, "report": report,
                "guest_cpu": qemu_cpu(glob.glob(os.path.join(xdg, "vmctl", "vms", "*", "qemu.pid")))}
    finally:
        try:
            playbook(workdir, xdg, "down", vmfile, "-e", "destroy=true", collections=collections)
        except SystemExit as err:  # keep the first error; QEMU would then still run: say so
            print("destroying the VMs of %s failed (check for QEMU processes): %s" % (vmfile, err))
        shutil.rmtree(xdg, ignore_errors=True)


def run_baseline(workdir, image, accel):
    """{seconds, host_cpu, guest_cpu, phases}"""
    vm_dir = os.path.join(workdir, "baseline")
    with socket.socket() as sock:  # a free port for the forward, as the engine picks one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = os.path.join(HERE, "up_baseline.sh")
    argv = [script, "up", vm_dir, image, str(port), accel, "host" if accel == "kvm" else "max", str(VCPUS), str(MEMORY),
            COMMAND, os.path.join(workdir, "files", "greeting.txt"), DEST]
    begin, cpu = time.time(), children_cpu()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
        result = {"seconds": time.time() - begin, "host_cpu": children_cpu() - cpu}
        if proc.returncode == 0:
            result["guest_cpu"] = qemu_cpu([os.path.join(vm_dir, "qemu.pid")])
    finally:
        subprocess.run([script, "down", vm_dir], check=True)
    if proc.returncode != 0:
        raise SystemExit("up_baseline.sh failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    result["phases"] = dict((name, float(value)) for name, value in (line.split() for line in proc.stdout.splitlines()))
    return result


def task_breakdown(seconds, report):
    """[(label, seconds)]: ansible's start, each task of 0.1 s or more, the time between tasks, the end."""
    timeline = report["timeline"]
    rows = [("ansible-playbook start-up, until the first task", timeline[0][1] - report["begin"])]
    between = 0.0
    for i, (name, start, end) in enumerate(timeline):
        if end - start >= 0.1:
            rows.append((name, end - start))
        if i + 1 < len(timeline):
            between += timeline[i + 1][1] - end
    rows.append(("between tasks (%d tasks started; includes, forks, small tasks)" % len(timeline),
                 between + sum(end - start for _n, start, end in timeline if end - start < 0.1)))
    rows.append(("after the last task, until exit", report["begin"] + seconds - timeline[-1][2]))
    return rows


def phases_of_up(result):
    """up's time in the baseline's phases: {prepare, boot, provision, ansible}."""
    out = {"prepare": 0.0, "boot": 0.0, "provision": 0.0}
    for name, start, end in result["report"]["timeline"]:
        if name.startswith("vmctl.core.vm_up : Create"):
            out["prepare"] += end - start
        elif name.startswith("vmctl.core.vm_up : Start"):
            out["boot"] += end - start
        elif name.startswith("vmctl.core.provision : Provision"):
            out["provision"] += end - start
    out["ansible"] = result["seconds"] - sum(out.values())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=2, help="runs (default %(default)s)")
    parser.add_argument("--before", metavar="REV", help="also time up of one VM with this earlier revision "
                        "(e.g. %s, before issue 13's layout), in the same runs" % BEFORE_LAYOUT)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    manifest = os.environ.get("VMCTL_TEST_IMAGES") or subprocess.run(
        [os.path.join(HERE, "..", "scripts", "build-test-image")], capture_output=True, text=True, check=True).stdout.split()[-1]
    with open(manifest) as f:
        image = json.load(f)["debian"]["path"]
    accel = resolve_accel("auto")
    workdir = tempfile.mkdtemp(prefix="vmctl-bench-up-")
    vmfiles = write_inputs(workdir, image)
    print("image %s, accel %s, %d vCPUs / %d MB per VM; %d CPUs" % (image, accel, VCPUS, MEMORY, os.cpu_count()))
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    results = {"up": [], "baseline": [], "up x2": []}
    before = contextlib.ExitStack()
    try:
        old = None
        if args.before:
            old = before.enter_context(revision(args.before))
            results["up (%s)" % args.before] = []
        for run in range(args.runs):
            order = list(results)
            for what in order if run % 2 == 0 else order[::-1]:
                if what == "baseline":
                    results[what].append(run_baseline(workdir, image, accel))
                elif what.startswith("up ("):
                    results[what].append(run_up(workdir, vmfiles["one"], "b-%d" % run, collections=old))
                else:
                    results[what].append(run_up(workdir, vmfiles["one" if what == "up" else "two"], "%s-%d" % (what[-1], run)))
            print("run %d: %s (load average %.2f)" % (run + 1, ", ".join(
                "%s %.1f s (guest CPU %.1f s, host CPU %.1f s)" % (what, r[-1]["seconds"], r[-1]["guest_cpu"], r[-1]["host_cpu"])
                for what, r in results.items()), os.getloadavg()[0]))
    finally:
        before.close()
        shutil.rmtree(workdir, ignore_errors=True)
    times = {what: [r["seconds"] for r in rs] for what, rs in results.items()}

    med = {what: statistics.median(values) for what, values in times.items()}
    overhead = med["up"] - med["baseline"]
    print("\nmedians of %d runs (each run: %s)" % (args.runs, "; ".join(
        "%s %s" % (what, "/".join("%.1f" % x for x in values)) for what, values in times.items())))
    print("  up, one VM          %6.1f s" % med["up"])
    print("  baseline script     %6.1f s" % med["baseline"])
    print("  overhead of up      %6.1f s   target <= %.0f s  %s   (per run: %s)" % (
        overhead, TARGET_OVERHEAD, "MET" if overhead <= TARGET_OVERHEAD else "NOT MET",
        "/".join("%.1f" % (u - b) for u, b in zip(times["up"], times["baseline"]))))
    if args.before:
        old_overhead = med["up (%s)" % args.before] - med["baseline"]
        print("  overhead of up at %s %6.1f s   (this checkout: %.1f s; %s)" % (
            args.before, old_overhead, overhead, "did not grow" if overhead <= old_overhead + 0.5 else "GREW"))
    print("  up, two VMs         %6.1f s   %.2fx one VM (2.00x = no parallelism; %d CPUs shared by both guests)"
          % (med["up x2"], med["up x2"] / med["up"], os.cpu_count()))
    print("  CPU seconds (median): %s" % "; ".join("%s guest %.1f host %.1f" % (
        what, statistics.median(r["guest_cpu"] for r in rs), statistics.median(r["host_cpu"] for r in rs))
        for what, rs in results.items()))

    ups = [phases_of_up(r) for r in results["up"]]
    bases = [{"prepare": p["prepared"], "boot": p["ready"] - p["prepared"], "provision": p["provisioned"] - p["ready"],
              "ansible": 0.0} for p in (r["phases"] for r in results["baseline"])]
    print("\nphase by phase, one VM (median s)        up  baseline")
    for key, label in (("prepare", "keys, overlay, seed ISO (up: Create task)"),
                       ("boot", "QEMU start until SSH + cloud-init done"),
                       ("provision", "shell step + file upload"),
                       ("ansible", "ansible-playbook itself (other tasks)")):
        print("  %-38s %6.1f  %6.1f" % (label, statistics.median(u[key] for u in ups), statistics.median(b[key] for b in bases)))
    print("\nup's tasks (one VM, run 1, %.1f s):" % times["up"][0])
    for label, seconds in task_breakdown(times["up"][0], results["up"][0]["report"]):
        print("  %6.1f s  %s" % (seconds, label))
    print("\nload average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
