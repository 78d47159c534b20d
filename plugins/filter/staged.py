# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
---
name: staged
short_description: Where a VM record's controller files go on its hypervisor
version_added: "0.1.0"
description:
  - Lists the files that one VM record of M(vmctl.core.vmfile) names on the controller - the local image,
    the direct-boot kernel and initrd, cloud-init's user-data and ssh-key, and the ssh block's private-key - with
    where each is staged on another hypervisor, C(<data_dir>/staged/<vm>/<node>/<file name>), and returns the record
    with those fields naming the copies, for M(vmctl.core.vm) there.
  - Shares (folders on the hypervisor), an image URL (downloaded on the hypervisor) and provision files (read on the
    controller) are not staged.
  - The C(vm_up) role copies the files with M(ansible.builtin.copy); M(vmctl.core.vm) with O(vmctl.core.vm#module:state=absent)
    removes the folder.
options:
  _input:
    description: One VM record (an item of the C(vms) list that M(vmctl.core.vmfile) returns).
    type: dict
    required: true
  data_dir:
    description: The vmctl data directory of the hypervisor (RV(vmctl.core.vm_info#module:data_dir) there), an absolute path.
    type: str
    required: true
  made:
    description:
      - Whether the VM exists on the hypervisor already. Its disk is an overlay on its base image, so the copy of the
        image is then never replaced (C(force) V(false)); a changed image reaches the hypervisor when the VM is made again.
    type: bool
    default: false
author:
  - vmctl.core developers (@vmctl)
"""

EXAMPLES = r"""
- name: Stage the files of a VM on its hypervisor
  ansible.builtin.copy:
    src: "{{ item.src }}"
    dest: "{{ item.folder }}/"
    mode: "{{ item.mode }}"
    force: "{{ item.force }}"
    directory_mode: "{{ item.folder_mode }}"
  loop: "{{ (vm_record | vmctl.core.staged(hv_info.data_dir)).files }}"
  delegate_to: hv1

- name: Make it there from the copies
  vmctl.core.vm:
    record: "{{ (vm_record | vmctl.core.staged(hv_info.data_dir)).record }}"
  delegate_to: hv1
"""

RETURN = r"""
_value:
  description: Where the record's controller files go, and the record naming them there.
  type: dict
  contains:
    folder:
      description: The VM's staging folder on the hypervisor, C(<data_dir>/staged/<vm>).
      type: str
    files:
      description: >-
        One entry per file, each with C(node) (its VMFile node, e.g. V(user-data)), C(src) (its path on the
        controller), C(folder) (its own folder on the hypervisor), C(path) (the copy's path), C(mode), C(folder_mode)
        (of the folders that hold the copies) and C(force)
        (V(false) keeps a copy there as it is).
      type: list
      elements: dict
    record:
      description: The record with each staged field naming its copy.
      type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.vmfile.staging import staged as _staged


def staged(record, data_dir, made=False):
    try:
        return _staged(record, data_dir, made=bool(made))
    except VmctlError as err:
        raise AnsibleFilterError("%s%s" % (err.message, " (%s)" % err.hint if err.hint else ""))


class FilterModule:
    def filters(self):
        return {"staged": staged}
