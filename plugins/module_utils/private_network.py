# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private networks: an extra NIC of a VM on a switch that only VMs of the same VMFile join.

A VM's private networks are a list of ``{"name": "lab", "address": "192.168.77.11/24"}`` (the address
is optional: without it the NIC is there and the guest configures it itself). The switch a name means
is scoped by the VMFile: its id is a digest of the VMFile's absolute path and the name, so ``lab`` of two
VMFiles are two switches; VMs made without a VMFile (``vmctl create``, the ``vm`` module without
``vmfile``) share one scope. Each NIC gets a MAC derived from the VM's name and the switch id (stable
across re-creation, distinct from the primary NIC's ``52:54:00`` range).

Every check returns the value or raises InvalidSpec (message without the VM's name: the caller says
where the value came from).
"""

from __future__ import annotations

__metaclass__ = type

import hashlib
import ipaddress
import os
import re

from ansible_collections.vmctl.core.plugins.module_utils.checks import short
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MAX_NETWORKS = 8
NAME_HINT = "A private network's name has 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit"
ADDRESS_HINT = 'Write the guest\'s address with its prefix length, e.g. address="192.168.77.11/24"'


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidSpec("invalid private network name %s" % short(name), hint=NAME_HINT)
    return name


def check_address(address):
    """``"192.168.77.11/24"`` (or IPv6 ``"fd00::11/64"``) normalized; the prefix length must be given,
    and the address must be one a host on a LAN may have."""
    if not isinstance(address, str) or "/" not in address:
        raise InvalidSpec("private network address %s has no prefix length" % short(address), hint=ADDRESS_HINT)
    try:
        iface = ipaddress.ip_interface(address.strip())
    except ValueError as err:
        raise InvalidSpec("invalid private network address %s (%s)" % (short(address), err), hint=ADDRESS_HINT)
    ip, net = iface.ip, iface.network
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local or ip.is_reserved:
        raise InvalidSpec("private network address %s is not a host address on a LAN" % address,
                          hint="Use a private range, e.g. 192.168.77.11/24 or fd00:77::11/64")
    if ip.version == 4 and net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
        example = net.network_address + (11 if net.num_addresses > 12 else 1)
        raise InvalidSpec("private network address %s is the %s address of %s"
                          % (address, "network" if ip == net.network_address else "broadcast", net),
                          hint="Pick a host address inside %s, e.g. %s/%d" % (net, example, net.prefixlen))
    return str(iface)


def parse_option(text):
    """``lab:192.168.77.11/24`` or ``lab`` (the CLI's ``--private-network``) as a private network dict."""
    if not isinstance(text, str):
        raise InvalidSpec("--private-network %s is not NAME[:ADDRESS/PREFIX]" % short(text), hint=NAME_HINT)
    name, _sep, address = text.partition(":")
    return {"name": name, "address": address or None}


def normalize(networks):
    """The checked list of ``{"name", "address"}`` (a name once per VM, at most MAX_NETWORKS)."""
    if networks is None:
        return []
    if not isinstance(networks, (list, tuple)):
        raise InvalidSpec("private_networks must be a list, got %s" % short(networks),
                          hint='Write a list of {name: lab, address: "192.168.77.11/24"}')
    if len(networks) > MAX_NETWORKS:
        raise InvalidSpec("%d private networks; at most %d are allowed" % (len(networks), MAX_NETWORKS),
                          hint="Join fewer switches")
    result, seen = [], set()
    for net in networks:
        if isinstance(net, str):
            net = parse_option(net)
        if not isinstance(net, dict) or set(net) - {"name", "address"}:
            raise InvalidSpec("a private network must be {name, address}, got %s" % short(net),
                              hint='Write {name: lab, address: "192.168.77.11/24"}')
        name = check_name(net.get("name"))
        if name in seen:
            raise InvalidSpec("private network %s is given twice" % name, hint="Join each switch once")
        seen.add(name)
        address = net.get("address")
        result.append({"name": name, "address": check_address(address) if address else None})
    return result


def scope_of(vmfile):
    """The scope of switch names: the VMFile's absolute path, or "" for VMs made without one."""
    return os.path.abspath(vmfile) if vmfile else ""


def switch_id(vmfile, name):
    """The switch's id (its folder under the data dir): a digest of the VMFile's path and the name."""
    return hashlib.sha256(("%s\0%s" % (scope_of(vmfile), name)).encode("utf-8")).hexdigest()[:12]


def mac_for(vm, switch):
    """A stable MAC for VM ``vm`` on switch id ``switch``: locally administered unicast, 52:56:xx:xx:xx:xx."""
    digest = hashlib.sha256(("%s\0%s" % (switch, vm)).encode("utf-8")).digest()
    return "52:56:" + ":".join("%02x" % b for b in digest[:4])


def attach(vm, vmfile, networks):
    """``networks`` (normalized) with each NIC's switch id and MAC: what a VM's record holds."""
    return [dict(net, switch=switch_id(vmfile, net["name"]), mac=mac_for(vm, switch_id(vmfile, net["name"])))
            for net in networks]


def host_of(address):
    """The host address of ``address`` (its prefix length left out)."""
    return ipaddress.ip_interface(address).ip


def same_host(a, b):
    """Whether two addresses (with prefixes) name the same host address."""
    return a is not None and b is not None and host_of(a) == host_of(b)


def check_taken(vm, nics, others):
    """Refuse an address that another VM already has on the same switch. ``others``: ``(name, nics)`` pairs."""
    for other, their in others:
        if other == vm:
            continue
        for mine in nics:
            for theirs in their or ():
                if theirs.get("switch") == mine["switch"] and same_host(theirs.get("address"), mine["address"]):
                    raise InvalidSpec("VM %s: address %s on private network %s is taken by VM %s"
                                      % (vm, mine["address"], mine["name"], other),
                                      hint="Give each VM on %s its own address" % mine["name"], name=vm, network=mine["name"])


def check_spec(networks, backend, has_cloud_init):
    """A VM's private networks as a whole: QEMU only, and an address is written by cloud-init."""
    if networks and backend not in ("qemu", "noop"):
        raise InvalidSpec("private networks need the qemu backend (this VM's is %s)" % backend,
                          hint="Remove the private networks, or use the qemu backend")
    static = [net["name"] for net in networks if net.get("address")]
    if static and not has_cloud_init:
        raise InvalidSpec("the address on private network %s is set by cloud-init, and this VM has no cloud-init"
                          % static[0], hint="Add cloud-init, or leave the address out and configure the NIC in the guest")


def nics_of(handle):
    """The private NICs of a recorded VM, checked and derived again from its name, VMFile and networks: a switch
    id or MAC written in vms.json is never used as a folder name or a QEMU option."""
    given = [{"name": nic.get("name"), "address": nic.get("address")} if isinstance(nic, dict) else nic
             for nic in handle.private_networks or ()]
    return attach(handle.name, handle.vmfile, normalize(given))
