"""``ansible-playbook vmctl.core.up / down / reload / provision`` on real Debian guests (TCG).

The tests of the first part run in file order on one VM ("web") and one data directory, as a user
would: up, up again, down, provision (refused), up, provision, reload, down --destroy. The second
part brings up a two-VM VMFile whose second VM has a failing step. Checks inside the guest go over
the engine's own SSH session (pinned host key).
"""

import io
import json
import os
import re
import select
import subprocess
import tarfile
import time

import pytest
from support.ansible_run import _env
from support.guests import alive
from support.vm_ssh_helpers import CALLBACKS, new_control_dir, remove_control_dir

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = [pytest.mark.slow, pytest.mark.guest]

SSH_TIMEOUT = "600"  # boots under TCG on a loaded 2-core machine; the default of 120 s is for people

WEB_VMFILE = """\
vm "web" {
    image "%(image)s"
    vcpus 1
    memory 768

    cloud-init {
        hostname "web"
    }

    ssh {
        user "builder"
    }

    // Stage 1: system setup (the sleep shows that output streams while the step runs)
    provision "shell" {
        inline "echo stage-1 on $(hostname); sleep 3; echo stage-1 done; sudo mkdir -p /opt/app"
    }

    // Stage 2: upload the source
    provision "file" {
        source "src/app.tar.gz"
        destination "/tmp/app.tar.gz"
    }

    // Stage 3: build
    provision "shell" {
        script "scripts/build.sh"
    }
}
"""

BUILD_SH = """\
#!/bin/sh
set -eu
cd /tmp && tar xzf app.tar.gz
sudo cp app/hello.txt /opt/app/hello.txt
echo run >> /var/tmp/provision-runs
echo "built $(cat /opt/app/hello.txt)"
"""

HELLO = "hello from the file provisioner\n"


def write_project(root, vmfile_text, image):
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "scripts"), exist_ok=True)
    with tarfile.open(os.path.join(root, "src", "app.tar.gz"), "w:gz") as tar:
        data = HELLO.encode()
        info = tarfile.TarInfo("app/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with open(os.path.join(root, "scripts", "build.sh"), "w") as f:
        f.write(BUILD_SH)
    with open(os.path.join(root, "VMFile.kdl"), "w") as f:
        f.write(vmfile_text % {"image": image})
    return root


class Project:
    """A directory with a VMFile, its own vmctl data directory and vm_ssh control directory."""

    def __init__(self, root, vmfile_text, image):
        self.root = write_project(str(root), vmfile_text, image)
        self.home = os.path.join(self.root, "xdg-data")
        self.control = new_control_dir()
        self.env = {"XDG_DATA_HOME": self.home, "ANSIBLE_VMCTL_CONTROL_PATH_DIR": self.control,
                    "ANSIBLE_VMCTL_WAIT_TIMEOUT": SSH_TIMEOUT}

    def argv(self, playbook, extra):
        return ["ansible-playbook", "vmctl.core." + playbook, "-e", "ssh_timeout=" + SSH_TIMEOUT] + list(extra)

    def run(self, playbook, *extra):
        """Run with the json callback; returns (returncode, {task name: {host: result}}, raw stdout)."""
        env = dict(self.env, ANSIBLE_STDOUT_CALLBACK="json_results", ANSIBLE_CALLBACK_PLUGINS=CALLBACKS)
        proc = subprocess.run(self.argv(playbook, extra), cwd=self.root, capture_output=True, text=True,
                              env=_env(env), timeout=1800, check=False)
        try:
            data = json.loads(proc.stdout[proc.stdout.index('{"plays"'):])
        except ValueError as err:
            raise AssertionError("no json from %s:\n%s\n%s" % (playbook, proc.stdout, proc.stderr)) from err
        tasks = {}  # by the task's name as templated for each host, without the role's prefix
        for play in data["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    tasks.setdefault(result["_task"].split(" : ", 1)[-1], {})[host] = result
        return proc.returncode, tasks, proc.stdout + proc.stderr

    def run_streaming(self, playbook, *extra):
        """Run with the default callback; returns (returncode, [(seconds since start, line)])."""
        proc = subprocess.Popen(self.argv(playbook, extra), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=_env(dict(self.env, ANSIBLE_STDOUT_CALLBACK="default")))
        begin, lines, pending = time.monotonic(), [], b""
        while True:
            select.select([proc.stdout], [], [], 5)
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            now = time.monotonic() - begin
            *complete, pending = (pending + chunk).split(b"\n")
            lines.extend((now, line.decode("utf-8", "replace")) for line in complete)
        return proc.wait(timeout=60), lines

    def manager(self):
        os.environ["XDG_DATA_HOME"] = self.home  # the per-test fixture restores it afterwards
        return VmManager()

    def guest(self, name, command):
        """Run ``command`` on the VM over SSH; returns (exit status, stdout text)."""
        session = ssh.connect(self.manager().get(name))
        try:
            status, out, _err, _signal = session.run(command)
            return status, out.decode()
        finally:
            session.close()

    def provision_log(self, name):
        with open(os.path.join(self.manager().get(name).work_dir, "provision.log")) as f:
            return f.read()

    def cleanup(self):
        remove_control_dir(self.control)
        if os.path.exists(os.path.join(self.home, "vmctl", "vms.json")):
            manager = self.manager()
            for name in manager.list():
                manager.destroy(name)


def changed(tasks, host):
    """Names of the tasks that reported a change for ``host``."""
    return [name for name, hosts in tasks.items() if hosts.get(host, {}).get("changed")]


def host_task(tasks, host, pattern):
    """``host``'s result of the one task whose name matches ``pattern``. Under the free strategy, hosts that reach
    an included task together share it, and its name is templated with the first one's variables (beta's start
    can be shown as "Start alpha"), so a task is found by its host, not by its templated name."""
    found = [results[host] for name, results in tasks.items() if re.match(pattern, name) and host in results]
    assert len(found) == 1, (host, pattern, sorted(tasks))
    return found[0]


def summary(tasks):
    """The per-VM summary lines (``name: ok`` / ``name: FAILED - message``)."""
    return [result["msg"] for item in tasks["Summary"]["localhost"]["results"] for result in [item]]


@pytest.fixture(scope="module")
def web(test_images, tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("web-project"), WEB_VMFILE, test_images["debian"]["path"])
    yield project
    project.cleanup()


def test_up_creates_starts_and_runs_the_multi_stage_provisioners(web):
    rc, lines = web.run_streaming("up")
    text = "\n".join(line for _t, line in lines)
    assert rc == 0, text
    # stage 1's output streams while the step runs: its first line shows before the step's 3 s sleep ends
    first = next(t for t, line in lines if line == "[web] stage-1 on web")
    done = next(t for t, line in lines if line == "[web] stage-1 done")
    assert done - first >= 2.0, text
    assert "[web] built " + HELLO.strip() in text
    assert "web: ok" in text
    # the results, checked inside the guest
    assert web.guest("web", "cat /opt/app/hello.txt") == (0, HELLO)
    assert web.guest("web", "cat /var/tmp/provision-runs") == (0, "run\n")
    assert web.guest("web", "test -f /tmp/app.tar.gz && test -x /tmp/vmctl-provision-3.sh")[0] == 0
    log = web.provision_log("web")
    assert "web step 1/3 shell: echo stage-1" in log and "stage-1 done" in log
    assert "web step 2/3 file: %s/src/app.tar.gz -> /tmp/app.tar.gz" % web.root in log
    assert "web step 3/3 exit 0" in log


def test_a_second_up_is_a_no_op(web):
    pid = web.manager().get("web").pid
    rc, tasks, out = web.run("up")
    assert rc == 0, out
    assert changed(tasks, "web") == [] and changed(tasks, "localhost") == [], out
    assert web.manager().get("web").pid == pid
    assert web.guest("web", "cat /var/tmp/provision-runs")[1] == "run\n"


def test_down_stops_and_up_restarts_and_provisions_again(web):
    assert web.guest("web", "echo before-down > /var/tmp/marker")[0] == 0
    pid = web.manager().get("web").pid
    rc, tasks, out = web.run("down")
    assert rc == 0 and "Stop web" in changed(tasks, "web"), out
    assert web.manager().live_state("web") == "stopped" and not alive(pid)

    # provision explains what to do with a stopped VM
    rc, tasks, out = web.run("provision")
    assert rc != 0
    assert summary(tasks) == ["web: FAILED - web: it is stopped, not running; run vmctl.core.up to start it"], out

    rc, tasks, out = web.run("up")
    assert rc == 0, out
    assert web.manager().live_state("web") == "running"
    assert web.guest("web", "cat /var/tmp/marker") == (0, "before-down\n")  # same disk
    assert web.guest("web", "cat /var/tmp/provision-runs")[1] == "run\nrun\n"  # provisioned again

    # with no_provision, a stopped VM is started and its provisioners are left alone
    rc, tasks, out = web.run("down")
    assert rc == 0 and web.manager().live_state("web") == "stopped", out
    rc, tasks, out = web.run("up", "-e", "no_provision=true")
    assert rc == 0 and "Start web" in changed(tasks, "web"), out
    assert not [name for name in changed(tasks, "web") if name.startswith("Provision web")], out
    assert web.guest("web", "cat /var/tmp/provision-runs")[1] == "run\nrun\n"


def test_provision_runs_the_steps_again(web):
    rc, tasks, out = web.run("provision")
    assert rc == 0, out
    assert [name for name in changed(tasks, "web") if name.startswith("Provision web step")] == [
        "Provision web step 1: shell: echo stage-1 on $(hostname); sleep 3; echo stage-1 done; sudo mkdir -p /opt/app",
        "Provision web step 2: file: %s/src/app.tar.gz -> /tmp/app.tar.gz" % web.root,
        "Provision web step 3: shell script: %s/scripts/build.sh" % web.root]
    assert web.guest("web", "cat /var/tmp/provision-runs")[1] == "run\n" * 3


def test_reload_gives_a_fresh_disk(web):
    old_pid = web.manager().get("web").pid
    rc, _tasks, out = web.run("reload")
    assert rc == 0, out
    assert not alive(old_pid) and web.manager().live_state("web") == "running"
    assert web.guest("web", "test -e /var/tmp/marker")[0] == 1  # written before: gone with the old disk
    assert web.guest("web", "cat /var/tmp/provision-runs")[1] == "run\n"
    assert web.guest("web", "cat /opt/app/hello.txt") == (0, HELLO)


def test_down_destroy_removes_the_vm(web):
    handle = web.manager().get("web")
    rc, tasks, out = web.run("down", "-e", "destroy=true")
    assert rc == 0 and "Destroy web" in changed(tasks, "web"), out
    assert web.manager().list() == {} and not alive(handle.pid) and not os.path.exists(handle.work_dir)
    rc, tasks, out = web.run("down", "-e", "destroy=true")
    assert rc == 0 and changed(tasks, "web") == [], out


PAIR_VMFILE = """\
vm "alpha" {
    image "%(image)s"
    vcpus 1
    memory 768
    cloud-init { }
    ssh { user "builder"; }
    provision "shell" { inline "echo alpha was here | sudo tee /var/tmp/alpha; sleep 15"; }
}

vm "beta" {
    image "%(image)s"
    vcpus 1
    memory 768
    cloud-init { }
    ssh { user "builder"; }
    provision "shell" { inline "true"; }
    provision "shell" { inline "echo about to fail; exit 3"; }
    provision "shell" { inline "touch /var/tmp/never"; }
}
"""


@pytest.fixture
def pair(test_images, tmp_path):
    project = Project(tmp_path / "pair", PAIR_VMFILE, test_images["debian"]["path"])
    yield project
    project.cleanup()


def test_two_vms_come_up_in_parallel_and_a_failing_step_stops_only_its_vm(pair):
    rc, tasks, out = pair.run("up")
    assert rc != 0, out
    log_path = os.path.join(pair.manager().get("beta").work_dir, "provision.log")
    assert summary(tasks) == [
        "alpha: ok",
        "beta: FAILED - VM beta: provision step 2 (shell: echo about to fail; exit 3) failed with exit code 3; "
        "beta is left unprovisioned: the next vmctl.core.up runs its provision steps again "
        "(hint: Its output is in %s; fix the step and run vmctl.core.provision again)" % log_path], out
    # both VMs booted at the same time: their start-and-wait tasks overlap
    a, b = host_task(tasks, "alpha", r"Start \S+$"), host_task(tasks, "beta", r"Start \S+$")
    assert a["_started"] < b["_ended"] and b["_started"] < a["_ended"], (a, b)
    assert min(a["_ended"], b["_ended"]) - max(a["_started"], b["_started"]) > 10
    # and each VM is provisioned at its own pace: beta ran its steps 1 and 2 while alpha's slow step 1
    # was still running (with the linear strategy beta's step 2 would wait for alpha's step 1)
    a = host_task(tasks, "alpha", r"Provision \S+ step 1: ")
    b = host_task(tasks, "beta", r"Provision \S+ step 2: ")
    assert b["_ended"] < a["_ended"], (a, b)
    # alpha was provisioned; beta stopped at step 2 and its log holds the output
    assert pair.guest("alpha", "cat /var/tmp/alpha") == (0, "alpha was here\n")
    assert pair.guest("beta", "test -e /var/tmp/never")[0] == 1
    log = pair.provision_log("beta")  # the output of the failed step
    assert "beta step 2/3 shell: echo about to fail; exit 3\nabout to fail\n" in log and "beta step 2/3 exit 3" in log
    failed = host_task(tasks, "beta", r"Provision \S+ step 2: ")
    assert failed["log"] == log_path and failed["error"]["rc"] == 3 and failed["error"]["step"] == 2


def test_mistakes_are_explained_before_anything_starts(tmp_path, test_images):
    project = Project(tmp_path / "p", 'vm "nossh" {\n    image "%(image)s"\n    memry 512\n}\n', test_images["debian"]["path"])
    rc, tasks, out = project.run("up")
    assert rc != 0
    read = tasks["Read the VMFile"]["localhost"]
    assert read["problems"][0]["line"] == 3 and read["problems"][0]["col"] == 5, out
    assert "memory" in read["msg"], out  # did you mean
    assert not os.path.exists(os.path.join(project.home, "vmctl", "vms.json"))

    with open(os.path.join(project.root, "VMFile.kdl"), "w") as f:
        f.write('vm "nossh" {\n    image "%s"\n}\n' % test_images["debian"]["path"])
    rc, tasks, out = project.run("provision")
    assert rc != 0
    assert summary(tasks) == ["nossh: FAILED - nossh: it has no ssh block in %s/VMFile.kdl; add one (user, optional "
                              "private-key) to provision it" % project.root], out
    rc, tasks, out = project.run("down")  # nothing to stop
    assert rc == 0 and changed(tasks, "nossh") == [] and summary(tasks) == ["nossh: ok"], out
    rc, tasks, out = project.run("up", "-e", "name=other")
    assert rc != 0 and "other" in tasks["Read the VMFile"]["localhost"]["msg"], out


def test_an_ssh_wait_timeout_points_at_the_console_log(tmp_path, test_images):
    project = Project(tmp_path / "p", 'vm "slow" {\n    image "%(image)s"\n    vcpus 1\n    cloud-init { }\n    ssh { user "u"; }\n}\n',
                      test_images["debian"]["path"])
    try:
        rc, tasks, out = project.run("up", "-e", "ssh_timeout=5")
        assert rc != 0
        (line,) = summary(tasks)
        console_log = os.path.join(project.manager().get("slow").work_dir, "console.log")
        assert line.startswith("slow: FAILED - ") and "not ready within the deadline of 5 s" in line, out
        # Within 5 s a loaded machine's guest may have printed nothing yet: either way the log is named.
        assert ("last console lines (%s)" % console_log in line or "nothing on its console (%s)" % console_log in line), out
        assert "boot-timeout" in line, out
    finally:
        project.cleanup()
