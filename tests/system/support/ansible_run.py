"""Run real ``ansible`` / ``ansible-playbook`` commands against the collection (importable from tests)."""

import json
import os
import subprocess


def _env(extra=None):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="minimal", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    env.update(extra or {})
    return env


def module(name, args, check=False, diff=False, env=None, timeout=600):
    """``ansible localhost -m vmctl.core.<name> -a <json>``: returns the module's result dict (``failed`` set on failure)."""
    argv = ["ansible", "localhost", "-c", "local", "-m", "vmctl.core." + name] + (["-a", json.dumps(args)] if args else [])
    argv += ["--check"] if check else []
    argv += ["--diff"] if diff else []
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(env), timeout=timeout, check=False)
    head, sep, body = proc.stdout.partition(" => ")
    if not sep:
        raise AssertionError("no module result from %s:\n%s\n%s" % (" ".join(argv), proc.stdout, proc.stderr))
    result = json.loads(body)
    result.setdefault("failed", proc.returncode != 0)
    result["_stdout"] = proc.stdout  # diffs are printed, not part of the result
    return result


def playbook(path, *args, env=None, timeout=1800, cwd=None):
    """``ansible-playbook path args...``; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run(["ansible-playbook", str(path)] + list(args), capture_output=True, text=True,
                          env=_env(env), timeout=timeout, cwd=cwd, check=False)
