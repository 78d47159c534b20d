# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every ``vmctl`` command group shares: exit codes, output, the engine's door, and the command table.

Each group (vm, image, ssh, console, playbook) registers its commands here with ``command``; main.py
builds the parser from the table and maps engine errors to the exit codes.
"""

from __future__ import annotations

__metaclass__ = type

import argparse
import json
import os
import re
import sys
import time

from ansible_collections.vmctl.core.plugins.module_utils import errors
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile

COLLECTION_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # plugins/plugin_utils/cli/common.py


# Exit codes, most specific first (``exit_code_of`` takes the first class that matches).
EXIT_OK = 0
EXIT_FAILED = 1          # the engine could not do it (QEMU, download, SSH, ...)
EXIT_USAGE = 2           # bad command line, VM name, VMFile or setting
EXIT_NOT_FOUND = 3       # no such VM, image or VMFile
EXIT_STATE = 4           # the VM is in the wrong state, or already exists
EXIT_TIMEOUT = 5         # something did not happen in time (SSH login, shutdown, ...)
EXIT_INTERNAL = 70       # a bug in vmctl (traceback with -v)
EXIT_INTERRUPTED = 130   # Ctrl+C
EXIT_CODES = (
    (errors.Timeout, EXIT_TIMEOUT),
    ((errors.VmNotFound, errors.ImageNotFound, errors.VmfileNotFound, errors.UnknownVm, errors.ImageNotCached,
      errors.LogNotFound, errors.SnapshotNotFound), EXIT_NOT_FOUND),
    ((errors.InvalidState, errors.VmExists, errors.ImageInUse), EXIT_STATE),
    ((errors.InvalidName, errors.InvalidSpec, errors.InvalidChecksum, errors.InvalidImageUrl, vmfile.VmfileError,
      errors.UsageError), EXIT_USAGE),
)


def exit_code_of(err):
    for classes, code in EXIT_CODES:
        if isinstance(err, classes):
            return code
    return EXIT_FAILED


def version():
    """The collection's version, from MANIFEST.json (installed) or galaxy.yml (a checkout)."""
    try:
        with open(os.path.join(COLLECTION_DIR, "MANIFEST.json")) as f:
            return json.load(f)["collection_info"]["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(os.path.join(COLLECTION_DIR, "galaxy.yml")) as f:
            match = re.search(r"^version:\s*['\"]?([^'\"\s]+)", f.read(), re.M)
        return match.group(1) if match else "unknown"
    except OSError:
        return "unknown"


def out(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(text):
    """Progress and remarks go to stderr, so stdout stays what a script wants to read."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def vm_manager():
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    return VmManager()


def print_json(data):
    out(json.dumps(data, indent=2, sort_keys=True))
    return EXIT_OK


def dash(value):
    return "-" if value in (None, "", []) else str(value)


class Progress:
    """A download's progress on stderr: a live line on a terminal, a line every few seconds otherwise."""

    def __init__(self, url):
        self.url = url
        self.tty = sys.stderr.isatty()
        self.begin = self.shown = time.monotonic()
        self.active = False

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.shown < (0.2 if self.tty else 5.0) and not (total and done >= total):
            return
        from ansible_collections.vmctl.core.plugins.module_utils.progress import download_text
        self.shown = now
        text = download_text(done, total, now - self.begin)
        if self.tty:
            sys.stderr.write("\rpulling %s: %s\033[K" % (os.path.basename(self.url), text))
            self.active = True
        else:
            sys.stderr.write("pulling %s: %s\n" % (self.url, text))
        sys.stderr.flush()

    def finish(self):
        if self.active:
            sys.stderr.write("\n")
            self.active = False


# --- the command table -------------------------------------------------------------------------------

COMMANDS = []  # (name, help, description with examples, function to add arguments); main.py orders them


def command(name, summary, examples):
    def register(add_arguments):
        COMMANDS.append((name, summary, examples, add_arguments))
        return add_arguments
    return register


def name_arg(parser, what="VM name"):
    parser.add_argument("name", metavar="NAME", help=what)


def vm_command(name, summary, description, handler):
    """A command whose only argument is the VM's NAME."""
    def add_arguments(parser):
        name_arg(parser)
        return handler
    COMMANDS.append((name, summary, description, add_arguments))


def verbosity(parser, default):
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more output (engine log; for up/down/reload/provision also ansible-playbook -v)")


def subparser(sub, name, summary, description):
    p = sub.add_parser(name, help=summary, description=summary + ".\n\n" + description, epilog=EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbosity(p, argparse.SUPPRESS)
    return p


EXIT_HELP = """\
exit codes:
  0    success
  1    the operation failed (QEMU, download, SSH, ...)
  2    usage: bad option, VM name, VMFile or setting
  3    not found: no such VM, image or VMFile
  4    wrong state: the VM is not running / already exists / the image is in use
  5    timeout
  70   internal error (run with -v for the traceback)
  130  interrupted
  up, down, reload, provision return ansible-playbook's exit code; ssh returns ssh's.

environment:
  XDG_DATA_HOME  where VMs and images are kept (default ~/.local/share; vmctl uses its vmctl/ folder)
  VMCTL_ACCEL    kvm or tcg: QEMU acceleration for VMs created with accel auto
  VMCTL_LOG      debug, info or warning: how much the engine logs on stderr (like -v, -vv)
"""
