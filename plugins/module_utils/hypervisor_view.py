# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hypervisor side of the ``vms`` inventory: ``main(argv)`` prints ``VmManager.views()`` as JSON.

The controller runs it on each hypervisor over one SSH command, with this collection's module_utils sent
as a zip on stdin (``plugin_utils.hypervisors``), so a hypervisor needs only its Python: nothing of
vmctl or Ansible is installed there. Arguments: ``[--data-dir DIR] [--no-live-state]``.
"""

from __future__ import annotations

__metaclass__ = type

import json
import os
import sys

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore


def main(argv, out=None):
    out = out or sys.stdout
    data_dir, live_state, args = None, True, list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--data-dir" and args:
            data_dir = args.pop(0)
        elif arg == "--no-live-state":
            live_state = False
        else:
            out.write(json.dumps({"error": "unknown argument %r" % arg}) + "\n")
            return 2
    store = VmStore(os.path.join(os.path.expanduser(data_dir), "vms.json") if data_dir else None)
    try:
        view = VmManager(store).views(live_state=live_state)
    except VmctlError as err:
        out.write(json.dumps({"error": str(err), "hint": err.hint}) + "\n")
        return 1
    out.write(json.dumps(view) + "\n")
    return 0
