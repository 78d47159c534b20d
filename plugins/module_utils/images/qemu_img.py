# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img: image inspection and copy-on-write overlays."""

from __future__ import annotations

__metaclass__ = type

import json
import os

from ansible_collections.vmctl.core.plugins.module_utils import checks
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    FormatDetectionFailed, ImageNotFound, ImageUnreadable, NotAnImageFile, OverlayFailed,
)
from ansible_collections.vmctl.core.plugins.module_utils.proc import run


def require_file(path, what="image"):
    """Raise unless ``path`` is a regular file: ImageNotFound when nothing is there, else an ImageError
    that says what it is instead (a directory, a FIFO, /dev/zero ...). Never opens it."""
    try:
        kind = checks.file_kind(path)
    except OSError as err:
        raise ImageUnreadable("%s %s cannot be read: %s" % (what, path, err.strerror), path=path)
    if kind == "missing":
        raise ImageNotFound("%s %s does not exist" % (what, path), path=path)
    if kind is not None:
        image = what.endswith("image")
        raise NotAnImageFile("%s %s is %s, not a %s" % (what, path, kind, "disk image file" if image else "regular file"),
                             path=path, hint=None if image else "Give the path of a %s file" % what)
    return path


def info(path):
    """``qemu-img info --output=json`` as a dict (format, virtual-size, actual-size, backing-filename…)."""
    require_file(path)
    # -U: read even while a running VM holds the lock on it.
    out = run(["qemu-img", "info", "-U", "--output=json", path], error=FormatDetectionFailed,
              what="qemu-img info %s" % path, timeout=60).stdout
    try:
        return json.loads(out)
    except ValueError:
        raise FormatDetectionFailed("qemu-img info %s printed no JSON" % path, path=path)


def detect_format(path):
    return info(path)["format"]


def create_overlay(base, overlay, base_format=None, size_gb=None):
    """qcow2 overlay on ``base`` (absolute path, explicit ``-F``), grown to ``size_gb`` if given."""
    base = os.path.abspath(base)
    require_file(base, "base image")
    base_format = base_format or detect_format(base)
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format, "-b", base, overlay]
    if size_gb:
        argv.append("%dG" % size_gb)
    run(argv, error=OverlayFailed, what="qemu-img create overlay %s" % overlay, timeout=120)
    return overlay


def resize(path, size_gb, image_format=None):
    """Grow ``path`` to ``size_gb`` GiB (the guest's cloud-init grows its partition on next boot)."""
    run(["qemu-img", "resize", "-q"] + (["-f", image_format] if image_format else []) + [path, "%dG" % size_gb], error=OverlayFailed,
        what="qemu-img resize %s" % path, timeout=120)
    return path


def convert_raw(source, dest, source_format=None):
    """A raw copy of ``source`` at ``dest`` (sparse where the file system allows)."""
    require_file(source)
    argv = ["qemu-img", "convert", "-q", "-f", source_format or detect_format(source), "-O", "raw", source, dest]
    run(argv, error=OverlayFailed, what="qemu-img convert %s to raw" % source, timeout=1800)
    return dest
