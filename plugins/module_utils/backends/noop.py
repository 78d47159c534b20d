# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backend whose operations succeed at once, for testing the layers above (never QEMU itself)."""

from __future__ import annotations

__metaclass__ = type

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.backends.base import Backend
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidState
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState


class NoopBackend(Backend):
    tag = "noop"

    def prepare(self, spec, handle):
        paths.make_vm_dir(handle.work_dir)
        return handle.replace(state=VmState.PREPARED)

    def start(self, handle):
        return handle.replace(state=VmState.RUNNING)

    def stop(self, handle, timeout=30):
        return handle.replace(state=VmState.STOPPED, pid=None)

    def suspend(self, handle):
        if handle.state != VmState.RUNNING:
            raise InvalidState("VM %s is %s, not running" % (handle.name, handle.state))
        return handle.replace(state=VmState.SUSPENDED)

    def resume(self, handle):
        if handle.state != VmState.SUSPENDED:
            raise InvalidState("VM %s is %s, not suspended" % (handle.name, handle.state))
        return handle.replace(state=VmState.RUNNING)

    def destroy(self, handle):
        paths.remove_vm_dir(handle.work_dir, handle.name)

    def state(self, handle):
        return handle.state

    def resize_disk(self, handle, size_gb):
        pass

    def guest_ip(self, handle, timeout=0):
        return "127.0.0.1"
