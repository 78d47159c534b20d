# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Port forwards from the host to a user-network guest: the checked shape, who holds a host port, the warnings.

A forward is ``{"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}``. Every front-end (VMFile,
the ``vm`` module, ``vmctl create --forward``) gives its forwards to ``check_forwards``; the backend turns them into
QEMU's ``hostfwd`` (backends/qemu/forwards.py). A host port is taken when another VM of the store forwards it (or
has its SSH forward there), or when this host refuses to bind it ("another program").
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import errno
import ipaddress
import re
import socket

from ansible_collections.vmctl.core.plugins.module_utils.checks import short
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, PortInUse

PROTOCOLS = ("tcp", "udp")
LOOPBACK = "127.0.0.1"
PORTS = (1, 65535)
_SPEC = re.compile(r"(?:(?P<address>[0-9.]+):)?(?P<host>[0-9]+):(?P<guest>[0-9]+)(?:/(?P<protocol>[a-z]+))?")


def check_port(label, value):
    """A TCP/UDP port number (1-65535)."""
    if isinstance(value, bool) or not isinstance(value, int) or not PORTS[0] <= value <= PORTS[1]:
        raise InvalidSpec("%s port must be a whole number from 1 to 65535, got %s" % (label, short(value)),
                          hint="Write a port number without quotes, e.g. host=8080 guest=80")
    return value


def check_address(value):
    """The host address a forward listens on: one IPv4 address (QEMU's hostfwd binds IPv4)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise InvalidSpec("forward address must be an IPv4 address of this host, got %s" % short(value),
                          hint='Leave it out for 127.0.0.1 (only this host), or write e.g. address="0.0.0.0" (every interface)')


def check_forward(value):
    """One forward as a dict with its defaults filled in (protocol tcp, address 127.0.0.1)."""
    if not isinstance(value, dict):
        raise InvalidSpec("a port forward must be a dict of host, guest, protocol and address, got %s" % short(value),
                          hint="Write e.g. {host: 8080, guest: 80}")
    unknown = sorted(set(value) - {"host", "guest", "protocol", "address"})
    if unknown:
        raise InvalidSpec("unknown port forward setting %s" % ", ".join(unknown), hint="Use host, guest, protocol and address")
    protocol = value.get("protocol") or "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidSpec("unknown forward protocol %s" % short(protocol), hint="Use tcp (the default) or udp")
    return {"host": check_port("host", value.get("host")), "guest": check_port("guest", value.get("guest")),
            "protocol": protocol, "address": check_address(value.get("address") or LOOPBACK)}


def check_forwards(values):
    """The checked forwards of one VM, in their order; one host port (per protocol and address) is forwarded once."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InvalidSpec("port_forwards must be a list of forwards, got %s" % short(values), hint="Write e.g. [{host: 8080, guest: 80}]")
    forwards, seen = [], {}
    for value in values:
        forward = check_forward(value)
        key = listen_key(forward)
        if key in seen:
            raise InvalidSpec("host port %s is forwarded twice (to guest ports %d and %d)" % (describe_listen(forward), seen[key], forward["guest"]),
                              hint="A host port can lead to one guest port: remove one of the two forwards")
        seen[key] = forward["guest"]
        forwards.append(forward)
    return forwards


def parse(text):
    """``[ADDRESS:]HOST:GUEST[/udp]`` (``vmctl create --forward``) as a forward dict (checked by ``check_forward``)."""
    match = _SPEC.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidSpec("--forward %s is not HOST:GUEST" % short(text),
                          hint="Write HOST:GUEST (e.g. 8080:80), HOST:GUEST/udp, or ADDRESS:HOST:GUEST")
    value = {"host": int(match.group("host")), "guest": int(match.group("guest")), "protocol": match.group("protocol") or "tcp"}
    if match.group("address"):
        value["address"] = match.group("address")
    return check_forward(value)


def listen_key(forward):
    return forward["protocol"], forward["host"]


def describe_listen(forward):
    """``127.0.0.1:8080/tcp``."""
    return "%s:%d/%s" % (forward["address"], forward["host"], forward["protocol"])


def describe(forward):
    """``127.0.0.1:8080 -> 80/tcp`` (list, status)."""
    return "%s:%d->%d/%s" % (forward["address"], forward["host"], forward["guest"], forward["protocol"])


def exposure_warnings(name, forwards):
    """A warning for each forward that listens beyond 127.0.0.1 (reachable from other hosts)."""
    return ["VM %s: port forward %s listens on %s, not only on 127.0.0.1: other hosts may reach the guest's port %d"
            % (name, describe(f), f["address"], f["guest"]) for f in forwards if f["address"] != LOOPBACK]


def host_ports(raw):
    """``{(protocol, port)}`` a store record holds on the host: its SSH forward and its port forwards."""
    held = set()
    if isinstance(raw.get("ssh_host_port"), int) and (raw.get("network") or {}).get("type", "User").lower() == "user":
        held.add(("tcp", raw["ssh_host_port"]))
    for forward in raw.get("port_forwards") or ():
        if isinstance(forward, dict) and isinstance(forward.get("host"), int):
            held.add((forward.get("protocol") or "tcp", forward["host"]))
    return held


def holder(known, name, key):
    """The name of the other VM in ``known`` (the store's records) that holds host port ``key``, or None."""
    for other, raw in known.raw_items():
        if other != name and key in host_ports(raw):
            return other
    return None


def bind_error(forward):
    """None when this host lets us bind the forward's address and port now, else the OSError's errno."""
    kind = socket.SOCK_STREAM if forward["protocol"] == "tcp" else socket.SOCK_DGRAM
    with contextlib.closing(socket.socket(socket.AF_INET, kind)) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's hostfwd does: TIME_WAIT is no holder
        try:
            sock.bind((forward["address"], forward["host"]))
        except OSError as err:
            return err.errno
    return None


def check_free(name, forwards, known, running_holder=None):
    """Raise PortInUse for the first forward whose host port is taken: by another VM of the store (named), or by
    another program (the port cannot be bound). ``running_holder(other)`` says whether a holder VM holds it now
    (at start only a running holder does); None counts every VM of the store that forwards it (at create)."""
    for forward in forwards:
        key = listen_key(forward)
        other = holder(known, name, key)
        if other is not None and (running_holder is None or running_holder(other)):
            raise PortInUse("VM %s: host port %s is already forwarded by VM %s" % (name, describe_listen(forward), other),
                            hint="Pick another host port for VM %s, or change or destroy VM %s" % (name, other),
                            name=name, port=forward["host"], holder=other)
        problem = bind_error(forward)
        if problem == errno.EACCES:
            raise PortInUse("VM %s: host port %s is below 1024, which only root may bind" % (name, describe_listen(forward)),
                            hint="Use a host port of 1024 or more (e.g. host=8080 guest=80)", name=name, port=forward["host"])
        if problem == errno.EADDRNOTAVAIL:
            raise PortInUse("VM %s: forward address %s is not an address of this host" % (name, forward["address"]),
                            hint="Use 127.0.0.1 (the default) or an address of one of this host's interfaces",
                            name=name, port=forward["host"])
        if problem is not None:
            raise PortInUse("VM %s: host port %s is in use by another program" % (name, describe_listen(forward)),
                            hint="Free the port (ss -ltnup shows who listens), or pick another host port",
                            name=name, port=forward["host"], holder=None)
