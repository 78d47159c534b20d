# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud-init network-config (version 2) for a VM with private networks.

A seed's network-config replaces cloud-init's fallback (DHCP on the first NIC), so the primary NIC is
listed too, with DHCP, matched by its MAC. Each private NIC with an address gets it statically, matched
by its MAC: no gateway, no routes, no DNS, so nothing but the switch's own subnet goes over it.
cloud-init (20.1 and later) finds the interface's name by the MAC; the NIC keeps the name the kernel gave it.
"""

from __future__ import annotations

__metaclass__ = type

from ansible_collections.vmctl.core.plugins.module_utils.errors import CloudInitError

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False


def build(primary_mac, primary_dhcp, private_nics):
    """The network-config text, or None when no private NIC has an address (cloud-init's fallback then stays).

    ``primary_mac``: the MAC of the user/tap NIC (DHCP when ``primary_dhcp``); ``private_nics``: the record's
    ``[{"name", "address", "mac", "switch"}]``.
    """
    static = [nic for nic in private_nics or () if nic.get("address")]
    if not static:
        return None
    if not HAS_YAML:
        raise CloudInitError("cannot build network-config: the Python 'PyYAML' package is missing", hint="pip install PyYAML")
    ethernets = {}
    if primary_dhcp and primary_mac:
        ethernets["primary"] = {"match": {"macaddress": primary_mac}, "dhcp4": True}
    for nic in static:
        ethernets["private-%s" % nic["name"]] = {"match": {"macaddress": nic["mac"]}, "addresses": [nic["address"]],
                                                 "dhcp4": False, "dhcp6": False}
    return yaml.safe_dump({"version": 2, "ethernets": ethernets}, default_flow_style=False, sort_keys=False)
