"""Every branch of the up, down and provision roles, by VM state, under ansible-core 2.19's rule that every
condition is a boolean (a list or a string as a condition fails the run).

The VM has no ssh block and no cloud-init, and boots a blank disk (SeaBIOS finds nothing to boot and
idles), so each state is reached in seconds: absent, prepared (created by `vmctl create`), running,
suspended, stopped. The branches with SSH and with or without steps are in test_first_try.py and
test_playbooks.py.
"""

import json
import os
import re
import subprocess

import pytest
from support.ansible_run import _env
from test_cli import VMCTL, ok

pytestmark = [pytest.mark.slow]

VMFILE = 'vm "blank" {\n    image "blank.qcow2"\n    memory 128\n}\n'


def tasks_of(out):
    """``{task name without the role prefix: status}`` for host blank, from the default callback's output."""
    result = {}
    for block in re.split(r"^TASK \[", out, flags=re.M)[1:]:
        name = block.split("]", 1)[0].split(" : ", 1)[-1]
        status = re.search(r"^(ok|changed|skipping|fatal|failed): \[(blank|localhost)[^\]]*\]", block, re.M)
        if status and name not in result:
            result[name] = status.group(1)
    return result


def play(project, env, playbook, *extra):
    proc = subprocess.run(["ansible-playbook", "vmctl.core." + playbook] + list(extra), cwd=str(project),
                          capture_output=True, text=True, timeout=600, check=False,
                          env=_env(dict(env, ANSIBLE_STDOUT_CALLBACK="default")))
    out = proc.stdout + proc.stderr
    assert "Conditional result" not in out and "was derived from value of type" not in out, out
    return proc.returncode, tasks_of(out), out


def state(env):
    return json.loads(ok("status", "blank", "--json", env=env).stdout)["state"]


def test_up_down_and_provision_in_every_state(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(project / "blank.qcow2"), "16M"], check=True)
    (project / "VMFile.kdl").write_text(VMFILE)
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    environ = dict(os.environ, **env)
    try:
        # absent: created and started; no SSH to wait for, no steps to run
        rc, tasks, out = play(project, env, "up")
        assert rc == 0 and tasks["Create blank"] == "changed" and tasks["Start blank"] == "changed", out
        assert tasks["Provision blank"] == "skipping", out
        assert state(env) == "running"

        # running: left alone
        rc, tasks, out = play(project, env, "up")
        assert rc == 0 and tasks["Leave alone blank"] == "ok", out
        assert tasks["Start blank"] == "skipping" and not re.search(r"changed=[1-9]", out), out

        # provision: no ssh block, explained
        rc, tasks, out = play(project, env, "provision")
        assert rc != 0 and "it has no ssh block" in out, out

        # suspended: resumed
        ok("suspend", "blank", env=env)
        rc, tasks, out = play(project, env, "up")
        assert rc == 0 and tasks["Resume blank"] == "changed" and state(env) == "running", out

        # down of a running VM stops it (SeaBIOS ignores the power button: terminated after 2 s)
        rc, tasks, out = play(project, env, "down", "-e", "stop_timeout=2")
        assert rc == 0 and tasks["Stop blank"] == "changed" and state(env) == "stopped", out
        rc, tasks, out = play(project, env, "down", "-e", "stop_timeout=2")  # stopped: nothing to do
        assert rc == 0 and tasks["Stop blank"] == "ok", out

        # stopped: started again
        rc, tasks, out = play(project, env, "up")
        assert rc == 0 and tasks["Start blank"] == "changed" and state(env) == "running", out

        # prepared (created outside the VMFile, never started): started
        rc, tasks, out = play(project, env, "down", "-e", "destroy=true")
        assert rc == 0 and tasks["Destroy blank"] == "changed", out
        ok("create", "--name", "blank", "--image", project / "blank.qcow2", "--memory", "128", "--no-cloud-init",
           env=env)
        assert state(env) == "prepared"
        rc, tasks, out = play(project, env, "up")
        assert rc == 0 and tasks["Create blank"] == "ok" and tasks["Start blank"] == "changed", out

        # absent: down does nothing
        rc, tasks, out = play(project, env, "down", "-e", "destroy=true")
        assert rc == 0 and tasks["Destroy blank"] == "changed", out
        rc, tasks, out = play(project, env, "down", "-e", "destroy=true")
        assert rc == 0 and tasks["Destroy blank"] == "ok", out
    finally:
        subprocess.run([VMCTL, "destroy", "blank"], env=environ, capture_output=True, check=False)
