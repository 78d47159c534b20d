#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vm_image
short_description: Download a VM base image into the vmctl image cache, or remove it
version_added: "0.1.0"
description:
  - With O(state=present), makes sure the disk image published at O(url) is in the vmctl image cache
    (C($XDG_DATA_HOME/vmctl/images), by default C(~/.local/share/vmctl/images)) and returns its path,
    ready to be the base image of VMs (which get a copy-on-write overlay on it).
  - The cache is keyed by URL, so a changed URL never reuses an old image. An image enters the cache
    only when it is complete and verified; an interrupted download is resumed on the next run with an
    HTTP C(Range) request (and started over if the file changed on the server).
  - Images compressed with zstd, xz or gzip (detected by their magic bytes, or a C(.zst), C(.zstd), C(.xz),
    C(.gz) suffix) are decompressed while they download; the cache holds the decompressed image.
  - Every image is checked with C(qemu-img info); an image that refers to other files (a qcow2 backing
    file or external data file, VMDK extents elsewhere) is refused, because a VM booted on it could read
    those host files.
  - With O(state=absent), removes the image of O(url) (or the cached file O(path)) from the cache. It is
    refused while a VM registered with vmctl uses the image as its base, unless O(force=true).
  - Two tasks pulling the same URL at once (for example on parallel forks) download it once; the second
    waits and finds it cached.
options:
  url:
    description:
      - HTTP or HTTPS URL of the image.
      - Required with O(state=present). With O(state=absent), give O(url) or O(path).
    type: str
  path:
    description:
      - With O(state=absent), the image file in the cache to remove, as returned in RV(path) or by
        M(vmctl.core.vm_image_info). Files outside the cache are never removed.
    type: path
  name:
    description:
      - Readable part of the cached file name (a hash of the URL is always added), used when the image is
        first downloaded. Defaults to the file name in the URL without its compression suffix.
      - 1 to 63 characters from V(A-Z a-z 0-9 . _ -), starting with a letter or digit.
    type: str
  checksum:
    description:
      - Expected checksum of the file as published (of the compressed bytes for a compressed image),
        verified before the image enters the cache. A mismatch is an error and leaves nothing behind.
      - V(sha256:<hex>) or V(sha512:<hex>); or the URL of a checksum file in C(SHA256SUMS) format (GNU or BSD
        lines, as published next to cloud images), optionally prefixed with V(sha256:) or V(sha512:); the
        line for the image's file name is used.
      - A cached image that does not match the checksum is downloaded again, as is one published compressed
        and pulled without a checksum before (its compressed bytes were not kept, so cannot be checked).
    type: str
  state:
    description:
      - V(present) downloads the image unless it is cached; V(absent) removes it from the cache.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=present), download the image even if it is cached (refused while a VM uses it).
      - With O(state=absent), remove the image even while VMs use it (their overlays then lose their base).
    type: bool
    default: false
  validate_certs:
    description:
      - Verify the server's TLS certificate. Only set to V(false) on networks you trust.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the server to accept the connection and to answer with its headers.
    type: int
    default: 30
  download_timeout:
    description:
      - Overall deadline of the download, in seconds. The download fails when it takes longer, and leaves
        nothing in the cache (not even the partial file).
      - Default is the file's size at 256 KB/s, at least 600 seconds (3600 when the server does not give the size).
    type: int
  stall_timeout:
    description:
      - The download fails when less than 64 KB arrive in this many seconds (a server that trickles or goes silent),
        and leaves nothing in the cache (not even the partial file).
    type: int
    default: 60
  max_image_size:
    description:
      - Largest image accepted on disk, after decompression, in bytes. A qcow2 image is also bounded by the virtual
        size its header declares. Free space is checked as the image is written.
      - Breaking the bound, or filling the disk, fails the task and leaves nothing in the cache.
    type: int
    default: 68719476736
  progress_file:
    description:
      - Internal, set by the action plugin of this module; leave it unset. A file to which the download appends a
        progress line (share, size, rate) about every 5 seconds, for the action plugin to show while the task runs.
    type: path
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Nothing is downloaded or removed; C(changed) tells whether it would be. A checksum file is fetched.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Runs on the hypervisor host (delegate it there when the play targets VMs).
  - A download interrupted by a network failure, Ctrl-C or a killed process leaves only a hidden partial
    file, never a cache entry; running the task again resumes it.
requirements:
  - qemu-img (Debian package C(qemu-utils))
  - Python package C(requests)
  - Python package C(zstandard), for zstd-compressed images
seealso:
  - module: vmctl.core.vm_image_info
author:
  - vmctl.core developers (@vmctl)
"""

EXAMPLES = r"""
- name: Cache the Ubuntu 24.04 cloud image
  vmctl.core.vm_image:
    url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    checksum: https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
  register: ubuntu

- name: Cache a zstd-compressed image with a known digest, under a chosen name
  vmctl.core.vm_image:
    url: https://images.example.org/debian-12-generic-amd64.qcow2.zst
    name: debian-12.qcow2
    checksum: sha256:4f2c8b7a5f0e3d1c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2
    timeout: 60

- name: Remove an image from the cache (fails while a VM uses it)
  vmctl.core.vm_image:
    url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    state: absent
"""

RETURN = r"""
path:
  description: Absolute path of the cached image (with O(state=absent), of the image removed).
  returned: success, except with O(state=absent) when the image was not cached
  type: str
  sample: /home/user/.local/share/vmctl/images/noble-server-cloudimg-amd64-3f2a9c1d0b7e.img
url:
  description: URL the image was downloaded from.
  returned: success, except with O(state=absent) when the image was not cached
  type: str
  sample: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
format:
  description: Image format detected by qemu-img (V(null) in check mode when the image would be downloaded).
  returned: O(state=present)
  type: str
  sample: qcow2
size:
  description: Size of the cached image file in bytes (decompressed).
  returned: O(state=present)
  type: int
  sample: 612368384
virtual_size:
  description: Size of the virtual disk in bytes.
  returned: O(state=present)
  type: int
  sample: 3758096384
sha256:
  description:
    - SHA-256 of the cached (decompressed) image file (V(null) in check mode when the image would be downloaded).
    - The download of a compressed image does not hash the decompressed image; this module then hashes it
      (a read of the whole image) and records the digest in the cache, so that later tasks get it at no cost.
  returned: O(state=present)
  type: str
  sample: 32ab0ac8a86e8bfa7d2e1c38bfb4e6e4f3c3f1b2ba2d0f2fe1c2f1e6a1d58a7e
compression:
  description: Compression of the published file (V(zstd), V(xz), V(gzip)), or V(null).
  returned: O(state=present)
  type: str
  sample: zstd
downloaded:
  description: Whether the image was downloaded by this task (or would be, in check mode).
  returned: O(state=present)
  type: bool
  sample: true
used_by:
  description: VMs whose base image it is (with O(state=absent) and O(force=true), the VMs left without their base).
  returned: O(state=absent) when the image was cached
  type: list
  elements: str
  sample: []
actions:
  description: What the task did, or would do in check mode.
  returned: always
  type: list
  elements: str
  sample: [download]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils import progress
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module

_PRESENT_FIELDS = ("path", "url", "format", "size", "virtual_size", "sha256", "compression", "downloaded")


def _ensure(module):
    p = module.params
    cache = VmManager().image_cache()
    if p["state"] == "present":
        with progress.ProgressFile(p["progress_file"]) as report:
            image = cache.pull(p["url"], checksum=p["checksum"], name=p["name"], force=p["force"], timeout=p["timeout"],
                               validate_certs=p["validate_certs"], dry_run=module.check_mode,
                               progress=progress.DownloadProgress("downloading %s" % p["url"], report),
                               deadline=p["download_timeout"], stall_timeout=p["stall_timeout"], max_size=p["max_image_size"])
        data = image.to_dict(digest=not module.check_mode)
        result = dict((key, data[key]) for key in _PRESENT_FIELDS)
        result.update(changed=image.downloaded, actions=["download"] if image.downloaded else [])
        return result
    removed = cache.remove(p["url"] or p["path"], force=p["force"], dry_run=module.check_mode)
    if removed is None:
        return dict(changed=False, actions=[])
    return dict(changed=True, actions=["remove"], path=removed.path, url=removed.url, used_by=removed.used_by)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str"),
            path=dict(type="path"),
            name=dict(type="str"),
            checksum=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            download_timeout=dict(type="int"),
            stall_timeout=dict(type="int", default=60),
            max_image_size=dict(type="int", default=68719476736),
            progress_file=dict(type="path"),
        ),
        required_if=[("state", "present", ("url",)), ("state", "absent", ("url", "path"), True)],
        mutually_exclusive=[("url", "path")],
        supports_check_mode=True,
    )
    run_module(module, _ensure)


if __name__ == "__main__":
    main()
