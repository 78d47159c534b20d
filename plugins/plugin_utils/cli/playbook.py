# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl up|down|reload|provision``: the collection's playbooks, run by ansible-playbook over a VMFile."""

from __future__ import annotations

__metaclass__ = type

import argparse
import os
import subprocess
import sys

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import COLLECTION_DIR, command, note

PLAYBOOK_COMMANDS = ("up", "down", "reload", "provision")


def _seconds(text):
    """An argparse type: a whole number of seconds, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("%r is not a whole number of seconds of at least 1" % text)
    return value


def _ansible_playbook():
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if os.access(beside, os.X_OK):
        return beside
    from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
    return find_tool("ansible-playbook")


def playbook_argv(args):
    """``ansible-playbook vmctl.core.<command>`` with the extra vars of the command's options."""
    path = os.path.abspath(vmfile.find(args.file))
    vmfile.load(path, names=[args.name] if args.name else None)  # a mistake is reported here, with file:line:col
    argv = [_ansible_playbook(), "vmctl.core." + args.command, "-e", "vmfile=%s" % path]
    if args.name:
        argv += ["-e", "name=%s" % args.name]
    if getattr(args, "no_provision", False):
        argv += ["-e", "no_provision=true"]
    for option, variable in (("timeout", "ssh_timeout"), ("stall_timeout", "stall_timeout")):
        if getattr(args, option, None) is not None:
            argv += ["-e", "%s=%d" % (variable, getattr(args, option))]
    if getattr(args, "destroy", False):
        argv += ["-e", "destroy=true"]
    if args.verbose:
        argv.append("-" + "v" * args.verbose)
    return argv + list(args.extra)


def playbook_env():
    """The environment for ansible-playbook: this collection first on its collections path."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_DIR)))  # the dir holding ansible_collections/
    if os.path.basename(os.path.dirname(os.path.dirname(COLLECTION_DIR))) == "ansible_collections":
        rest = env.get("ANSIBLE_COLLECTIONS_PATH") or env.get("ANSIBLE_COLLECTIONS_PATHS")
        env["ANSIBLE_COLLECTIONS_PATH"] = root + (os.pathsep + rest if rest else "")
    return env


def cmd_playbook(args):
    argv = playbook_argv(args)
    if args.verbose:
        note("running: %s" % " ".join(argv))
    proc = subprocess.Popen(argv, env=playbook_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # ansible-playbook got the same Ctrl+C; let it clean up
        return proc.wait()


def _vmfile_args(p, no_provision=False, destroy=False):
    p.add_argument("--file", metavar="PATH", help="the VMFile (default ./VMFile.kdl)")
    p.add_argument("--name", metavar="VM", help="only this VM of the VMFile")
    if no_provision:
        p.add_argument("--no-provision", action="store_true", help="skip the provision steps")
        p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                       help="deadline of the wait for SSH and cloud-init (default: the VMFile's ssh { boot-timeout }, "
                            "else 600 under TCG, 300 with KVM)")
        p.add_argument("--stall-timeout", type=_seconds, metavar="SECONDS",
                       help="fail the wait when the guest shows no progress for this long (default: the VMFile's "
                            "ssh { stall-timeout }, else 120)")
    if destroy:
        p.add_argument("--destroy", action="store_true", help="destroy the VMs instead of stopping them")
    p.set_defaults(extra=[])
    return cmd_playbook


@command("up", "Bring up VMs from VMFile.kdl", """\
Create, start and provision every VM of the VMFile (in parallel): a running VM is left alone (unless
its provision steps never completed: then they run), a stopped one is started and provisioned again.
The wait for SSH fails a guest that shows no progress for --stall-timeout seconds, or that is not
ready by the --timeout deadline. Runs ansible-playbook vmctl.core.up.

examples:
  vmctl up
  vmctl up --name webserver
  vmctl up --no-provision
  vmctl up --file path/to/VMFile.kdl
  vmctl up --timeout 1200 --stall-timeout 300    # a slow host
""")
def _up_args(p):
    return _vmfile_args(p, no_provision=True)


@command("down", "Bring down VMs from VMFile.kdl", """\
Stop the VMs of the VMFile (ACPI power-off, terminated after 30 s), or with --destroy remove them.
Runs ansible-playbook vmctl.core.down.

examples:
  vmctl down
  vmctl down --name webserver
  vmctl down --destroy
""")
def _down_args(p):
    return _vmfile_args(p, destroy=True)


@command("reload", "Destroy and recreate VMs from VMFile.kdl", """\
Destroy each VM of the VMFile, then create, start and provision it afresh. Runs ansible-playbook
vmctl.core.reload.

examples:
  vmctl reload
  vmctl reload --name webserver
  vmctl reload --no-provision
""")
def _reload_args(p):
    return _vmfile_args(p, no_provision=True)


@command("provision", "Re-run provisioners from VMFile.kdl", """\
Run the provision steps of the VMFile again on running VMs, streaming their output (also appended to
provision.log). Runs ansible-playbook vmctl.core.provision.

examples:
  vmctl provision
  vmctl provision --name builder
""")
def _provision_args(p):
    return _vmfile_args(p)
