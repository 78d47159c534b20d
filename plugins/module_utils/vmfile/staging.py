# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which files of a VM record are on the controller, and where they are staged on another hypervisor.

A VMFile names its files on the controller; a VM on another hypervisor is made there, by modules that read
those files there. ``LOCAL_FILES`` is the one list of the record fields that name such a file: the local
image, the direct-boot kernel and initrd, cloud-init's ``user_data`` and ``ssh_key``, and the ssh block's
``private_key``. ``staged(record, data_dir)`` says where each goes on the hypervisor - one folder per field in
``<data_dir>/staged/<vm>/`` - and returns the record with those fields naming the copies, for the ``vm`` module
there. The ``vm_up`` role copies them (``ansible.builtin.copy``, through the ``vmctl.core.staged`` filter).

Not staged: ``shares`` are folders on the hypervisor (a two-way share cannot be a copy), an ``image_url`` is
downloaded on the hypervisor, and provision ``script``/``source`` files are read on the controller, which runs
the steps through the hypervisor. The VM's ``destroy`` removes its staged folder (``paths.remove_staged_dir``).
"""

from __future__ import annotations

__metaclass__ = type

import copy
import os

from ansible_collections.vmctl.core.plugins.module_utils import checks, paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec

# (the file's VMFile node, its place in the record: the block or None, the field)
LOCAL_FILES = (
    ("image", None, "image"),
    ("kernel", None, "kernel"),
    ("initrd", None, "initrd"),
    ("user-data", "cloud_init", "user_data"),
    ("ssh-key", "cloud_init", "ssh_key"),
    ("private-key", "ssh", "private_key"),
)
# The VM's disk is an overlay on its base image: the copy of a VM that exists is never replaced (a changed image
# reaches the hypervisor when the VM is made again). The others are read again when they change (the kernel and
# initrd at each start; user-data and the keys make a new seed, which the vm module reports).
KEPT = ("image",)
FILE_MODE = "0600"  # every copy is the hypervisor user's alone (the private key among them); folders are 0700
FOLDER_MODE = "0700"


def local_files(record):
    """``[(node, block, field, path)]`` for each file ``record`` names on the controller, in ``LOCAL_FILES`` order.

    A block that is not a dict (``cloud_init: false``) names no file; an empty field names none either.
    """
    if not isinstance(record, dict):
        raise InvalidSpec("a VM record is a dict, got %s" % checks.short(record),
                          hint="Pass one item of the vmfile module's vms list")
    found = []
    for node, block, field in LOCAL_FILES:
        holder = record.get(block) if block else record
        path = holder.get(field) if isinstance(holder, dict) else None
        if path:
            found.append((node, block, field, os.path.abspath(os.path.expanduser(path))))
    return found


def staged(record, data_dir, made=False):
    """Where ``record``'s controller files go on a hypervisor whose vmctl data directory is ``data_dir``.

    Returns ``{"folder": <data_dir>/staged/<vm>, "files": [{"node", "src", "folder", "path", "mode", "folder_mode",
    "force"}],
    "record": the record with each of those fields naming its copy}``. Each file keeps its name, in a folder of
    its own named after its node (``image/disk.qcow2``, ``user-data/cloud.yaml``): two files of one name never
    meet. ``force`` is false for a file in ``KEPT`` when the VM is ``made`` already: a copy there stays as it is.
    A record naming no controller file gets ``files: []`` and itself back (a copy).
    """
    name = record.get("name") if isinstance(record, dict) else None
    checks.validate_name(name)
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise InvalidSpec("the hypervisor's data directory must be an absolute path, got %s" % checks.short(data_dir),
                          hint="Give the data_dir that vmctl.core.vm_info returns on that hypervisor")
    folder = paths.staged_dir_in(data_dir, name)
    out = copy.deepcopy(record)
    files = []
    for node, block, field, src in local_files(record):
        where = os.path.join(folder, node)
        path = os.path.join(where, os.path.basename(src))
        (out[block] if block else out)[field] = path
        files.append({"node": node, "src": src, "folder": where, "path": path, "mode": FILE_MODE, "folder_mode": FOLDER_MODE,
                      "force": not (made and node in KEPT)})
    return {"folder": folder, "files": files, "record": out}
