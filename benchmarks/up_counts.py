"""Benchmark: what one ``ansible-playbook vmctl.core.up`` of one VM costs in store reads, QMP commands and SSH
handshakes, on this checkout and on an earlier revision of it, measured in the same run.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/up_counts.py [--before REV]

Both trees bring up the same VMFile (the Debian test image, 1 vCPU, cloud-init, one inline shell step
and one file upload) from nothing (a fresh XDG_DATA_HOME and session-daemon directory), then it is
destroyed. Counting is done from outside the code under test: a ``sitecustomize`` put first on
PYTHONPATH wraps, in every Python process of the run (ansible-playbook, its modules, the vm_ssh session
daemon), the store's file read (``VmStore._read``), the QMP command call (``QmpClient.execute``) and
the SSH handshake (``SshSession._connect_once``), and appends one line per call to a counts file.

REV defaults to the last commit before the layout of issue 13 (8e2872f). Prints both, side by side.
"""

import argparse
import collections
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from revision import BEFORE_LAYOUT, ROOT, collections_for, revision


SITECUSTOMIZE = r'''
import importlib.abc, importlib.util, json, os, sys, threading
_OUT = os.environ.get("VMCTL_COUNT_FILE")
_PATCH = {  # module name ending -> (class, method, what)
    ".module_utils.store": ("VmStore", "_read", "store read"),
    ".module_utils.qmp": ("QmpClient", "execute", "qmp"),
    ".backends.qemu.qmp": ("QmpClient", "execute", "qmp"),
    ".module_utils.ssh_session": ("SshSession", "_connect_once", "ssh handshake"),
    ".ssh.session": ("SshSession", "_connect_once", "ssh handshake"),
    ".ssh.readiness": ("ReadinessWait", "_cloud_init", "cloud-init wait"),
    ".module_utils.readiness": ("ReadinessWait", "_cloud_init", "cloud-init wait"),
}
_lock = threading.Lock()

def _note(what, detail=""):
    with _lock, open(_OUT, "a") as f:
        f.write(json.dumps({"what": what, "detail": detail, "pid": os.getpid(), "argv0": os.path.basename(sys.argv[0])}) + "\n")

def _wrap(cls, method, what):
    original = getattr(cls, method)
    raw = original.__func__ if isinstance(cls.__dict__.get(method), classmethod) else original
    def counted(*args, **kwargs):
        detail = ""
        if what == "qmp":
            detail = args[1] if len(args) > 1 else kwargs.get("command", "")
        try:
            result = raw(*args, **kwargs)
        except BaseException:
            _note(what, (detail + " failed").strip())
            raise
        _note(what, "ended by the session dropping" if what == "cloud-init wait" and result is False else detail)
        return result
    setattr(cls, method, classmethod(counted) if isinstance(cls.__dict__.get(method), classmethod) else counted)

class _Patching(importlib.abc.Loader):
    def __init__(self, loader, cls, method, what):
        self.loader, self.cls, self.method, self.what = loader, cls, method, what

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _wrap(getattr(module, self.cls), self.method, self.what)

    def __getattr__(self, name):
        return getattr(self.loader, name)

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        for suffix, (cls, method, what) in _PATCH.items():
            if name.endswith(suffix) and name.startswith("ansible_collections.vmctl.core."):
                sys.meta_path.remove(self)
                try:
                    spec = importlib.util.find_spec(name)
                finally:
                    sys.meta_path.insert(0, self)
                if spec is None or spec.loader is None:
                    return None
                spec.loader = _Patching(spec.loader, cls, method, what)  # loaders can be shared (zipimport)
                return spec
        return None

if _OUT:
    sys.meta_path.insert(0, _Finder())
'''


def vmfile(image, upload):
    return textwrap.dedent("""\
        vm "counted" {
            image %s
            vcpus 1
            memory 1024
            cloud-init {
                hostname "counted"
            }
            ssh {
                user "vm"
            }
            provision "shell" {
                inline "echo hello from $(hostname)"
            }
            provision "file" {
                source %s
                destination "/tmp/greeting.txt"
            }
        }
        """) % (json.dumps(image), json.dumps(upload))


def run_up(collections, image, label):
    work = tempfile.mkdtemp(prefix="vmctl-bench-counts-")
    try:
        collections_dir = collections or collections_for(ROOT, work)
        site = os.path.join(work, "site")
        os.makedirs(site)
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        counts = os.path.join(work, "counts.jsonl")
        upload = os.path.join(work, "greeting.txt")
        with open(upload, "w") as f:
            f.write("hello\n")
        path = os.path.join(work, "VMFile.kdl")
        with open(path, "w") as f:
            f.write(vmfile(image, upload))
        env = dict(os.environ, XDG_DATA_HOME=os.path.join(work, "data"), VMCTL_COUNT_FILE=counts,
                   ANSIBLE_COLLECTIONS_PATH=collections_dir,
                   ANSIBLE_VMCTL_CONTROL_PATH_DIR=os.path.join(work, "cp"),
                   PYTHONPATH=site + os.pathsep + collections_dir)
        up = subprocess.run(["ansible-playbook", "vmctl.core.up", "-e", "vmfile=" + path, "-e", "ssh_timeout=900"],
                            env=env, capture_output=True, text=True, check=False)
        with open(counts) if os.path.exists(counts) else open(os.devnull) as f:
            calls = [json.loads(line) for line in f]
        env.pop("VMCTL_COUNT_FILE")
        subprocess.run(["ansible-playbook", "vmctl.core.down", "-e", "vmfile=" + path, "-e", "destroy=true"],
                       env=env, capture_output=True, text=True, check=False)
        if os.environ.get("VMCTL_COUNTS_SHOW_LOGS"):
            for log in sorted(glob.glob(os.path.join(work, "cp", "*.log"))):
                print("== %s\n%s" % (log, open(log).read()))
        subprocess.run(["pkill", "-f", os.path.join(work, "cp")], check=False)
        if up.returncode != 0:
            print("%s: up failed (%d):\n%s" % (label, up.returncode, up.stdout[-3000:] + up.stderr[-2000:]))
            sys.exit(1)
        return calls
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summary(calls):
    """Counts by kind; failed calls (a login refused while the guest boots) apart; and who made them."""
    out = collections.Counter()
    for call in calls:
        failed = call["detail"].endswith("failed")
        if call["detail"].startswith("ended by"):
            out[call["what"] + " " + call["detail"]] += 1
        what = call["what"] + (" (failed attempt)" if failed else "")
        out[what] += 1
        if call["what"] == "qmp" and not failed:
            out["  qmp " + call["detail"]] += 1
        out["  by %s: %s" % (call["argv0"] or "daemon", what)] += 1
    out["session daemons that logged in"] = len({c["pid"] for c in calls if c["argv0"] == "-c" and c["what"] == "ssh handshake"
                                                 and not c["detail"].endswith("failed")})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--before", default=BEFORE_LAYOUT, help="the revision to compare with (default %(default)s)")
    args = parser.parse_args()
    manifest = subprocess.run([os.path.join(ROOT, "scripts", "build-test-image")], capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]
    image = json.load(open(manifest))["debian"]["path"] if manifest.endswith(".json") else None
    after = summary(run_up(None, image, "this checkout"))
    with revision(args.before) as collections:
        before = summary(run_up(collections, image, args.before))
    print("one `up` of one VM (with 2 provision steps), calls counted in every process of the run")
    print("%-52s %12s %14s" % ("", "before (%s)" % args.before, "this checkout"))
    for key in sorted(set(before) | set(after), key=lambda k: (k.startswith("  by "), k.startswith("  "), k)):
        print("%-52s %12d %14d" % (key, before.get(key, 0), after.get(key, 0)))


if __name__ == "__main__":
    main()
