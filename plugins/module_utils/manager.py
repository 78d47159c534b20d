# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VmManager: the VM lifecycle over the store and the backends — what modules and the CLI call.

Operations on one VM are serialized by a per-VM lock; the store lock is held only for the short
read-modify-write, so different VMs start and stop in parallel. A crash during ``create`` leaves
the entry in ``preparing``; the next ``create`` of the same spec finishes it.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import os
import time

from ansible_collections.vmctl.core.plugins.module_utils import paths, private_network
from ansible_collections.vmctl.core.plugins.module_utils.backends.router import backend_for, default_backend_tag
from ansible_collections.vmctl.core.plugins.module_utils.guest.cloudinit import cloud_init_digest
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    BadRecord, InvalidState, MonitorNotAnswering, SnapshotNotFound, VmctlError, VmExists, VmNotFound)
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore, file_lock
from ansible_collections.vmctl.core.plugins.module_utils.model import (
    BOOT_SETTINGS, DEFAULTS, NEXT_START_SETTINGS, VmHandle, VmState, validate_name)


class VmManager:
    def __init__(self, store=None, backend_factory=backend_for):
        self.store = store or VmStore()
        self.backend_factory = backend_factory

    @contextlib.contextmanager
    def vm_lock(self, name):
        validate_name(name)
        lock_dir = paths.ensure_private_dir(os.path.join(os.path.dirname(self.store.path), "locks"))
        with file_lock(os.path.join(lock_dir, name + ".lock")):
            yield

    def backend(self, handle_or_spec):
        return self.backend_factory(handle_or_spec.backend)

    # --- queries -------------------------------------------------------------------------------
    def get(self, name):
        validate_name(name)
        return self.store.get(name)

    def find(self, name):
        validate_name(name)
        return self.store.find(name)

    def find_all(self, names):
        """``{name: handle or None}`` for ``names``, from one read of the store (a bad record raises, naming it)."""
        records = self.store.records()
        return {name: records.handle(validate_name(name)) for name in names}

    def list(self):
        """Usable VMs by name, from one read of the store; bad records are in ``self.store.bad``."""
        return self.store.list()

    def observe(self, handle):
        """``(state, problem)``: a VM whose monitor fails is ``unknown`` with the error as the problem,
        so one hung QEMU degrades that VM alone (list, status and stop still work)."""
        try:
            return self.backend(handle).state(handle), None
        except MonitorNotAnswering as err:
            return VmState.UNKNOWN, err

    def refresh(self, name):
        """The handle with its live state and pid (and the store updated if they changed: a command
        killed between QEMU's start or exit and its store write left the record behind)."""
        handle = self.get(name)
        live = self.observe(handle)[0]
        if live != VmState.UNKNOWN:
            pid = self.backend(handle).pid(handle) if live in VmState.ACTIVE else None
            if (live, pid) != (handle.state, handle.pid):
                handle = self._save(handle.replace(state=live, pid=pid))
        return handle

    def live(self, name):
        """The handle with its live state, without writing anything (for info and planning)."""
        handle = self.get(name)
        return handle.replace(state=self.observe(handle)[0])

    def live_state(self, name):
        """The VM's live state, or ``absent`` when there is no such VM (nothing is written)."""
        return self.state_of(self.find(name))

    def state_of(self, handle):
        """The live state of a handle already read (``absent`` for None; ``unknown`` when its monitor fails)."""
        return "absent" if handle is None else self.observe(handle)[0]

    def endpoint(self, handle, guest_ip_timeout=None):
        """``(host, port)`` for SSH to the VM, the one place that says it: the user network's forward on
        127.0.0.1, or a TAP guest's address on 22. Without ``guest_ip_timeout`` a TAP guest with no lease yet has
        host None; with one (0 included) the lookup waits that long and raises IpDiscoveryTimeout.
        ``(None, None)`` without networking.
        """
        if handle.network.type == "user":
            return "127.0.0.1", handle.ssh_host_port
        if handle.network.type != "tap":
            return None, None
        if guest_ip_timeout is not None:
            return self.backend(handle).guest_ip(handle, guest_ip_timeout), 22
        try:
            return self.backend(handle).guest_ip(handle, 0), 22
        except VmctlError:  # an address not yet leased is simply unknown
            return None, 22

    def ssh_endpoint(self, handle):
        """``{host, port, user, private_key, known_hosts}`` to log in to the VM, or None without SSH settings."""
        if not handle.ssh_user or handle.network.type not in ("user", "tap"):
            return None
        host, port = self.endpoint(handle)
        return {"host": host, "port": port, "user": handle.ssh_user,
                "private_key": handle.private_key_path, "known_hosts": handle.known_hosts}

    def views(self, live_state=True):
        """Every VM as plain data, from one read of the store: ``{"vms": [{name, record, state, state_error, host,
        port}], "bad": {name: message}, "store": path}``. What the inventory shows, here or on a hypervisor
        (where ``hypervisor_view`` prints it); a reader re-checks each record, as it does any store."""
        vms = []
        for name, handle in sorted(self.list().items()):
            state, state_error = handle.state, None
            if live_state:
                try:
                    state, problem = self.observe(handle)
                    state_error = str(problem) if problem else None
                except VmctlError as err:
                    state_error = str(err)
            host, port = self.endpoint(handle)
            vms.append({"name": name, "record": handle.to_json(), "state": state, "state_error": state_error,
                        "host": host, "port": port})
        return {"vms": vms, "bad": {name: str(err) for name, err in sorted(self.store.bad.items())},
                "store": self.store.path}

    def describe(self, name, handle=None):
        """Everything ``vmctl status`` shows, with the live state and how to log in (``handle``: already read)."""
        handle = self.get(name) if handle is None else handle
        state, problem = self.observe(handle)
        handle = handle.replace(state=state)
        info = handle.to_json()
        info["state_reason"] = problem.details.get("reason") if problem else None
        info["problem"] = {"message": problem.message, "hint": problem.hint} if problem else None
        info["ssh"] = self.ssh_endpoint(handle)
        info["provision_log"] = handle.provision_log
        links = self.backend(handle).private_links(handle) if state in VmState.ACTIVE and handle.private_networks else {}
        info["private_networks"] = [dict(nic, link=links.get(nic.get("name"))) for nic in handle.private_networks or ()]
        return info

    # --- lifecycle -------------------------------------------------------------------------------
    def create(self, spec):
        """Prepare the VM if it does not exist; returns ``(handle, created)``."""
        backend = self.backend(spec)
        with self.vm_lock(spec.name):
            with self.store.transaction() as vms:
                existing = vms.get(spec.name)
                if existing is not None:
                    self.check_owner(existing, spec)
                    if existing.state != VmState.PREPARING:
                        return existing, False
                handle = existing or self._new_handle(backend, spec, self.store.vm_dir(spec.name))
                handle = backend.allocate(spec, handle, vms)
                vms[spec.name] = handle
            try:
                handle = backend.prepare(spec, handle)
                handle.extra["cloud_init_digest"] = cloud_init_digest(spec)
            except BaseException:
                if existing is None:  # leave nothing half-made behind a failed create
                    self.store.remove(spec.name)
                    with contextlib.suppress(VmctlError):  # a refused removal is not the error to report
                        paths.remove_vm_dir(handle.work_dir, spec.name)
                raise
            return self._save(handle), True

    @staticmethod
    def check_owner(existing, spec):
        """A VM made from one VMFile is not silently taken over by another with the same VM name."""
        if existing.vmfile and spec.vmfile and os.path.abspath(existing.vmfile) != os.path.abspath(spec.vmfile):
            raise VmExists("VM %r already exists, created from %s (not %s)" % (spec.name, existing.vmfile, spec.vmfile),
                           hint="Rename the VM in one of the VMFiles, or destroy the other one first",
                           name=spec.name, vmfile=existing.vmfile)

    def reconfigure(self, name, settings, disk_gb=None):
        """Change boot settings (vcpus, memory_mb, ...) and grow the disk of a VM that is not running."""
        def change(backend, handle):
            if "port_forwards" in settings:
                self._check_new_forwards(handle, settings["port_forwards"])
            if handle.state in VmState.LIVE and (set(settings) - set(NEXT_START_SETTINGS) or disk_gb is not None):
                # unknown too: a hung QEMU still holds its disk
                raise InvalidState("VM %s is %s; stop it before changing %s" % (name, handle.state, ", ".join(sorted(settings))),
                                   hint="Stop it first (vmctl.core.vm_state state=stopped)", name=name)
            if disk_gb is not None:
                backend.resize_disk(handle, disk_gb)
                settings["disk_gb"] = disk_gb
            return handle.replace(**settings)
        return self._operate(name, change)[0]

    def _check_new_forwards(self, handle, wanted):
        """Forwards a VM is given are free: not another VM's, and bindable (a running VM's own current forwards
        are held by its QEMU and skipped)."""
        from ansible_collections.vmctl.core.plugins.module_utils import forwards
        new = [f for f in wanted if handle.state not in VmState.LIVE or f not in handle.port_forwards]
        with self.store.transaction() as known:
            forwards.check_free(handle.name, new, known)

    def image_users(self):
        """``{name: base image path}`` of every VM, from one read of the store (what the image cache protects)."""
        return {name: handle.image_path for name, handle in self.list().items()}

    def image_cache(self, root=None):
        """The image cache, knowing which images the VMs are made from (``used_by``)."""
        from ansible_collections.vmctl.core.plugins.module_utils.images.cache import ImageCache
        return ImageCache(root, users=self.image_users)

    def disk_gb(self, handle):
        """The size of the VM's disk in GB as its backend reads it (0 when it cannot be read)."""
        return self.backend(handle).disk_gb(handle)

    @staticmethod
    def _new_handle(backend, spec, work_dir):
        return VmHandle(
            id=backend.new_id(), name=spec.name, backend=spec.backend, work_dir=work_dir, disk_gb=spec.disk_gb,
            network=spec.network, state=VmState.PREPARING,
            ssh_user=spec.ssh.user if spec.ssh else None,
            private_key_path=spec.ssh.private_key_path if spec.ssh else None,
            host_key_checking=spec.ssh.host_key_checking if spec.ssh else DEFAULTS["host_key_checking"],
            vmfile=os.path.abspath(spec.vmfile) if spec.vmfile else None, created_at=time.time(),
            private_networks=private_network.attach(spec.name, spec.vmfile, spec.private_networks),
            **{key: getattr(spec, key) for key in BOOT_SETTINGS})

    def _save(self, handle):
        """Write ``handle`` back unless the VM was destroyed meanwhile."""
        with self.store.transaction() as vms:
            if handle.name not in vms:
                raise VmNotFound("VM %r disappeared from the store while it was being changed" % handle.name, name=handle.name)
            vms[handle.name] = handle
        return handle

    def _operate(self, name, operation):
        with self.vm_lock(name):
            handle = self.get(name)
            before = self.observe(handle)[0]
            updated = operation(self.backend(handle), handle.replace(state=before))
            return self._save(updated), before

    def start(self, name):
        """Boot the VM; returns ``(handle, previous_state)``. A running VM is left alone.

        Before a VM that is not running boots, its backend may change what it allocated (``before_start``:
        QEMU moves a VM whose SSH forward port another program took to a free one, recorded in the store).
        """
        def boot(backend, handle):
            if handle.state not in VmState.ACTIVE:
                handle = backend.before_start(handle, self.store.transaction)
            return backend.start(handle)
        return self._operate(name, boot)

    def stop(self, name, timeout=30):
        return self._operate(name, lambda b, h: b.stop(h, timeout))

    def suspend(self, name):
        return self._operate(name, lambda b, h: b.suspend(h))

    def resume(self, name):
        return self._operate(name, lambda b, h: b.resume(h))

    def destroy(self, name, staged=True):
        """Stop and remove everything; returns the old handle, or None when there was no such VM.

        A VM whose record is unusable (BadRecord) is removed too, from what its name alone gives: the backend
        ends the process that proves to run from the VM's own directory, the directory and the entry go, and
        the BadRecord is returned instead of a handle. Nothing named in the bad record is touched.
        With ``staged``, the files a controller staged here for the VM go too (``has_staged``); a VM made
        again at once from them (``recreate``) keeps them.
        """
        with self.vm_lock(name):
            try:
                handle = self.find(name)
            except BadRecord as err:
                work_dir = self.store.vm_dir(name)
                self.backend_factory(default_backend_tag()).reap(work_dir)
                paths.remove_vm_dir(work_dir, name)
                self.store.remove(name)
                handle = err
            else:
                if handle is None:
                    paths.remove_vm_dir(self.store.vm_dir(name), name)  # leftovers of a crashed create
                else:
                    self.backend(handle).destroy(handle)
                    self.store.remove(name)
            if staged:
                paths.remove_staged_dir(self.store.data_dir, name)
            return handle

    def has_staged(self, name):
        """Whether a controller staged files here for VM ``name`` (``<data_dir>/staged/<name>``, see vmfile/staging.py)."""
        return os.path.lexists(paths.staged_dir_in(self.store.data_dir, validate_name(name)))

    def record_provision(self, name, digest, completed):
        """Record that VM ``name``'s provision plan ``digest`` started (``completed`` False) or completed."""
        with self.store.transaction() as vms:
            if name not in vms:
                raise VmNotFound("VM %r is not in the store; it cannot be provisioned" % name, name=name)
            vms[name] = vms[name].replace(provision={"digest": digest, "completed": bool(completed)})
            return vms[name]

    # --- snapshots (in the VM's own disk; the store keeps their records for list, status and vm_info) -----
    def snapshot_create(self, name, tag):
        """Take snapshot ``tag`` unless the VM has it; returns ``(handle, changed, record)``."""
        def create(backend, handle, live):
            if tag in live:
                return handle, False, None
            return handle, True, backend.snapshot_create(handle, tag)
        return self._snapshot_op(name, tag, create)

    def snapshot_revert(self, name, tag):
        """Return the VM to snapshot ``tag``; returns ``(handle, True, details)`` (details: ram, started,
        seconds, clock_lag_seconds: how far the guest's clock is behind, as nothing corrects it)."""
        def revert(backend, handle, live):
            if tag not in live:
                raise SnapshotNotFound("VM %s has no snapshot %s" % (name, tag), hint="Run 'vmctl snapshot list %s' to see "
                                       "its snapshots" % name, name=name, snapshot=tag)
            handle, details = backend.snapshot_revert(handle, tag, live[tag]["ram"])
            if details["ram"]:  # the guest resumes with the clock it had when the snapshot was taken
                details["clock_lag_seconds"] = round(max(time.time() - live[tag]["created_at"], 0), 1)
            return handle, True, details
        return self._snapshot_op(name, tag, revert)

    def snapshot_delete(self, name, tag):
        """Delete snapshot ``tag`` if the VM has it; returns ``(handle, changed, None)``."""
        def delete(backend, handle, live):
            if tag not in live:
                return handle, False, None
            backend.snapshot_delete(handle, tag)
            return handle, True, None
        return self._snapshot_op(name, tag, delete)

    def _snapshot_op(self, name, tag, operation):
        """Run ``operation(backend, handle, snapshots the disk holds)`` under the VM's lock, then record the
        snapshots the disk holds afterwards (so a run killed between the two converges on the next one)."""
        validate_name(tag, "snapshot name")
        with self.vm_lock(name):
            handle = self.get(name)
            backend = self.backend(handle)
            handle, changed, detail = operation(backend, handle, backend.snapshot_list(handle))
            new = changed and detail is not None and "size" in detail  # detail is the record of a snapshot just taken
            sizes = {s["name"]: s.get("size", 0) for s in handle.snapshots}
            if new:
                sizes[tag] = detail["size"]
            records = [dict(taken, name=snap, size=sizes.get(snap, 0))
                       for snap, taken in sorted(backend.snapshot_list(handle).items(), key=lambda kv: kv[1]["created_at"])]
            handle = self._save(handle.replace(snapshots=records))
            if new:
                detail = next((r for r in records if r["name"] == tag), detail)
            return handle, changed, detail

    def open_console(self, name):
        """A connected stream on the VM's serial console (see ``Backend.open_console``)."""
        handle = self.get(name)
        return self.backend(handle).open_console(handle)
