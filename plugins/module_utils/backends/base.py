# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one backend contract every hypervisor implements (the guide's ``Hypervisor`` trait)."""

from __future__ import annotations

__metaclass__ = type

import collections

# kind: "unix" (path), "websocket" (url) or "none"
ConsoleEndpoint = collections.namedtuple("ConsoleEndpoint", "kind address")


class Backend:
    """prepare / start / stop / suspend / resume / destroy / state / guest_ip / console_endpoint.

    ``allocate`` is called inside the store's lock with every known handle, so that what it picks
    (SSH port, MAC address) is unique among VMs; ``prepare`` then creates the files.
    """

    tag = None

    def allocate(self, spec, handle, known):
        return handle

    def prepare(self, spec, handle):
        raise NotImplementedError

    def start(self, handle):
        raise NotImplementedError

    def stop(self, handle, timeout=30):
        raise NotImplementedError

    def suspend(self, handle):
        raise NotImplementedError

    def resume(self, handle):
        raise NotImplementedError

    def destroy(self, handle):
        raise NotImplementedError

    def state(self, handle):
        raise NotImplementedError

    def guest_ip(self, handle, timeout=0):
        raise NotImplementedError

    def console_endpoint(self, handle):
        return ConsoleEndpoint("none", None)
