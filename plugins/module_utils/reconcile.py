# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Desired-state reconciliation: what the ``vm`` and ``vm_state`` modules (and roles) ask for.

Every function returns an ``Outcome``: the resulting handle, whether anything changed, the
``actions`` done (or, in check mode, that would be done) and a before/after ``diff``. Check mode
plans the same actions and touches nothing.
"""

from __future__ import annotations

__metaclass__ = type

import collections
import os

from ansible_collections.vmctl.core.plugins.module_utils.checks import check_wait_limits
from ansible_collections.vmctl.core.plugins.module_utils.guest.cloudinit import cloud_init_digest
from ansible_collections.vmctl.core.plugins.module_utils.errors import BadRecord, InvalidSpec, InvalidState
from ansible_collections.vmctl.core.plugins.module_utils.model import BOOT_SETTINGS, NEXT_START_SETTINGS, VmState

Outcome = collections.namedtuple("Outcome", "handle changed actions diff")

RUNTIME_STATES = ("running", "stopped", "suspended", "restarted")

# Settings read when QEMU starts: applied to a VM that is not running.


def spec_view(spec):
    """The comparable settings of a desired VM (same shape as ``handle_view``)."""
    view = {key: getattr(spec, key) for key in BOOT_SETTINGS}
    view.update(backend=spec.backend, image=os.path.abspath(spec.image_path), disk_gb=spec.disk_gb,
                network=spec.network.to_json(), cloud_init=cloud_init_digest(spec),
                ssh_user=spec.ssh.user if spec.ssh else None, private_networks=spec.private_networks)
    return view


def handle_view(handle):
    view = {key: getattr(handle, key) for key in BOOT_SETTINGS}
    view.update(backend=handle.backend, image=handle.image_path, disk_gb=handle.disk_gb,
                network=handle.network.to_json(), cloud_init=handle.extra.get("cloud_init_digest"),
                ssh_user=handle.ssh_user,
                private_networks=[{"name": n.get("name"), "address": n.get("address")} for n in handle.private_networks or ()])
    return view


def _plan_changes(manager, handle, spec):
    """``(boot_changes, disk_grow_to, rebuild_reasons)`` to turn ``handle`` into ``spec``."""
    have, want = handle_view(handle), spec_view(spec)
    boot = {k: want[k] for k in BOOT_SETTINGS if want[k] != have[k]}
    rebuild = []
    for key in ("backend", "image", "network", "ssh_user", "private_networks"):
        if want[key] != have[key]:
            rebuild.append("%s %r -> %r" % (key, have[key], want[key]))
    if "cloud_init_digest" in handle.extra:
        seed_changed = have["cloud_init"] != want["cloud_init"]
    else:  # a VM recorded before fingerprints: only presence can be compared
        seed_changed = handle.cloud_init != (spec.cloud_init is not None)
    if seed_changed:
        rebuild.append("cloud-init settings changed (the guest was seeded with the old ones)")
    grow = None
    if want["disk_gb"] is not None and want["disk_gb"] != have["disk_gb"]:
        current = handle.disk_gb or manager.disk_gb(handle)
        if want["disk_gb"] > current:
            grow = want["disk_gb"]
        elif want["disk_gb"] < current:
            rebuild.append("disk %s GB -> %s GB (disks cannot shrink)" % (current, want["disk_gb"]))
    return boot, grow, rebuild


def ensure_present(manager, spec, recreate=False, check_mode=False):
    """Create the VM, or bring an existing one to ``spec`` where that is possible without a new disk."""
    existing = manager.find(spec.name)
    diff = {"before": handle_view(existing) if existing else {}, "after": spec_view(spec)}
    if existing is None or existing.state == VmState.PREPARING:
        if check_mode:
            return Outcome(existing, True, ["create"], diff)
        handle = manager.create(spec)[0]
        return Outcome(handle, True, ["create"], diff)
    manager.check_owner(existing, spec)
    live = manager.live(spec.name)
    boot, grow, rebuild = _plan_changes(manager, live, spec)
    if rebuild:
        if not recreate:
            raise InvalidSpec("VM %s cannot be changed in place: %s" % (spec.name, "; ".join(rebuild)),
                              hint="Set recreate: true to destroy it and create it again (its disk is lost), "
                                   "or keep the old settings", name=spec.name, changes=rebuild)
        actions = ["destroy", "create"]
        if check_mode:
            return Outcome(live, True, actions, diff)
        manager.destroy(spec.name, staged=False)  # the new VM is made from the files staged for it
        handle = manager.create(spec)[0]
        return Outcome(handle, True, actions, diff)
    if not boot and grow is None:
        return Outcome(live, False, [], diff)
    running = live.state in VmState.LIVE
    blocking = sorted(k for k in boot if k not in NEXT_START_SETTINGS) + (["disk_gb"] if grow else [])
    if running and blocking:
        raise InvalidState("VM %s is %s; %s can only change while it is stopped"
                           % (spec.name, live.state, ", ".join(blocking)),
                           hint="Stop it first (vmctl.core.vm_state state=stopped), then apply the change",
                           name=spec.name)
    actions = ["set %s %r -> %r%s" % (k, getattr(live, k), v, " (applied at the next start)" if running else "")
               for k, v in sorted(boot.items())]
    if grow is not None:
        actions.append("resize disk to %d GB" % grow)
    if check_mode:
        return Outcome(live, True, actions, diff)
    handle = manager.reconfigure(spec.name, boot, grow)
    return Outcome(handle, True, actions, diff)


def ensure_absent(manager, name, check_mode=False):
    try:
        existing = manager.find(name)
    except BadRecord as err:  # destroyed from its name alone (see VmManager.destroy)
        if not check_mode:
            manager.destroy(name)
        return Outcome(None, True, ["destroy"], {"before": {"name": name, "bad_record": err.message}, "after": {}})
    if existing is None:
        # files staged for a VM that was never made (an up that failed after the copy) go, and that is a change
        staged = manager.has_staged(name)
        if not check_mode:
            manager.destroy(name)  # sweeps leftovers of an interrupted create
        return Outcome(None, staged, ["remove staged files"] if staged else [], {"before": {}, "after": {}})
    diff = {"before": handle_view(existing), "after": {}}
    if check_mode:
        return Outcome(existing, True, ["destroy"], diff)
    manager.destroy(name)
    return Outcome(existing, True, ["destroy"], diff)


def ensure_state(manager, name, state, stop_timeout=30, check_mode=False):
    """Bring VM ``name`` to ``state`` (running, stopped, suspended, restarted) and return only then."""
    if state not in RUNTIME_STATES:
        raise InvalidState("unknown state %r" % state, hint="Use one of: %s" % ", ".join(RUNTIME_STATES))
    found = manager.find(name)
    if found is None:
        absent = {"before": {"state": "absent"}, "after": {"state": "absent"}}
        if state == "stopped":  # a VM that does not exist is not running: nothing to do
            return Outcome(None, False, [], absent)
        if check_mode and state in ("running", "restarted"):
            # in check mode an earlier task may only have planned to create it: plan the start
            return Outcome(None, True, ["start"], dict(absent, after={"state": "running"}))
        found = manager.get(name)  # raises VmNotFound, naming the VM
    live = found.replace(state=manager.state_of(found))  # the record just read, with its live state
    current = live.state
    diff = {"before": {"state": current}, "after": {"state": "running" if state == "restarted" else state}}
    # A VM whose monitor does not answer (``unknown``: QEMU SIGSTOPped or hung) has a live process:
    # stopping it (SIGTERM, then SIGKILL of the proven pid) is the way out, never "already stopped".
    has_process = current in VmState.LIVE
    if state == "running":
        actions = {VmState.SUSPENDED: ["resume"], VmState.RUNNING: []}.get(current, ["start"])
    elif state == "stopped":
        actions = ["stop"] if has_process else []
    elif state == "suspended":
        if current not in VmState.ACTIVE:
            raise InvalidState("VM %s is %s; only a running VM can be suspended" % (name, current),
                               hint="Start it first (state=running)", name=name)
        actions = ["suspend"] if current == VmState.RUNNING else []
    else:
        actions = ["stop", "start"] if has_process else ["start"]
    if check_mode:
        return Outcome(live, bool(actions), actions, diff)
    if not actions:  # nothing to do; a record left behind by a killed run is brought up to date
        return Outcome(manager.refresh(name), False, actions, diff)
    handle = live
    for action in actions:
        if action == "stop":
            handle = manager.stop(name, stop_timeout)[0]
        else:
            handle = getattr(manager, action)(name)[0]
    return Outcome(handle, True, actions, diff)


def ssh_wait_wanted(handle, wanted=None, deadline=None, stall=None):
    """Whether to wait for the VM to accept SSH (and finish cloud-init) after a start; the limits are checked.

    ``wanted=None`` waits when the VM has what a login needs (a user, a key, a reachable network). The wait
    itself runs on the controller (``plugin_utils.ssh.readiness``), by the login that later tasks reuse.
    """
    check_wait_limits(handle.name, deadline, stall)
    reachable = bool(handle.ssh_user and handle.private_key_path and handle.network.type in ("user", "tap"))
    if wanted is False or (wanted is None and not reachable):
        return False
    if not reachable and handle.ssh_user and handle.private_key_path:  # a login, but no way to the guest
        raise InvalidState("VM %s: vmctl has no SSH route to a guest on %s networking (only user and tap)"
                           % (handle.name, handle.network.type),
                           hint="Give it no ssh block (a propolis VM on a VNIC: reach it by its address yourself), "
                                "or set wait_for_ssh: false", name=handle.name)
    if not reachable:
        raise InvalidState("VM %s has no SSH settings to wait for" % handle.name,
                           hint="Give it an ssh user and key (the ssh option of vmctl.core.vm), or set wait_for_ssh: false",
                           name=handle.name)
    return True
