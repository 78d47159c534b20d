# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Internal snapshots in a QEMU VM's own overlay (overlay.qcow2).

A running (or suspended) VM is snapshotted live, RAM and device state included, through QMP's
``snapshot-save``/``snapshot-load``/``snapshot-delete`` jobs: the job is polled until it concludes, and
its error is reported. The ``devices`` list names the overlay's node alone and the RAM goes into the same
node (``vmstate``), so the read-only seed ISO (and any other drive) is neither snapshotted nor in the way.
A stopped VM's snapshots are disk-only, through ``qemu-img snapshot``.
"""

from __future__ import annotations

__metaclass__ = type

import itertools
import os
import time

from ansible_collections.vmctl.core.plugins.module_utils.errors import QmpError, SnapshotFailed
from ansible_collections.vmctl.core.plugins.module_utils.proc import run

JOB_TIMEOUT = 600.0  # seconds for one snapshot job (a few GiB of RAM under TCG on a busy host)
_job_ids = itertools.count(1)


def overlay_node(qmp, overlay):
    """The node name of the qcow2 node that is ``overlay`` (auto-generated names included)."""
    for node in qmp.execute("query-named-block-nodes", {"flat": True}) or []:
        if node.get("drv") == "qcow2" and os.path.realpath(node.get("file", "")) == os.path.realpath(overlay):
            return node["node-name"]
    raise SnapshotFailed("QEMU has no qcow2 node for the VM's overlay %s" % overlay,
                         hint="Stop and start the VM, then try again")


def run_job(qmp, command, arguments, what, timeout=JOB_TIMEOUT):
    """Start job ``command`` and poll ``query-jobs`` until it concludes; raise its error. Returns seconds taken."""
    job_id = "vmctl-%s-%d-%d" % (command, os.getpid(), next(_job_ids))
    begin = time.monotonic()
    qmp.execute(command, dict(arguments, **{"job-id": job_id}))
    while True:
        jobs = {job.get("id"): job for job in qmp.execute("query-jobs") or []}
        job = jobs.get(job_id)
        if job is None:
            raise SnapshotFailed("%s: QEMU lost job %s" % (what, job_id))
        if job.get("status") == "concluded":
            qmp.execute("job-dismiss", {"id": job_id})
            if job.get("error"):
                raise SnapshotFailed("%s failed: %s" % (what, job["error"]), job=command)
            return time.monotonic() - begin
        if time.monotonic() - begin > timeout:
            try:
                qmp.execute("job-cancel", {"id": job_id})
            except QmpError:
                pass
            raise SnapshotFailed("%s did not finish within %ds (job %s is %s)" % (what, timeout, job_id, job.get("status")),
                                 hint="The host may be overloaded; try again")
        time.sleep(0.1)


def live_list(qmp, overlay):
    """The overlay's snapshots as QEMU sees them: ``{tag: {"ram": bool, "vm_state_size", "created_at"}}``."""
    for device in qmp.execute("query-block") or []:
        image = (device.get("inserted") or {}).get("image") or {}
        if image.get("format") == "qcow2" and os.path.realpath(image.get("filename", "")) == os.path.realpath(overlay):
            return _by_tag(image.get("snapshots") or [])
    return {}


def offline_list(overlay):
    """The overlay's snapshots read with qemu-img (the VM is not running)."""
    from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
    return _by_tag(qemu_img.info(overlay).get("snapshots") or [])


def _by_tag(snapshots):
    return {s["name"]: {"ram": s.get("vm-state-size", 0) > 0, "vm_state_size": s.get("vm-state-size", 0),
                        "created_at": s.get("date-sec", 0) + s.get("date-nsec", 0) / 1e9} for s in snapshots}


def offline(overlay, flag, tag, what):
    """``qemu-img snapshot -c|-a|-d TAG overlay`` (the VM is stopped: qemu-img takes the image's lock)."""
    run(["qemu-img", "snapshot", flag, tag, overlay], error=SnapshotFailed, what=what, timeout=300)


def allocated(path):
    """Bytes the file takes on disk."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
