# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Picks the backend for a handle's tag (the guide's RouterHypervisor)."""

from __future__ import annotations

__metaclass__ = type

import platform

from ansible_collections.vmctl.core.plugins.module_utils.errors import BackendNotAvailable


def default_backend_tag():
    return "propolis" if platform.system() in ("SunOS", "illumos") else "qemu"


def backend_for(tag):
    """An instance of the backend named ``tag`` (``auto`` = this platform's)."""
    if tag in (None, "", "auto"):
        tag = default_backend_tag()
    if tag == "qemu":
        from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
        return QemuBackend()
    if tag == "propolis":
        from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis.backend import PropolisBackend
        return PropolisBackend()
    if tag == "noop":
        from ansible_collections.vmctl.core.plugins.module_utils.backends.noop import NoopBackend
        return NoopBackend()
    raise BackendNotAvailable("backend %r is not available on %s" % (tag, platform.system()), backend=tag)
