"""The first try works: the guide's own VMFiles come up, a stalled guest fails as stalled (not after a
fixed timeout), progress shows while `up` waits, and `up` converges after a failed step.

The tiny guest (busybox, no sshd) is the stuck guest: QEMU's forward accepts TCP, nothing ever speaks
SSH, and the console goes quiet after boot. The Debian part brings up, at once and with the default
limits, three 1-vCPU VMs of one VMFile on the 2-core machine: the guide's declarative Quick Start
(`image-url` served by the tests' nginx, no provision blocks), a VM whose first step fails on the first
`up` and passes on the second, and the guide's `minimal` (no cloud-init, no ssh).
"""

import json
import os
import re
import signal
import subprocess

import pytest
from support.ansible_run import _env
from test_cli import VMCTL, ok
from support.vm_ssh_helpers import new_control_dir, remove_control_dir

pytestmark = [pytest.mark.slow]


def run_playbook(cwd, playbook, *extra, env=None, timeout=1800):
    """``ansible-playbook vmctl.core.<playbook>`` with the default callback; returns (rc, output)."""
    proc = subprocess.run(["ansible-playbook", "vmctl.core." + playbook] + list(extra), cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=_env(dict(env or {}, ANSIBLE_STDOUT_CALLBACK="default")))
    return proc.returncode, proc.stdout + proc.stderr


STUCK_PLAY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Create a guest that never runs sshd
      vmctl.core.vm:
        name: stuck
        image: "{disk}"
        memory: 256
        kernel: "{kernel}"
        initrd: "{initrd}"
        kernel_append: console=ttyS0
        vnc: false
        cloud_init: {{}}
        ssh: {{user: vm}}
    - name: Start it and wait for SSH
      vmctl.core.vm_state:
        name: stuck
        state: running
        stall_timeout: 20
"""


def test_a_stuck_guest_fails_as_stalled_with_progress_lines(test_images, tmp_path):
    """Bad input: a guest that never answers SSH. It gets: progress lines while the wait runs, then a
    failure after the 20 s stall window (the default deadline is 600 s), naming the stall window, the
    setting to raise and the console's last lines."""
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    play = tmp_path / "stuck.yml"
    tiny = test_images["tiny"]
    play.write_text(STUCK_PLAY.format(disk=disk, kernel=tiny["kernel"], initrd=tiny["initrd"]))
    proc = subprocess.run(["ansible-playbook", str(play)], capture_output=True, text=True, timeout=600, check=False,
                          env=_env({"ANSIBLE_STDOUT_CALLBACK": "default"}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    progress = re.findall(r"^stuck: waiting for SSH, (\d+) s(, console: .*)?$", out, re.M)
    assert len(progress) >= 2, out  # about every 10 s, shown while the task runs
    assert "stalled: no sign of progress for 20 s (the stall window)" in out, out
    assert "stall_timeout" in out and "last console lines" in out, out
    waited = re.search(r"after (\d+) s waiting for SSH", out)
    assert waited and int(waited.group(1)) < 300, out  # stalled, long before the 600 s deadline


QUICKSTART = """\
// The guide's declarative Quick Start (image-url served by the tests' nginx; 1 vCPU, 768 MB here)
vm "demo" {
    image-url "%(url)s"
    vcpus 1
    memory 768

    cloud-init {
        hostname "demo"
    }

    ssh {
        user "ubuntu"
    }
}

// Its first step fails on the first up and passes on the second
vm "flaky" {
    image-url "%(url)s"
    vcpus 1
    memory 768

    cloud-init {
        hostname "flaky"
    }

    ssh {
        user "builder"
    }

    provision "shell" {
        inline "test -e /var/tmp/tried || { touch /var/tmp/tried; echo first try fails; exit 3; }"
    }

    provision "shell" {
        inline "echo run >> /var/tmp/provision-runs"
    }
}

// The guide's minimal VM: just an image and defaults (1 vCPU, 1 GB)
vm "minimal" {
    image-url "%(url)s"
}
"""


@pytest.mark.guest
def test_the_guide_vmfiles_come_up_and_up_converges(test_images, http_files, tmp_path):
    """Three 1-vCPU VMs at once with the default limits; a failed step makes the first up fail (the
    summary says the VM is unprovisioned), the second up provisions it without `provision`, the third
    changes nothing, and a changed plan is a warning, not a silent re-run."""
    http_files.put("debian-12.qcow2", test_images["debian"]["path"])
    url = http_files.url("debian-12.qcow2")
    project = tmp_path / "project"
    project.mkdir()
    (project / "VMFile.kdl").write_text(QUICKSTART % {"url": url})
    control = new_control_dir()
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control}
    try:
        rc, out = run_playbook(project, "up", env=env)
        assert rc != 0, out
        assert "flaky: FAILED" in out and "left unprovisioned" in out, out
        assert re.search(r"demo: ok", out) and re.search(r"minimal: ok", out), out
        assert re.search(r"(demo|flaky): waiting for (SSH|cloud-init), \d+ s", out), out  # progress while waiting
        status = ok("status", "flaky", env=env).stdout
        assert "Provisioned:" in status and "did not complete" in status, status

        rc, out = run_playbook(project, "up", env=env)
        assert rc == 0, out
        assert "[flaky] run" not in out  # the inline step prints nothing; the marker file is checked below
        runs = ok("ssh", "flaky", "--", "cat", "/var/tmp/provision-runs", env=env).stdout
        assert runs.split() == ["run"], runs
        assert json.loads(ok("status", "flaky", "--json", env=env).stdout)["provision"]["completed"] is True

        rc, out = run_playbook(project, "up", env=env)
        assert rc == 0, out
        assert re.search(r"changed=0 ", out) and not re.search(r"changed=[1-9]", out), out
        assert ok("ssh", "demo", "--", "hostname", env=env).stdout.strip() == "demo"

        vmfile = project / "VMFile.kdl"
        vmfile.write_text(vmfile.read_text().replace("echo run >>", "echo run2 >>"))
        rc, out = run_playbook(project, "up", env=env)
        assert rc == 0, out
        assert "VM flaky: its provision steps changed since they last completed" in out, out
        assert ok("ssh", "flaky", "--", "cat", "/var/tmp/provision-runs", env=env).stdout.split() == ["run"]
    finally:
        proc = subprocess.run([VMCTL, "down", "--destroy"], cwd=str(project), capture_output=True, text=True,
                              env=dict(os.environ, **env), timeout=600, check=False)
        remove_control_dir(control)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(ok("list", "--json", env=env).stdout) == []


INTERRUPTED = """\
vm "slowstep" {
    image "%(image)s"
    vcpus 1
    memory 768
    cloud-init { }
    ssh { user "builder"; }
    provision "shell" {
        inline "echo step-started; sleep 25; echo run >> /var/tmp/provision-runs"
    }
}
"""


def interrupt_when(cwd, env, pattern, timeout=1200):
    """Run ``ansible-playbook vmctl.core.up`` and send it SIGINT (Ctrl-C) once a line matches ``pattern``."""
    proc = subprocess.Popen(["ansible-playbook", "vmctl.core.up"], cwd=str(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(dict(env, ANSIBLE_STDOUT_CALLBACK="default")))
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(pattern, line, re.M):
                proc.send_signal(signal.SIGINT)
                break
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            # once in several CI runs ansible-playbook did not exit after one SIGINT in the readiness wait (cause
            # not found yet); a user presses Ctrl-C again, and the next up must converge all the same
            proc.send_signal(signal.SIGINT)
            rest = proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + (rest or "")
    assert re.search(pattern, out, re.M), out  # it got that far before the Ctrl-C
    return proc.returncode, out


@pytest.mark.guest
def test_up_converges_after_a_ctrl_c_mid_boot_and_mid_step(test_images, tmp_path):
    """Bad input: Ctrl-C during the readiness wait, then during a provision step. It gets: each next
    `up` carries on (waits, runs the plan that never completed) and the last changes nothing."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "VMFile.kdl").write_text(INTERRUPTED % {"image": test_images["debian"]["path"]})
    control = new_control_dir()
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "ANSIBLE_VMCTL_CONTROL_PATH_DIR": control}
    try:
        rc, out = interrupt_when(project, env, r"^slowstep: waiting for ")
        assert rc != 0, out
        assert json.loads(ok("status", "slowstep", "--json", env=env).stdout)["state"] == "running"

        rc, out = interrupt_when(project, env, r"\[slowstep\] step-started")
        assert rc != 0, out
        record = json.loads(ok("status", "slowstep", "--json", env=env).stdout)["provision"]
        assert record["completed"] is False, record

        rc, out = run_playbook(project, "up", env=env)
        assert rc == 0 and "[slowstep] step-started" in out, out
        # the interrupted step's command may have finished on the guest after the Ctrl-C (a command without a
        # terminal is not hung up on when its SSH channel closes): one or two runs, and the plan completed
        runs = ok("ssh", "slowstep", "--", "cat", "/var/tmp/provision-runs", env=env).stdout.split()
        assert runs in (["run"], ["run", "run"]), runs
        assert json.loads(ok("status", "slowstep", "--json", env=env).stdout)["provision"]["completed"] is True

        rc, out = run_playbook(project, "up", env=env)
        assert rc == 0 and "step-started" not in out and not re.search(r"changed=[1-9]", out), out
    finally:
        subprocess.run([VMCTL, "down", "--destroy"], cwd=str(project), capture_output=True, text=True,
                       env=dict(os.environ, **env), timeout=600, check=False)
        remove_control_dir(control)


def test_a_slow_download_shows_progress_lines(http_files, tmp_path):
    """A 12 MiB image from the tests' nginx throttled to 2 MB/s: vm_image prints its share, size and rate
    about every 5 s while the task runs (default verbosity), and the task still reports the download."""
    http_files.put("slow.img", os.urandom(12 * 1024 * 1024))
    url = http_files.url("slow.img", location="throttled")
    play = tmp_path / "pull.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - name: Pull\n      vmctl.core.vm_image:\n        url: %s\n      register: pulled\n"
                    "    - name: Check\n      ansible.builtin.assert:\n        that: pulled.downloaded\n" % url)
    proc = subprocess.run(["ansible-playbook", str(play)], capture_output=True, text=True, timeout=600, check=False,
                          env=_env({"ANSIBLE_STDOUT_CALLBACK": "default", "XDG_DATA_HOME": str(tmp_path / "data")}))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = re.findall(r"^downloading %s: (\d+)%% \(.* of 12\.0 MiB\) at .*/s$" % re.escape(url), out, re.M)
    assert len(lines) >= 1, out
    assert lines[-1] == "100", out  # and the last one when the body is complete
