"""Helpers for the vm_ssh connection tests: run ``ansible``/``ansible-playbook`` with the json callback,
list the session daemons in a control directory (importable: ``from vm_ssh_helpers import ...``)."""

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile

from support.ansible_run import _env

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import protocol

CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")


def run(argv, env=None, timeout=600):
    """Run an ansible command with the json callback; returns (CompletedProcess, parsed json or None)."""
    extra = {"ANSIBLE_STDOUT_CALLBACK": "json_results", "ANSIBLE_CALLBACK_PLUGINS": CALLBACKS}
    extra.update(env or {})
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(extra), timeout=timeout, check=False)
    try:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        data = None
    return proc, data


def adhoc(inventory, module, args=None, pattern="all", extra=(), env=None, timeout=600):
    """``ansible <pattern> -i inventory -m module -a args``: returns {host: result} (and the process)."""
    argv = ["ansible", pattern, "-i", str(inventory), "-m", module] + (["-a", args] if args is not None else []) + list(extra)
    proc, data = run(argv, env=env, timeout=timeout)
    if data is None:
        raise AssertionError("no json from %s:\n%s\n%s" % (" ".join(argv), proc.stdout, proc.stderr))
    return data["plays"][0]["tasks"][0]["hosts"], proc


def playbook(path, inventory, extra=(), env=None, timeout=600):
    """``ansible-playbook``: returns ([(task name, {host: result})], process)."""
    argv = ["ansible-playbook", "-i", str(inventory), str(path)] + list(extra)
    proc, data = run(argv, env=env, timeout=timeout)
    if data is None:
        raise AssertionError("no json from %s:\n%s\n%s" % (" ".join(argv), proc.stdout, proc.stderr))
    tasks = [(task["task"]["name"], task["hosts"]) for play in data["plays"] for task in play["tasks"]]
    return tasks, proc


def daemons(control_dir):
    """``[ping answer]`` of every session daemon that answers in ``control_dir`` (there is one per directory: a
    list, so that a second one would show); each answer's ``sessions`` lists the VM sessions it holds."""
    found = []
    for path in sorted(glob.glob(os.path.join(str(control_dir), "*.sock"))):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(protocol.json_frame(protocol.REQUEST, {"op": "ping"}))
            if protocol.read_frame(sock)[0] != protocol.ACCEPTED:
                continue
            kind, payload = protocol.read_frame(sock)
            if kind == protocol.DONE:
                found.append(dict(json.loads(payload), socket=path))
        except (OSError, EOFError):
            continue
        finally:
            sock.close()
    return found


def sessions(control_dir):
    """``[session]`` (vm, address, identity, started, requests, ...) of every daemon in ``control_dir``, with its ``pid``."""
    return [dict(session, pid=daemon["pid"]) for daemon in daemons(control_dir) for session in daemon["sessions"]]


def stop_daemons(control_dir):
    for path in glob.glob(os.path.join(str(control_dir), "*.sock")):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(protocol.json_frame(protocol.REQUEST, {"op": "stop"}))
            while protocol.read_frame(sock)[0] not in (protocol.DONE, protocol.ERROR):
                pass
        except (OSError, EOFError):
            pass
        finally:
            sock.close()


def new_control_dir():
    """A private directory for vm_ssh session daemons, short because unix socket paths are limited to
    107 bytes (set it as ANSIBLE_VMCTL_CONTROL_PATH_DIR); undo with ``remove_control_dir``."""
    return tempfile.mkdtemp(prefix="vmcp-", dir="/tmp")


def remove_control_dir(path):
    """Stop the session daemons in ``path`` and remove it."""
    stop_daemons(path)
    shutil.rmtree(path, ignore_errors=True)
