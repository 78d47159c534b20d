# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Provision steps (the VMFile's ``provision`` blocks) run on a guest through a ``runner``.

A runner gives ``run(command, on_output) -> (exit_code, signal)`` with output streamed to
``on_output(text)`` as it arrives, and ``put(local_path, remote_path, mode)``. The connection
plugin and the benchmarks provide one; this module holds what a step means and how it is logged.

provision.log (in the VM's work directory) gets, for every step::

    === 2026-11-23T07:12:03Z web step 2/3 shell: apt-get install -y nginx
    <the step's output, as it came>
    === web step 2/3 exit 0 (12.4 s)
"""

from __future__ import annotations

__metaclass__ = type

import hashlib
import json
import os
import shlex
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import ProvisionFailed

SCRIPT_PATH = "/tmp/vmctl-provision-%d.sh"


def describe(step):
    """``shell: <inline>``, ``shell script: <path>`` or ``file: <source> -> <destination>``."""
    if step["type"] == "file":
        return "file: %s -> %s" % (step["source"], step["destination"])
    if step.get("script"):
        return "shell script: %s" % step["script"]
    return "shell: %s" % step["inline"]


def plan_digest(steps):
    """A digest of a provision plan: every step's settings and the contents of the files it uploads.

    ``up`` records it when a plan completes, so that it can tell a plan that never completed (run it)
    from one that changed since (say so, and leave it to ``provision``). An unreadable file digests as
    its error, so the plan reads as changed rather than failing here; the step fails when it runs.
    """
    digest = hashlib.sha256()
    for step in steps:
        settings = {key: step.get(key) for key in ("type", "inline", "script", "source", "destination")}
        digest.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
        for key in ("script", "source"):
            if step.get(key):
                digest.update(_file_digest(step[key]).encode("ascii"))
    return "sha256:" + digest.hexdigest()


def _file_digest(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
    except OSError as err:
        return "unreadable:%s" % err.errno
    return digest.hexdigest()


def provision_status(record_provision, steps, digest):
    """What ``up`` should do about a VM's plan: ``none`` (no steps), ``pending`` (never completed),
    ``done`` (completed, same plan) or ``changed`` (completed, but the plan changed since)."""
    if not steps:
        return "none"
    if not isinstance(record_provision, dict) or record_provision.get("completed") is not True:
        return "pending"
    return "done" if record_provision.get("digest") == digest else "changed"


class ProvisionLog:
    """Appends each step's header, output and result to ``path`` (flushed as it goes)."""

    def __init__(self, path):
        self.path = path
        self._file = None

    def __enter__(self):
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        return self

    def __exit__(self, *exc):
        if self._file:
            self._file.close()

    def write(self, text):
        if self._file:
            self._file.write(text)
            self._file.flush()


def run_step(runner, vm, step, total=None, log=None, on_output=None):
    """Run one step; returns ``{"step", "description", "rc", "seconds"}`` or raises ProvisionFailed."""
    number = step["step"]
    label = "%s step %s%s" % (vm, number, "/%d" % total if total else "")
    what = describe(step)
    out = log or ProvisionLog(None)
    out.write("=== %s %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), label, what))

    def output(text):
        out.write(text)
        if on_output:
            on_output(text)

    begin = time.monotonic()
    rc, signal = 0, None
    if step["type"] == "file":
        runner.put(step["source"], step["destination"], None)
    elif step.get("script"):
        remote = SCRIPT_PATH % number
        runner.put(step["script"], remote, 0o755)
        rc, signal = runner.run(shlex.quote(remote), output)
    else:
        rc, signal = runner.run(step["inline"], output)
    seconds = time.monotonic() - begin
    result = "signal %s" % signal if signal else "exit %d" % rc
    out.write("\n=== %s %s (%.1f s)\n" % (label, result, seconds))
    if signal or rc != 0:
        raise ProvisionFailed(
            "VM %s: provision step %s (%s) failed with %s" % (vm, number, what, "signal %s" % signal if signal else "exit code %d" % rc),
            hint="Its output is in %s; fix the step and run vmctl.core.provision again" % (log.path if log and log.path else "provision.log"),
            vm=vm, step=number, rc=rc, signal=signal)
    return {"step": number, "description": what, "rc": rc, "seconds": round(seconds, 2)}
