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


def find_tool(name):
    path = shutil.which(name)
    if not path:
        package = _PACKAGES.get(name)
        hint = "Install it (Debian/Ubuntu: apt install %s)" % package if package else "Install %s and put it in PATH" % name
        raise ToolMissing("required tool %r was not found in PATH" % name, hint=hint, tool=name)
    return path


def run(argv, error=VmctlError, what=None, timeout=300, **kwargs):
    """Run ``argv``; on failure raise ``error`` with stderr in the message. Returns stdout (text)."""
    argv = [find_tool(argv[0])] + list(argv[1:])
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise error("%s timed out after %ss" % (what or argv[0], timeout))
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise error("%s failed (exit %d): %s" % (what or " ".join(argv[:2]), result.returncode, detail))
    return result.stdout


CommandResult = collections.namedtuple("CommandResult", "rc stdout stderr")


class HostRunner:
    """Runs host commands: ``runner(argv, check=True)`` → CommandResult (stdout, stderr as text).

    ``prefix`` goes in front of every command (``["pfexec"]``, or ``["ssh", "root@host"]`` to drive
    another machine). Backends take a runner object so tests can record and answer commands.
    """

    def __init__(self, prefix=(), error=VmctlError):
        self.prefix = list(prefix)
        self.error = error

    def __call__(self, argv, check=True, timeout=300):
        full = self.prefix + list(argv)
        try:
            result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False,
                                    stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ToolMissing("required tool %r was not found in PATH" % full[0], tool=full[0],
                              hint="This command exists on illumos hosts only" if not self.prefix else "Check the command prefix")
        except subprocess.TimeoutExpired:
            raise self.error("%s timed out after %ss" % (" ".join(full), timeout), argv=full)
        outcome = CommandResult(result.returncode, result.stdout, result.stderr)
        if check and outcome.rc != 0:
            raise self.error("%s failed (exit %d): %s" % (" ".join(full), outcome.rc, (outcome.stderr or outcome.stdout).strip()),
                             argv=full, rc=outcome.rc)
        return outcome
