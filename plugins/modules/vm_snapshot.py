#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_snapshot
short_description: Take, revert to and delete snapshots of a vmctl virtual machine
version_added: 0.2.0
description:
  - Snapshots live in the VM's own disk overlay, like C(vmctl snapshot create|revert|delete).
  - A running (or suspended) VM is snapshotted live, with its RAM and device state, through QEMU's
    C(snapshot-save) job; a stopped VM gets a disk-only snapshot (C(qemu-img snapshot)). The read-only
    cloud-init seed ISO is not part of a snapshot.
  - Reverting to a snapshot with RAM leaves the VM running at once in the snapshot's state (a stopped VM is
    started first). A disk-only snapshot is reverted while the VM is stopped.
  - The snapshots are recorded in the store, so M(vmctl.core.vm_info) and C(vmctl list/status) show them;
    destroying the VM removes them, restarting it keeps them. The propolis backend has no snapshots and refuses.
author:
  - vmctl.core developers (@vmctl)
options:
  name:
    description: VM name.
    type: str
    required: true
  snapshot:
    description: Snapshot name (1-63 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit).
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot unless the VM has one of that name (then nothing changes).
      - V(absent) deletes it if it exists.
      - V(reverted) returns the VM to it (always a change); it is an error if there is no such snapshot.
    type: str
    choices: [present, absent, reverted]
    default: present
notes:
  - The guest's clock is not corrected after a revert to a snapshot with RAM; it lags by the time since the
    snapshot was taken (returned as RV(revert.clock_lag_seconds)) until the guest's NTP client
    (systemd-timesyncd, chrony) steps it, or a task sets it (for example C(date -s @{{ now().timestamp() | int }})).
  - TCP connections open when the snapshot was taken are gone after a revert; the C(vmctl.core.vm_ssh) session
    of the VM is restarted by this module's action plugin, so the next task logs in again with the pinned host key.
seealso:
  - module: vmctl.core.vm_state
  - module: vmctl.core.vm_info
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: Reports what would change from the snapshots recorded in the store, and changes nothing.
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Remember the freshly created VM
  vmctl.core.vm_snapshot:
    name: web
    snapshot: base

- name: Back to it, in seconds, before the next converge
  vmctl.core.vm_snapshot:
    name: web
    snapshot: base
    state: reverted

- name: Delete it
  vmctl.core.vm_snapshot:
    name: web
    snapshot: base
    state: absent
"""

RETURN = r"""
snapshot:
  description: The snapshot's record (null when it does not exist, after V(absent)).
  returned: always
  type: dict
  contains:
    name:
      description: Snapshot name.
      type: str
    ram:
      description: Whether it holds RAM and device state (taken while the VM ran).
      type: bool
    size:
      description: Bytes the overlay grew by when the snapshot was taken (RAM state included).
      type: int
    vm_state_size:
      description: Bytes of RAM and device state it holds (0 for a disk-only snapshot).
      type: int
    created_at:
      description: When it was taken (seconds since the epoch).
      type: float
snapshots:
  description: Every snapshot of the VM afterwards, oldest first (records as RV(snapshot)).
  returned: always
  type: list
  elements: dict
state:
  description: The VM's state afterwards.
  returned: always
  type: str
revert:
  description:
    - What the revert did - C(ram) (the snapshot held RAM), C(started) (the VM was stopped and was started
      for it), C(seconds) (of QEMU's load job) and C(clock_lag_seconds) (how far the guest's clock is behind).
  returned: when O(state=reverted) and not in check mode
  type: dict
  sample: {"ram": true, "started": false, "seconds": 0.8, "clock_lag_seconds": 42.5}
  contains:
    ram:
      description: Whether the snapshot held RAM (the VM runs in its state).
      type: bool
    started:
      description: Whether the VM was stopped and was started for the revert.
      type: bool
    seconds:
      description: Seconds QEMU's load job took (null for a disk-only snapshot).
      type: float
    clock_lag_seconds:
      description: How far the guest's clock is behind after a revert to a snapshot with RAM.
      type: float
      returned: when the snapshot held RAM
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_name
from ansible_collections.vmctl.core.plugins.module_utils.errors import SnapshotNotFound
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            snapshot=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent", "reverted"], default="present"),
        ),
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    name, tag, state = module.params["name"], module.params["snapshot"], module.params["state"]
    manager = VmManager()
    validate_name(tag, "snapshot name")
    handle = manager.get(name)
    result = {}
    if module.check_mode:
        exists = any(s["name"] == tag for s in handle.snapshots)
        if state == "reverted" and not exists:
            raise SnapshotNotFound("VM %s has no snapshot %s" % (name, tag), name=name, snapshot=tag)
        changed = state == "reverted" or exists != (state == "present")
    elif state == "present":
        handle, changed, _record = manager.snapshot_create(name, tag)
    elif state == "absent":
        handle, changed, _record = manager.snapshot_delete(name, tag)
    else:
        handle, changed, result["revert"] = manager.snapshot_revert(name, tag)
    record = next((s for s in handle.snapshots if s["name"] == tag), None)
    return dict(result, changed=changed, snapshot=record, snapshots=handle.snapshots,
                state=manager.state_of(handle))


if __name__ == "__main__":
    main()
