# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl snapshot create|list|revert|delete NAME SNAP``: snapshots in a VM's own disk (VmManager.snapshot_*)."""

from __future__ import annotations

__metaclass__ = type

import time

from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import EXIT_OK, command, name_arg, note, out, print_json, subparser, vm_manager

SNAPSHOT_FORMAT = "%-24s %-4s %-10s %s"


def describe(snap):
    """One snapshot in a line: ``base (RAM, 84.3 MB, 2026-12-03 05:50:12)``."""
    return "%s (%s, %s, %s)" % (snap["name"], "RAM" if snap.get("ram") else "disk only", human_size(snap.get("size", 0)),
                                _date(snap))


def _date(snap):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.get("created_at") or 0))


def cmd_snapshot_create(args):
    handle, changed, snap = vm_manager().snapshot_create(args.name, args.snapshot)
    if changed:
        note("took snapshot %s of %s" % (describe(snap), args.name))
    else:
        note("VM %s already has snapshot %s" % (args.name, args.snapshot))
    return EXIT_OK


def cmd_snapshot_list(args):
    snaps = vm_manager().get(args.name).snapshots
    if args.json:
        return print_json(snaps)
    out(SNAPSHOT_FORMAT % ("NAME", "RAM", "SIZE", "DATE"))
    for snap in snaps:
        out(SNAPSHOT_FORMAT % (snap["name"], "yes" if snap.get("ram") else "no", human_size(snap.get("size", 0)), _date(snap)))
    return EXIT_OK


def cmd_snapshot_revert(args):
    handle, _changed, details = vm_manager().snapshot_revert(args.name, args.snapshot)
    if details["ram"]:
        note("%s is back at snapshot %s and %s (load %.1f s%s); its clock is %.0f s behind until NTP or a 'date -s' "
             "corrects it" % (args.name, args.snapshot, handle.state, details["seconds"],
                              ", started first" if details["started"] else "", details["clock_lag_seconds"]))
    else:
        note("%s's disk is back at snapshot %s (disk only; the VM is %s)" % (args.name, args.snapshot, handle.state))
    return EXIT_OK


def cmd_snapshot_delete(args):
    changed = vm_manager().snapshot_delete(args.name, args.snapshot)[1]
    note("deleted snapshot %s of %s" % (args.snapshot, args.name) if changed else
         "VM %s has no snapshot %s" % (args.name, args.snapshot))
    return EXIT_OK


@command("snapshot", "Take, list, revert to and delete VM snapshots", """\
A running VM's snapshot holds its RAM and devices (a revert leaves it running in that state at once);
a stopped VM's holds its disk only. Snapshots are kept in the VM's overlay: destroy removes them.

examples:
  vmctl snapshot create web base
  vmctl snapshot list web
  vmctl snapshot revert web base
  vmctl snapshot delete web base
""")
def _snapshot_args(p):
    sub = p.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True
    for name, summary, handler in (
            ("create", "Take a snapshot (live with RAM when the VM runs, disk-only when it is stopped)", cmd_snapshot_create),
            ("revert", "Return the VM to a snapshot", cmd_snapshot_revert),
            ("delete", "Delete a snapshot", cmd_snapshot_delete)):
        s = subparser(sub, name, summary, "examples:\n  vmctl snapshot %s web base\n" % name)
        name_arg(s)
        s.add_argument("snapshot", metavar="SNAP", help="snapshot name")
        s.set_defaults(handler=handler)
    listing = subparser(sub, "list", "List a VM's snapshots (name, RAM, size, date)", "examples:\n  vmctl snapshot list web\n")
    name_arg(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_snapshot_list)
    return None
