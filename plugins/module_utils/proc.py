# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running host tools: one place that turns "not installed" and "failed" into engine errors."""

from __future__ import annotations

__metaclass__ = type

import collections
import shutil
import subprocess

from ansible_collections.vmctl.core.plugins.module_utils.errors import ToolMissing, VmctlError

# Debian package that provides each tool, for the hint.
_PACKAGES = {
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
}


def find_tool(name, hint=None):
    """The path of host tool ``name``; ToolMissing (with the package to install, or ``hint``) when it is not in PATH."""
    path = shutil.which(name)
    if not path:
        if hint is None:
            package = _PACKAGES.get(name)
            hint = "Install it (Debian/Ubuntu: apt install %s)" % package if package else "Install %s and put it in PATH" % name
        raise ToolMissing("required tool %r was not found in PATH" % name, hint=hint, tool=name)
    return path


Result = collections.namedtuple("Result", "rc stdout stderr")


def run(argv, error=VmctlError, what=None, timeout=300, check=True, input=None, text=True, missing_hint=None):
    """Run host tool ``argv`` (stdin: ``input``, else nothing) and return its Result.

    A tool that is not installed raises ToolMissing (with the package to install, or ``missing_hint``);
    a timeout, or with ``check`` a non-zero exit, raises ``error`` naming ``what`` (default: the command)
    with the tool's stderr in the message and ``argv`` and ``rc`` in the details.
    """
    argv = list(argv)
    what = what or " ".join(argv)
    tool = find_tool(argv[0], missing_hint)
    stdin = None if input is not None else subprocess.DEVNULL
    try:
        result = subprocess.run([tool] + argv[1:], input=input, stdin=stdin, capture_output=True, text=text,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise error("%s timed out after %ss" % (what, timeout), argv=argv)
    outcome = Result(result.returncode, result.stdout, result.stderr)
    if check and outcome.rc != 0:
        detail = (outcome.stderr or outcome.stdout).strip()
        raise error("%s failed (exit %d): %s" % (what, outcome.rc, detail), argv=argv, rc=outcome.rc)
    return outcome


def cmdline_and_state(pid):
    """``(argv as bytes, state letter)`` of process ``pid`` from /proc, or None when it cannot be read."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return argv, state


class ProvenProcess:
    """A daemon of ours, believed only while ``is_ours(pid)`` proves it (a subclass says how); signals go
    through a pidfd taken before the proof is re-checked, so a PID reused in between is not hit."""

    def is_ours(self, pid):
        raise NotImplementedError

    def signal(self, pid, sig):
        """Send ``sig`` to ``pid`` if it still proves to be ours; False when it is gone."""
        import os
        import signal
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
        try:
            if not self.is_ours(pid):
                return False
            try:
                if pidfd is not None:
                    signal.pidfd_send_signal(pidfd, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                return False
            return True
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def wait_gone(self, pid, timeout):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_ours(pid):
                return True
            time.sleep(0.1)
        return not self.is_ours(pid)
