#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vm_image_info
short_description: List the vmctl image cache, or inspect one image
version_added: "0.1.0"
description:
  - Without options, lists the images in the vmctl image cache (C($XDG_DATA_HOME/vmctl/images)) with
    their URL, format, sizes, checksums and the VMs that use each one as their base image.
  - With O(url) or O(path), inspects one image with C(qemu-img info) (format, virtual size, disk size,
    backing file and any other files it refers to); for a cached image, the cache metadata is added.
options:
  url:
    description:
      - URL of a cached image to inspect. An image that is not cached gives an empty RV(images) list.
    type: str
  path:
    description:
      - Path of an image file to inspect, in the cache or anywhere on the host.
    type: path
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: This module changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: N/A
seealso:
  - module: vmctl.core.vm_image
requirements:
  - qemu-img (Debian package C(qemu-utils)), to inspect an image
author:
  - vmctl.core developers (@vmctl)
"""

EXAMPLES = r"""
- name: List cached images
  vmctl.core.vm_image_info:
  register: cache

- name: Show the images no VM uses
  ansible.builtin.debug:
    msg: "{{ cache.images | selectattr('used_by', 'equalto', []) | map(attribute='path') | list }}"

- name: Inspect a local image before using it
  vmctl.core.vm_image_info:
    path: ~/images/debian-12-generic-amd64.qcow2
  register: local

- name: Refuse images with a backing file
  ansible.builtin.assert:
    that: local.images[0].external_references == []
"""

RETURN = r"""
images:
  description:
    - The cached images (sorted by file name), or the one image inspected.
    - Fields from qemu-img (RV(images[].disk_size), RV(images[].backing_file), RV(images[].external_references),
      RV(images[].dirty), RV(images[].cached)) are returned only when inspecting; cache fields (RV(images[].url),
      RV(images[].sha256), RV(images[].fetched_at) and the rest) only for cached images.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path of the image file.
      type: str
      sample: /home/user/.local/share/vmctl/images/noble-server-cloudimg-amd64-3f2a9c1d0b7e.img
    format:
      description: Image format (qemu-img).
      type: str
      sample: qcow2
    size:
      description: Size of the image file in bytes.
      type: int
      sample: 612368384
    virtual_size:
      description: Size of the virtual disk in bytes.
      type: int
      sample: 3758096384
    disk_size:
      description: Bytes the image file occupies on disk (less than RV(images[].size) when sparse).
      type: int
      sample: 612372480
    backing_file:
      description: Backing file the image refers to, or V(null).
      type: str
      sample: null
    external_references:
      description: Files other than itself the image refers to; vmctl refuses such images as base images.
      type: list
      elements: str
      sample: []
    dirty:
      description: Whether qemu-img reports the image as not cleanly closed.
      type: bool
      sample: false
    cached:
      description: Whether the image is an entry of the vmctl image cache.
      type: bool
      sample: true
    url:
      description: URL the image was downloaded from.
      type: str
      sample: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    name:
      description: Name given when it was pulled, or V(null).
      type: str
      sample: null
    sha256:
      description:
        - SHA-256 of the cached (decompressed) image.
        - The download of a compressed image does not hash the decompressed image; if no task asked for it
          since, this module hashes it (a read of the whole image) and records the digest in the cache.
      type: str
      sample: 32ab0ac8a86e8bfa7d2e1c38bfb4e6e4f3c3f1b2ba2d0f2fe1c2f1e6a1d58a7e
    fetched_at:
      description: When it was downloaded (UTC, ISO 8601).
      type: str
      sample: "2025-05-01T12:00:00Z"
    etag:
      description: ETag the server sent for it.
      type: str
      sample: '"6627f1b2-24808000"'
    last_modified:
      description: Last-Modified the server sent for it.
      type: str
      sample: Tue, 23 Apr 2024 17:38:26 GMT
    compression:
      description: Compression of the published file (V(zstd), V(xz), V(gzip)), or V(null).
      type: str
      sample: null
    source_size:
      description: Size in bytes of the file as published (compressed).
      type: int
      sample: 612368384
    source_digests:
      description: Digests of the file as published that were verified or computed (algorithm to hex).
      type: dict
      sample: {sha256: 32ab0ac8a86e8bfa7d2e1c38bfb4e6e4f3c3f1b2ba2d0f2fe1c2f1e6a1d58a7e}
    used_by:
      description: Names of the VMs whose base image it is.
      type: list
      elements: str
      sample: [web]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module


def _info(module):
    cache = VmManager().image_cache()
    url, path = module.params["url"], module.params["path"]
    if url:
        images = [cache.inspect(url)] if cache.lookup(url) is not None else []
    elif path:
        images = [cache.inspect(path)]
    else:
        images = []
        for entry in cache.list():
            data = entry.to_dict()
            data.pop("downloaded")
            images.append(data)
    return dict(changed=False, images=images)


def main():
    module = AnsibleModule(
        argument_spec=dict(url=dict(type="str"), path=dict(type="path")),
        mutually_exclusive=[("url", "path")],
        supports_check_mode=True,
    )
    run_module(module, _info)


if __name__ == "__main__":
    main()
