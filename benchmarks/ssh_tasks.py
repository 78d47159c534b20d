"""Benchmark: vmctl.core.vm_ssh beside ansible.builtin.ssh (ControlPersist + pipelining) and OpenSSH scp.

Run on demand (not a test):  . scripts/env.sh && python benchmarks/ssh_tasks.py [--rounds 3] [--guest [--guest-rounds 1]] [--user NAME]

Against a real OpenSSH sshd on loopback always, and against the real Debian test guest (booted here
under VMCTL_ACCEL, default tcg) with ``--guest``. For each target, alternating the two connection
plugins in every round:

(a) 50 trivial ``ansible.builtin.command: "true"`` tasks on one host, wall time of ansible-playbook:
    vm_ssh (shared session daemon) beside ssh (ControlMaster=auto, ControlPersist=60s, pipelining, no -C).
    "warm": the daemon / the ssh master already run; "cold": stopped before the run.
    Target: vm_ssh <= 1.0x ssh's wall time.
(b) a 100 MB ``ansible.builtin.copy`` (random data, destination removed before each run), timed as a
    task inside a playbook (after a warm-up task, so neither ansible's start-up nor the login is in
    it): throughput of the task with vm_ssh and with ssh, of vm_ssh's put_file alone (the engine's
    SFTP upload through the session daemon), and of ``scp`` of the same file (a new OpenSSH
    connection each time). Target: vm_ssh copy >= 0.8x scp's throughput.
    The copy task also checksums the file on both sides and moves it into place; that is Ansible's
    work, the same for both plugins.

On loopback the login user is a dedicated system user with /bin/sh (created if missing; ``--user root``
to use root): root's shell start-up on this machine (pyenv in .bashrc) costs ~0.25 s per command and
would drown the connection's own cost. Figures are medians over the rounds; the load average is printed
because the machine is shared.
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
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))

from support.sshd_server import LoopbackSshd  # noqa: E402

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import client as ssh_mux  # noqa: E402
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import resolve_target  # noqa: E402

MB = 1 << 20
BENCH_USER = "vmctlbench"
TASKS = 50


def ensure_user(name):
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        print("creating system user %s (shell /bin/sh) for the loopback sshd" % name)
        subprocess.run(["useradd", "--system", "--shell", "/bin/sh", "--home-dir", "/nonexistent", "--no-create-home", name],
                       check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)  # not locked ("!"), no password


class Target:
    """One machine to benchmark: its vm_ssh host, its ssh host, and how to scp to it."""

    def __init__(self, label, workdir, vm_name, host, port, user, key, known_hosts, python, env):
        self.label = label
        self.workdir = workdir
        self.vm_name = vm_name
        self.host, self.port, self.user, self.key, self.known_hosts = host, port, user, key, known_hosts
        self.env = env
        self.control_dir = tempfile.mkdtemp(prefix="vmcpb-", dir="/tmp")
        self.ssh_control = tempfile.mkdtemp(prefix="sshcp-", dir="/tmp")
        self.remote_dir = "/tmp/vmctl-bench-%s" % label
        # the VM through the vms inventory (the usual way), the same machine through ssh in an ini file
        self.vms_inventory = os.path.join(workdir, "bench-%s.vmctl.yml" % label)
        self.ssh_inventory = os.path.join(workdir, "bench-%s.ini" % label)
        ssh_args = "-o ControlMaster=auto -o ControlPersist=60s -o ControlPath=%s/%%C" % self.ssh_control
        with open(self.vms_inventory, "w") as f:
            f.write("plugin: vmctl.core.vms\ncompose:\n  ansible_python_interpreter: \"'%s'\"\n"
                    "  ansible_remote_tmp: \"'%s/tmp'\"\n  ansible_pipelining: true\n" % (python, self.remote_dir))
        with open(self.ssh_inventory, "w") as f:
            f.write("ssh ansible_connection=ansible.builtin.ssh ansible_host=%s ansible_port=%d ansible_user=%s "
                    "ansible_ssh_private_key_file=%s ansible_ssh_args='%s' "
                    "ansible_ssh_common_args='-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes' "
                    "ansible_python_interpreter=%s ansible_remote_tmp=%s/tmp ansible_pipelining=true\n"
                    % (host, port, user, key, ssh_args, known_hosts, python, self.remote_dir))
        self.hosts = {"vm_ssh": vm_name, "ssh": "ssh"}
        self.run_env = dict(os.environ, ANSIBLE_VMCTL_CONTROL_PATH_DIR=self.control_dir, ANSIBLE_HOST_KEY_CHECKING="True",
                            ANSIBLE_STDOUT_CALLBACK="task_seconds", ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
                            ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_RETRY_FILES_ENABLED="0", **env)

    def playbook(self, plugin, path, timeout=1800):
        """Run ``path`` on the host of ``plugin``: (wall seconds, {task: seconds})."""
        argv = ["ansible-playbook", "-i", self.vms_inventory, "-i", self.ssh_inventory, "-l", self.hosts[plugin], path]
        begin = time.monotonic()
        proc = subprocess.run(argv, env=self.run_env, capture_output=True, text=True, timeout=timeout, check=False)
        seconds = time.monotonic() - begin
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = {"failures": ["no report"], "seconds": {}}
        if proc.returncode != 0 or report["failures"]:
            raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(argv), proc.stdout[-3000:], proc.stderr[-3000:]))
        return seconds, report["seconds"]

    def client(self):
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return ssh_mux.MuxClient(resolve_target(self.vm_name)[0], control_dir=self.control_dir)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop_sessions(self):
        self.client().stop()
        subprocess.run(["ssh", "-o", "ControlPath=%s/%%C" % self.ssh_control, "-O", "exit", "-p", str(self.port),
                        "%s@%s" % (self.user, self.host)], capture_output=True, check=False)

    def cleanup(self):
        self.stop_sessions()
        shutil.rmtree(self.control_dir, ignore_errors=True)
        shutil.rmtree(self.ssh_control, ignore_errors=True)


def write_playbooks(workdir, source):
    """(a) 50 trivial tasks after nothing; (b) warm-up, prepare, then the 100 MB copy (timed on its own)."""
    fifty = os.path.join(workdir, "fifty.yml")
    with open(fifty, "w") as f:
        f.write("- hosts: all\n  gather_facts: false\n  tasks:\n")
        for i in range(TASKS):
            f.write("    - name: t%d\n      ansible.builtin.command: \"true\"\n" % i)
    copy = os.path.join(workdir, "copy.yml")
    with open(copy, "w") as f:
        f.write("""- hosts: all
  gather_facts: false
  tasks:
    - name: prepare
      ansible.builtin.shell: mkdir -p {{ ansible_remote_tmp }} && rm -f {{ ansible_remote_tmp }}/../dest.bin
    - name: copy
      ansible.builtin.copy:
        src: %s
        dest: "{{ ansible_remote_tmp }}/../dest.bin"
""" % source)
    return fifty, copy


def bench_tasks(target, playbook, rounds):
    """(a): {plugin: {"warm": [s], "cold": [s]}}"""
    results = {"vm_ssh": {"warm": [], "cold": []}, "ssh": {"warm": [], "cold": []}}
    for _round in range(rounds):
        for plugin in ("vm_ssh", "ssh"):
            target.stop_sessions()
            results[plugin]["cold"].append(target.playbook(plugin, playbook)[0])
            results[plugin]["warm"].append(target.playbook(plugin, playbook)[0])
    return results


def bench_copy(target, source, playbook, rounds):
    """(b): {name: [MB/s]}"""
    size = os.path.getsize(source) / MB
    results = {"vm_ssh copy task": [], "ssh copy task": [], "vm_ssh put_file (engine)": [], "scp": [],
               "scp over ssh's master": []}
    client = target.client()
    for _round in range(rounds):
        for plugin in ("vm_ssh", "ssh"):
            results["%s copy task" % plugin].append(size / target.playbook(plugin, playbook)[1]["copy"])
        begin = time.monotonic()
        client.put(source, target.remote_dir + "/put.bin")
        results["vm_ssh put_file (engine)"].append(size / (time.monotonic() - begin))
        begin = time.monotonic()
        subprocess.run(["scp", "-q", "-o", "UserKnownHostsFile=%s" % target.known_hosts, "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-i", target.key, "-P", str(target.port), source,
                        "%s@%s:%s/scp.bin" % (target.user, target.host, target.remote_dir)], check=True)
        results["scp"].append(size / (time.monotonic() - begin))
        begin = time.monotonic()  # the transfer alone: no new connection (ansible's ssh master is up)
        subprocess.run(["scp", "-q", "-o", "ControlPath=%s/%%C" % target.ssh_control, "-o", "ControlMaster=no",
                        "-o", "UserKnownHostsFile=%s" % target.known_hosts, "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-i", target.key, "-P", str(target.port), source,
                        "%s@%s:%s/scp.bin" % (target.user, target.host, target.remote_dir)], check=True)
        results["scp over ssh's master"].append(size / (time.monotonic() - begin))
    client.exec_command("rm -rf %s" % target.remote_dir).wait()
    return results


def report(label, tasks, copy):
    med = statistics.median
    print("\n== %s ==" % label)
    print("(a) %d trivial command tasks, wall time of ansible-playbook (median):" % TASKS)
    for kind in ("warm", "cold"):
        vm, ssh = med(tasks["vm_ssh"][kind]), med(tasks["ssh"][kind])
        print("    %-4s  vm_ssh %6.2f s   ssh %6.2f s   ratio %.2fx   target <= 1.00x  %s"
              % (kind, vm, ssh, vm / ssh, "MET" if vm <= ssh else "NOT MET"))
    print("    all runs: vm_ssh warm %s cold %s | ssh warm %s cold %s" % tuple(
        ["/".join("%.2f" % x for x in tasks[p][k]) for p in ("vm_ssh", "ssh") for k in ("warm", "cold")]))
    print("(b) 100 MB copy, throughput (median MB/s):")
    scp = med(copy["scp"])
    for name in ("vm_ssh copy task", "ssh copy task", "vm_ssh put_file (engine)", "scp", "scp over ssh's master"):
        value = med(copy[name])
        extra = ""
        if name.startswith("vm_ssh"):
            extra = "   %.2fx scp   target >= 0.80x  %s" % (value / scp, "MET" if value >= 0.8 * scp else "NOT MET")
        print("    %-26s %7.1f MB/s%s   (runs: %s)" % (name, value, extra, "/".join("%.0f" % x for x in copy[name])))


def loopback_target(workdir, user):
    if user != "root":
        ensure_user(user)
    sshd = LoopbackSshd(os.path.join(workdir, "sshd"), user=user).start()
    for path in (workdir, sshd.dir):  # sshd reads authorized_keys as the user
        os.chmod(path, 0o755)
    os.chmod(sshd.authorized_keys, 0o644)
    xdg = os.path.join(workdir, "xdg")
    os.environ["XDG_DATA_HOME"] = xdg
    sshd.store_vm("benchvm", os.path.join(workdir, "vm"))
    target = Target("loopback", workdir, "benchvm", "127.0.0.1", sshd.port, user, sshd.user_key,
                    os.path.join(workdir, "vm", "known_hosts"), "/usr/bin/python3", {"XDG_DATA_HOME": xdg})
    return sshd, target


def guest_target(workdir):
    from guests import debian_spec
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import wait_until_ready
    os.environ.setdefault("VMCTL_ACCEL", "tcg")
    manifest = os.environ.get("VMCTL_TEST_IMAGES") or subprocess.run(
        [os.path.join(HERE, "..", "scripts", "build-test-image")], capture_output=True, text=True, check=True).stdout.split()[-1]
    with open(manifest) as f:
        images = json.load(f)
    xdg = os.path.join(workdir, "guest-xdg")
    os.environ["XDG_DATA_HOME"] = xdg
    manager = VmManager()
    manager.create(debian_spec(images, name="benchguest", hostname="bench-guest", vcpus=2, memory_mb=1024))
    begin = time.monotonic()
    handle, _before = manager.start("benchguest")
    wait_until_ready(handle, deadline=600)
    print("guest up (SSH + cloud-init) after %.0f s under %s" % (time.monotonic() - begin, os.environ["VMCTL_ACCEL"]))
    target = Target("guest", workdir, "benchguest", "127.0.0.1", handle.ssh_host_port, handle.ssh_user, handle.private_key_path,
                    handle.known_hosts, "/usr/bin/python3", {"XDG_DATA_HOME": xdg})
    return manager, target


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds on loopback (default %(default)s)")
    parser.add_argument("--guest-rounds", type=int, default=1, help="rounds on the guest (default %(default)s; TCG is slow)")
    parser.add_argument("--guest", action="store_true", help="also against the real Debian guest (boots one)")
    parser.add_argument("--user", default=BENCH_USER, help="login user on the loopback sshd (default %(default)s)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # figures appear as they are measured, also in a log file
    workdir = tempfile.mkdtemp(prefix="vmctl-bench-")
    source = os.path.join(workdir, "100mb.bin")
    with open(source, "wb") as f:
        for _chunk in range(100):
            f.write(os.urandom(MB))
    fifty, copy = write_playbooks(workdir, source)
    print("load average before: %.2f %.2f %.2f (%d CPUs)" % (os.getloadavg() + (os.cpu_count(),)))
    sshd, target = loopback_target(workdir, args.user)
    try:
        report("loopback sshd (user %s)" % args.user, bench_tasks(target, fifty, args.rounds),
               bench_copy(target, source, copy, args.rounds))
    finally:
        target.cleanup()
        sshd.stop()
    if args.guest:
        manager, target = guest_target(workdir)
        try:
            report("Debian guest under %s" % os.environ["VMCTL_ACCEL"], bench_tasks(target, fifty, args.guest_rounds),
                   bench_copy(target, source, copy, args.guest_rounds))
        finally:
            target.cleanup()
            manager.destroy("benchguest")
    print("\nload average after: %.2f %.2f %.2f" % os.getloadavg())
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
