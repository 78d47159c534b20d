# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``vmctl`` command: the commands of the vmctl user guide over the engine.

Thin on purpose: parse the command line, call the engine (VmManager, ImageCache, the VMFile reader,
the console relay), print. Each command group has its own file and registers its commands in
``common.COMMANDS``: ``vm`` (create, start, stop, destroy, suspend, resume, list, status, log), ``image``,
``ssh`` (ssh, ssh-config, cp), ``console``, and ``playbook`` (up, down, reload and provision run the
collection's playbooks). Engine errors are printed here as ``error:`` and ``hint:`` lines and map to exit
codes (``common.EXIT_CODES``); ``main()`` returns the code instead of exiting, so it can be called in-process.
"""

from __future__ import annotations

__metaclass__ = type

import argparse
import logging
import os
import sys
import traceback

from ansible_collections.vmctl.core.plugins.module_utils import errors, paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import console, image, playbook, snapshot, ssh, vm
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import (
    COLLECTION_DIR, COMMANDS, EXIT_FAILED, EXIT_HELP, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, exit_code_of, note,
    subparser, verbosity, version)
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.playbook import PLAYBOOK_COMMANDS

GROUPS = (vm, ssh, console, snapshot, image, playbook)  # importing a group registers its commands

# The order of ``vmctl --help``: the guide's, lifecycle first. A new command is added here too.
ORDER = ("create", "start", "stop", "destroy", "list", "status", "console", "ssh", "ssh-config", "cp", "suspend",
         "resume", "snapshot", "image", "up", "down", "reload", "provision", "log")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="vmctl", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_HELP,
        description="Create, run, provision and tear down VMs (QEMU/KVM) - the commands of vmctl, "
                    "over the vmctl.core Ansible collection.\n\n"
                    "examples:\n  vmctl create --name demo --image-url https://example.com/image.img --start\n"
                    "  vmctl ssh demo\n  vmctl up && vmctl ssh && vmctl down --destroy\n\n"
                    "'vmctl COMMAND --help' shows a command's options and examples.")
    parser.add_argument("--version", action="version", version="vmctl %s (vmctl.core at %s)" % (version(), COLLECTION_DIR))
    verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    table = {entry[0]: entry for entry in COMMANDS}
    for name, summary, description, add_arguments in (table[name] for name in ORDER):
        if name in PLAYBOOK_COMMANDS:
            description += "\nArguments after -- go to ansible-playbook, e.g. vmctl %s -- --forks 10\n" % name
        p = subparser(sub, name, summary, description)
        handler = add_arguments(p)
        if handler is not None:
            p.set_defaults(handler=handler)
    return parser


def _split_extra(argv):
    """``up ... -- -f 10``: what follows ``--`` goes to ansible-playbook (or ssh), untouched by argparse."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def _configure_logging(verbose):
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
    level = levels.get(os.environ.get("VMCTL_LOG", "").lower(), logging.WARNING)
    if verbose:
        level = min(level, logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="vmctl: %(levelname)s: %(message)s")
    # paramiko logs each failed attempt of a retried login (a booting guest) with a traceback; our own
    # error carries the last one, so its log shows only with -vv.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, after = _split_extra(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if after is not None and args.command not in PLAYBOOK_COMMANDS + ("ssh",):
        parser.error("arguments after -- are only for ssh and %s" % ", ".join(PLAYBOOK_COMMANDS))
    args.remote_command = after or []  # ssh: the command to run on the VM
    args.extra = after or []           # up, down, ...: more ansible-playbook arguments
    verbose = args.verbose = getattr(args, "verbose", 0) or 0
    _configure_logging(verbose)
    try:
        return args.handler(args)
    except VmctlError as err:
        note("error: %s" % err.message)
        if err.hint and err.hint not in err.message:  # a VMFile problem renders its own hint under its line
            note("hint: %s" % err.hint)
        if verbose:
            note("code: %s" % err.code)
        return exit_code_of(err)
    except KeyboardInterrupt:
        note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # vmctl list | head
        return EXIT_OK
    except Exception as err:  # a bug: say so, with the traceback when asked
        full = errors.no_space(err, paths.data_dir())  # not a bug: a full disk
        if full is not None:
            note("error: %s" % full.message)
            note("hint: %s" % full.hint)
            return EXIT_FAILED
        note("error: internal error: %s: %s" % (type(err).__name__, err))
        if verbose:
            note(traceback.format_exc())
        else:
            note("hint: run again with -v for the traceback, and please report it")
        return EXIT_INTERNAL
