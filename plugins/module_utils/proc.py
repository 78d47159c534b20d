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
