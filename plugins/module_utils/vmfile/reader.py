# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMFile.kdl: read, check every node against the schema, resolve paths, and return one record per VM.

Every mistake becomes a ``Problem`` with ``file:line:col``, the offending line with a caret, and a
hint; all problems of a file are collected and raised together as one ``VmfileError``. The schema
is a table (``VM_NODES``), so new nodes are new rows.
"""

from __future__ import annotations

__metaclass__ = type

import difflib
import os
import re

from ansible_collections.vmctl.core.plugins.module_utils import checks, forwards, private_network
from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import kdl
from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit, keys
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, KeygenFailed, UnknownVm, VmctlError, VmfileNotFound
from ansible_collections.vmctl.core.plugins.module_utils.model import ACCELS, DEFAULTS, FIRMWARES
from ansible_collections.vmctl.core.plugins.module_utils.guest.provision import describe, plan_digest

DEFAULT_NAME = "VMFile.kdl"
MAX_BYTES = 4 * 1024 * 1024   # a VMFile is a few KB; a larger file is a mistake (or an attack)
MAX_NODES = 10000
MAX_STRING = 64 * 1024        # every string value but an inline script
MAX_EXCERPT = 120             # characters of a source line shown in an error
TAP_DEFAULT_BRIDGE = "br0"
NETWORK_TYPES = ("user", "tap", "vnic", "none")
VMFILE_BACKENDS = ("auto", "qemu", "propolis")  # noop is the modules' test backend, not a VMFile's
PROVISION_TYPES = ("shell", "file")
_CHECKSUM = re.compile(r"sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|https?://\S+")
_URL = re.compile(r"(https?|file)://\S+")


class Problem:
    """One mistake: where (file, line, col, or the node path when no position is known), what, and what to do."""

    def __init__(self, file, line, col, message, hint=None, node_path=None):
        self.file, self.line, self.col = file, line, col
        self.message, self.hint, self.node_path = message, hint, node_path
        self.source_line = None
        self.caret = col  # the caret's column in source_line (an excerpt of a long line)

    def to_dict(self):
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message,
                "hint": self.hint, "node_path": self.node_path, "source_line": self.source_line}

    def render(self):
        where = "%s:%s:%s" % (self.file, self.line, self.col) if self.line else "%s: %s" % (self.file, self.node_path)
        text = "%s: error: %s" % (where, self.message)
        if self.source_line is not None:
            text += "\n    %s\n    %s^" % (self.source_line, " " * (max(self.caret or 1, 1) - 1))
        if self.hint:
            text += "\n  hint: %s" % self.hint
        return text


class VmfileError(VmctlError):
    code = "vmctl.vmfile.invalid"

    def __init__(self, problems):
        self.problems = problems
        count = "%d problem%s" % (len(problems), "" if len(problems) == 1 else "s")
        super().__init__("%s\n%s" % (count, "\n".join(p.render() for p in problems)),
                         hint=problems[0].hint if len(problems) == 1 else "Fix each problem listed; all were found in one pass",
                         problems=[p.to_dict() for p in problems])

    def __str__(self):
        return self.message


# --- the schema ------------------------------------------------------------------------------------
# kind: str, path (a local file, must exist), url, int (with range), choice, block (children), multi.

class Field:
    def __init__(self, kind, low=None, high=None, choices=None, must_exist=False, multi=False, children=None,
                 arg=None, props=None, hint=None, check=None, example=None):
        self.kind, self.low, self.high, self.choices = kind, low, high, choices
        self.must_exist, self.multi, self.children = must_exist, multi, children
        self.arg, self.props, self.hint = arg, props or {}, hint
        self.check = check  # a function of the value that raises InvalidSpec (message, hint) when it is wrong
        self.example = example


NETWORK_NODES = {"bridge": Field("str", check=checks.check_bridge), "name": Field("str")}
CLOUD_INIT_NODES = {"hostname": Field("str", check=checks.validate_hostname), "ssh-key": Field("path", must_exist=True),
                    "user-data": Field("path", must_exist=True)}
SSH_NODES = {"user": Field("str"), "private-key": Field("path", must_exist=True),
             "boot-timeout": Field("int", 1, 86400, example=900), "stall-timeout": Field("int", 1, 86400, example=300),
             "host-key-checking": Field("choice", choices=("yes", "accept-new"))}
PRIVATE_NETWORK_NODES = {"address": Field("str", check=private_network.check_address)}
PROVISION_NODES = {"inline": Field("str"), "script": Field("path", must_exist=True),
                   "source": Field("path", must_exist=True), "destination": Field("str")}
VM_NODES = {
    "image": Field("path", must_exist=True, hint='image "path/to/disk.qcow2"'),
    "image-url": Field("url", hint='image-url "https://…/image.qcow2"'),
    "image-checksum": Field("checksum", hint='image-checksum "sha256:<64 hex digits>"'),
    "vcpus": Field("int", *checks.VCPUS, example=2),
    "memory": Field("int", *checks.MEMORY_MB, example=2048),
    "disk": Field("int", *checks.DISK_GB, example=20),
    "network": Field("block", arg=Field("choice", choices=NETWORK_TYPES), children=NETWORK_NODES,
                     props=NETWORK_NODES),
    "cloud-init": Field("block", children=CLOUD_INIT_NODES),
    "ssh": Field("block", children=SSH_NODES),
    "provision": Field("block", multi=True, arg=Field("choice", choices=PROVISION_TYPES), children=PROVISION_NODES),
    "accel": Field("choice", choices=ACCELS),
    "cpu": Field("str", check=checks.check_word),
    "machine": Field("str", check=checks.check_word),
    "private-network": Field("block", multi=True, arg=Field("str", check=private_network.check_name),
                             children=PRIVATE_NETWORK_NODES, props=PRIVATE_NETWORK_NODES),
}
# Issue 14: port forwards, shares, firmware, direct kernel boot (each block node has its method below).
FORWARD_NODES = {"host": Field("int", *forwards.PORTS, example=8080), "guest": Field("int", *forwards.PORTS, example=80),
                 "protocol": Field("choice", choices=forwards.PROTOCOLS), "address": Field("str", check=forwards.check_address)}
SHARE_NODES = {"guest": Field("str", check=shares.check_guest_path), "readonly": Field("bool")}
KERNEL_NODES = {"initrd": Field("path", must_exist=True), "append": Field("str", check=lambda v: checks.check_text("append", v))}
VM_NODES.update({
    "port-forward": Field("block", multi=True, children=FORWARD_NODES, props=FORWARD_NODES),
    "share": Field("block", multi=True, arg=Field("str"), children=SHARE_NODES, props=SHARE_NODES),
    "firmware": Field("choice", choices=FIRMWARES),
    "hypervisor": Field("str", check=checks.check_hypervisor),  # issue 16: the inventory host that runs the VM
    "backend": Field("choice", choices=VMFILE_BACKENDS),  # issue 16: auto is the hypervisor's platform's
    "kernel": Field("block", arg=Field("path", must_exist=True), children=KERNEL_NODES),
})
UNITS = {"vcpus": "", "memory": " MB", "disk": " GB"}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([MGT])i?B?\s*", re.IGNORECASE)
# Where each block's settings go, for "hostname belongs inside cloud-init { }".
HOMES = dict([(child, "%s { }" % block) for block, field in VM_NODES.items() if field.children for child in field.children]
             + [(name, 'vm "name" { }') for name in VM_NODES])


def _suggest(name, known, nodes=True):
    """"did you mean `x`?" for a near miss; else, for ``nodes``, where the node belongs or the known ones."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    if close:
        return "did you mean `%s`?" % close[0]
    if not nodes:
        return None
    if name in HOMES:
        return "%s belongs inside %s" % (name, HOMES[name])
    return "known here: %s" % ", ".join(sorted(known))


def _as_unit(text, unit):
    """A size like "4G" or "512MiB" in ``unit`` (" MB" or " GB"), or None."""
    match = _SIZE.fullmatch(text) if unit else None
    if not match:
        return None
    megabytes = float(match.group(1)) * {"M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2).upper()]
    return int(megabytes if unit == " MB" else megabytes / 1024) or None


class _Checker:
    def __init__(self, path, text):
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.lines = text.splitlines()
        self.problems = []
        self.addresses = []  # (vm, private network, address, where) of every VM, see check_addresses
        self.forwarded = {}  # (protocol, host port) -> (vm name, line): one host port per VMFile

    def problem(self, where, message, hint=None, node_path=None):
        line, col = (where.line, where.col) if where is not None else (None, None)
        p = Problem(self.path, line, col, message, hint, node_path)
        if line and line <= len(self.lines):
            p.source_line, p.caret = _excerpt(self.lines[line - 1].expandtabs(1), col or 1)
        self.problems.append(p)

    def resolve_path(self, value):
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    # --- values --------------------------------------------------------------------------------
    def check_value(self, field, value, label, npath):
        """The checked (and for paths, resolved) value, or None after recording a problem."""
        v = value.value
        if field.kind == "bool":
            if not isinstance(v, bool):
                self.problem(value, "%s must be true or false, got %s" % (label, _show(v)),
                             "Write %s=true (KDL v2: %s=#true)" % (label, label), npath)
                return None
            return v
        if field.kind == "int":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or isinstance(v, float) and not v.is_integer():
                unit = UNITS.get(label, "")
                size = _as_unit(v, unit) if isinstance(v, str) else None
                self.problem(value, "%s must be a whole number, got %s" % (label, _show(v)),
                             "%s is in%s: write %s %d" % (label, unit, label, size) if size else
                             "Write it without quotes, e.g. %s %d" % (label, field.example or field.low), npath)
                return None
            try:
                return checks.whole_number(label, int(v), field.low, field.high, UNITS.get(label, ""))
            except InvalidSpec as err:
                self.problem(value, err.message, err.hint, npath)
                return None
        if not isinstance(v, str):
            self.problem(value, "%s must be a string, got %s" % (label, _show(v)), 'Quote it: %s "%s"' % (label, v), npath)
            return None
        if len(v) > MAX_STRING and label != "inline":
            self.problem(value, "%s is %d characters long; at most %d are allowed" % (label, len(v), MAX_STRING),
                         "Put long content in a file (script \"…\", user-data \"…\")", npath)
            return None
        if field.kind == "choice" and v not in field.choices:
            close = _suggest(v, field.choices, nodes=False)
            self.problem(value, "unknown %s %r" % (label, v),
                         "%sUse one of: %s" % (close + "; " if close else "", ", ".join(field.choices)), npath)
            return None
        if field.kind == "url" and not _URL.fullmatch(v):
            self.problem(value, "%s must be an http(s):// or file:// URL, got %r" % (label, v),
                         "For a local file use image \"%s\"" % v, npath)
            return None
        if field.kind == "checksum" and not _CHECKSUM.fullmatch(v):
            self.problem(value, "malformed %s %r" % (label, v),
                         "Write sha256:<64 hex digits>, sha512:<128 hex digits> or the URL of a SHA256SUMS file", npath)
            return None
        if field.kind == "path":
            if not v:
                self.problem(value, "%s is empty" % label, "Give a file path", npath)
                return None
            resolved = self.resolve_path(v)
            try:
                kind = checks.file_kind(resolved) if field.must_exist else None
            except OSError as err:
                self.problem(value, "%s %s cannot be read: %s" % (label, v, err.strerror), "Check its permissions", npath)
                return None
            if kind == "missing":
                self.problem(value, "%s %s does not exist (looked for %s)" % (label, v, resolved),
                             "Paths are relative to the VMFile's directory (%s); ~ is your home" % self.base_dir, npath)
                return None
            if kind is not None:
                image = label == "image"
                self.problem(value, "%s %s is %s, not a %s" % (label, v, kind, "disk image file" if image else "file"),
                             "Give the path of a qcow2 or raw image file" if image else
                             "Name one file (a file provisioner uploads one file: pack a directory into a tarball)"
                             if kind == "a directory" else "Name a regular file", npath)
                return None
            return resolved
        if field.check:
            try:
                field.check(v)
            except InvalidSpec as err:
                self.problem(value, err.message, err.hint, npath)
                return None
        return v

    def single(self, node, field, npath, siblings=()):
        """A node holding one value (``vcpus 2``); ``siblings`` are the node names allowed next to it."""
        if node.children is not None:
            self.problem(node.children_pos and _At(*node.children_pos), "%s takes a value, not a { } block" % node.name,
                         "Write %s <value>" % node.name, npath)
        for key, (kline, kcol, _value) in node.props.items():
            self.problem(_At(kline, kcol), "%s takes no properties (found %s=)" % (node.name, key), "Remove %s=…" % key, npath)
        if len(node.args) != 1:
            at = node.args[1] if len(node.args) > 1 else _At(node.line, node.col + len(node.name))
            joined = [a.value for a in node.args[1:] if a.bare and a.value in siblings]
            self.problem(at, "%s takes exactly one value, found %d" % (node.name, len(node.args)),
                         'Nodes on one line are separated by ";": write %s …; %s …' % (node.name, joined[0]) if joined
                         else "Write %s" % (field.hint or "%s <value>" % node.name), npath)
            return None
        return self.check_value(field, node.args[0], node.name, npath)

    def block(self, node, schema, npath, props=None, allow_args=0):
        """Children of a block node, checked: ``{name: (value, node)}``.

        A setting that was given but is wrong (already reported) is kept as ``(None, where)``, so checks
        between settings see it as given: one mistake is one problem, never a second "missing" one.
        """
        values = {}
        for key, kline, kcol in node.repeated:
            self.problem(_At(kline, kcol), "%s= is given twice on %s" % (key, node.name), "Keep one %s=" % key, npath)
        for key, (kline, kcol, value) in node.props.items():
            if props and key in props:
                values[key] = (self.check_value(props[key], value, key, npath), _At(kline, kcol))
            else:
                self.problem(_At(kline, kcol), "unknown property %s= on %s" % (key, node.name),
                             _suggest(key, props or {}) if props else "%s takes no properties" % node.name, npath)
        for extra in node.args[allow_args:]:
            self.problem(extra, "unexpected value %s after %s" % (_show(extra.value), node.name),
                         "Remove it" if allow_args else "%s takes no values; put settings inside { }" % node.name, npath)
        seen = {}
        for child in node.children or []:
            cpath = "%s › %s" % (npath, child.name)
            field = schema.get(child.name)
            if field is None:
                self.problem(child, "unknown node %s in %s" % (child.name, node.name), _suggest(child.name, schema), cpath)
                continue
            if child.name in seen and not field.multi:
                self.problem(child, "%s is given twice in %s" % (child.name, node.name),
                             "Keep one (the first is on line %d)" % seen[child.name].line, cpath)
                continue
            seen.setdefault(child.name, child)
            value = self.single(child, field, cpath, schema)
            if child.name in node.props:  # the same setting as a property and as a child node
                self.problem(child, "%s is given both as %s= and as a node" % (child.name, child.name),
                             "Keep one of the two forms", cpath)
            values[child.name] = (value, child.args[0] if len(child.args) == 1 else child)
            if value is None:  # `user "me" private-key "id"`: the sibling written on the same line counts as given
                for arg in child.args[1:]:
                    if arg.bare and arg.value in schema:
                        values.setdefault(arg.value, (None, arg))
        return values

    # --- the VM ------------------------------------------------------------------------------------
    def vm(self, node):
        name_ok = False
        name = None
        if not node.args:
            self.problem(_At(node.line, node.col + 2), "vm needs a name", 'Write vm "name" { … }', "vm")
        else:
            name = node.args[0].value
            try:
                name_ok = bool(checks.validate_name(name))
            except VmctlError as err:
                self.problem(node.args[0], err.message, err.hint, "vm")
        npath = 'vm "%s"' % name if name_ok else "vm"
        self.vm_name, self.share_paths = name, set()  # for port-forward and share (forwards are per file: self.forwarded)
        self.settings = {}  # block name -> {setting: (value, Value)} of this VM's cloud-init and ssh
        if node.children is None:
            self.problem(_At(node.line, node.col), "vm %s has no { } block" % _show(name), "Add { image … } with its settings", npath)
            return None
        fields = {}
        seen = {}
        provisions = []
        for child in node.children:
            cpath = "%s › %s" % (npath, child.name)
            field = VM_NODES.get(child.name)
            if field is None:
                self.problem(child, "unknown node %s in vm %s" % (child.name, _show(name)), _suggest(child.name, VM_NODES), cpath)
                continue
            if child.name in seen and not field.multi:
                self.problem(child, "%s is given twice in vm %s" % (child.name, _show(name)),
                             "Keep one (the first is on line %d)" % seen[child.name].line, cpath)
                continue
            seen.setdefault(child.name, child)
            if field.kind != "block":
                value = self.single(child, field, cpath, VM_NODES)
                if value is not None:
                    fields[child.name] = value
            elif child.name == "provision":
                provisions.append(self.provision(child, len(provisions) + 1, cpath))
            elif field.multi:
                fields.setdefault(child.name, []).append(getattr(self, child.name.replace("-", "_"))(child, field, cpath))
            else:
                fields[child.name] = getattr(self, child.name.replace("-", "_"))(child, field, cpath)
        record = self.vm_record(node, name, npath, fields, seen, provisions)
        return record if name_ok else None

    def vm_record(self, node, name, npath, fields, seen, provisions):
        if "image" in seen and "image-url" in seen:
            second = max(seen["image"], seen["image-url"], key=lambda n: (n.line, n.col))
            self.problem(second, "vm %s has both image and image-url" % _show(name),
                         "Keep one image source: a local image or a URL", npath)
        elif "image" not in seen and "image-url" not in seen:
            self.problem(_At(node.line, node.col), "vm %s has no image source" % _show(name),
                         'Add image "path/to/disk.qcow2" or image-url "https://…"', npath)
        if "image-checksum" in seen and "image-url" not in seen:
            self.problem(seen["image-checksum"], "image-checksum without image-url",
                         "A checksum verifies a download; remove it or add image-url", npath)
        network = fields.get("network") or {"type": "user", "bridge": None, "name": None}
        ssh = fields.get("ssh")
        cloud_init = fields.get("cloud-init")
        if ssh is not None and cloud_init is None and "private-key" not in self.settings["ssh"]:
            self.problem(seen["ssh"], "vm %s has an ssh block but no key to log in with" % _show(name),
                         'Add a cloud-init { } block (a key is then generated and installed), or private-key "~/.ssh/…" '
                         "for a key the image already trusts", npath)
        if cloud_init is not None:
            cloud_init["generate_key"] = cloudinit.trusted_key(
                cloud_init["user_data"], cloud_init["ssh_key"], ssh and ssh["private_key"]) == "generate"
            self.check_guest(name, npath, seen["cloud-init"], cloud_init, ssh)
        self.check_keys(npath, cloud_init, ssh)
        self.check_login_user(npath, cloud_init)
        return {
            "name": name, "vmfile": os.path.abspath(self.path), "base_dir": self.base_dir,
            "image": fields.get("image"), "image_url": fields.get("image-url"),
            "image_checksum": fields.get("image-checksum"),
            "vcpus": fields.get("vcpus", DEFAULTS["vcpus"]), "memory": fields.get("memory", DEFAULTS["memory"]),
            "disk": fields.get("disk"),
            "network": network, "cloud_init": cloud_init, "ssh": ssh,
            "accel": fields.get("accel", DEFAULTS["accel"]), "cpu": fields.get("cpu"), "machine": fields.get("machine"),
            "private_networks": self.check_private_networks(name, npath, fields.get("private-network", []), cloud_init),
            **self.device_fields(name, npath, fields, seen, network),
            "hypervisor": fields.get("hypervisor"), "backend": fields.get("backend", DEFAULTS["backend"]),
            "provisions": [dict(p, description=describe(p)) for p in provisions if p is not None],
            "provision_digest": plan_digest([p for p in provisions if p is not None]),
        }

    # --- issue 14: port forwards, shares, firmware, kernel ------------------------------------------------
    def device_fields(self, name, npath, fields, seen, network):
        """The record's port_forwards, shares, firmware and direct kernel boot."""
        forwards_ = [f for f in fields.get("port-forward", []) if f is not None]
        if forwards_ and network["type"] != "user":
            self.problem(seen["port-forward"], "port forwards need user networking, not %s" % network["type"],
                         'Remove port-forward, or use network "user" (the default)', npath)
        kernel = fields.get("kernel") or {}
        return {"port_forwards": forwards_, "shares": [s for s in fields.get("share", []) if s is not None],
                "firmware": fields.get("firmware", DEFAULTS["firmware"]),
                "kernel": kernel.get("kernel"), "initrd": kernel.get("initrd"), "kernel_append": kernel.get("append")}

    def port_forward(self, node, field, npath):
        values = self.block(node, field.children, npath, props=field.props)
        missing = [key for key in ("host", "guest") if key not in values]
        if missing:
            self.problem(node, "port-forward needs %s" % " and ".join("%s=" % key for key in missing),
                         "Write port-forward host=8080 guest=80", npath)
            return None
        if any(value is None for value, _where in values.values()):
            return None  # a wrong setting, already reported
        forward = forwards.check_forward({key: value for key, (value, _where) in values.items()})
        key = forwards.listen_key(forward)
        first = self.forwarded.get(key)
        if first is not None:
            self.problem(values["host"][1], "host port %s is already forwarded by vm %s (line %d)"
                         % (forwards.describe_listen(forward), _show(first[0]), first[1]),
                         "A host port leads to one guest port: pick another host=", npath)
            return None
        self.forwarded[key] = (self.vm_name, node.line)
        return forward

    def block_with_arg(self, node, field, npath, missing, example):
        """A block node's settings, its one argument required: the values, or None with ``missing`` reported."""
        values = self.block(node, field.children, npath, props=field.props, allow_args=1)
        if not node.args:
            self.problem(_At(node.line, node.col + len(node.name)), missing, example, npath)
            return None
        return values

    def share(self, node, field, npath):
        values = self.block_with_arg(node, field, npath, "share needs the host folder", 'Write share "./src" guest="/mnt/src"')
        if values is None:
            return None
        source = self.check_value(field.arg, node.args[0], "share", npath)
        if "guest" not in values:
            self.problem(node, "share needs guest= (where the folder appears in the guest)",
                         'Write share "%s" guest="/mnt/%s"' % (node.args[0].value, os.path.basename(str(node.args[0].value)) or "src"), npath)
            return None
        if source is None or any(value is None for value, _where in values.values()):
            return None  # a wrong setting, already reported
        resolved = self.resolve_path(source)
        if not os.path.isdir(resolved):
            kind = "is not a folder" if os.path.lexists(resolved) else "does not exist"
            self.problem(node.args[0], "share %s %s (looked for %s)" % (source, kind, resolved),
                         "Paths are relative to the VMFile's directory (%s); create the folder first" % self.base_dir, npath)
            return None
        guest = values["guest"][0]
        if guest in self.share_paths:
            self.problem(values["guest"][1], "two shares are mounted at %s" % guest, "Give each share its own guest path", npath)
            return None
        self.share_paths.add(guest)
        return {"source": resolved, "guest": os.path.normpath(guest), "readonly": values.get("readonly", (False,))[0]}

    def kernel(self, node, field, npath):
        values = self.block(node, field.children, npath, allow_args=1)
        if not node.args:
            self.problem(_At(node.line, node.col + len(node.name)), "kernel needs the kernel's path",
                         'Write kernel "path/vmlinuz" { initrd "path/initrd.img"; append "console=ttyS0" }', npath)
            return None
        path = self.check_value(field.arg, node.args[0], "kernel", npath)
        return {"kernel": path, "initrd": values.get("initrd", (None,))[0], "append": values.get("append", (None,))[0]}

    def check_guest(self, name, npath, node, cloud_init, ssh):
        """What cloud-init will be given: a valid hostname (the VM name by default) and user."""
        if "hostname" not in self.settings["cloud-init"] and npath != "vm":
            try:
                checks.validate_hostname(name)
            except InvalidSpec as err:
                self.problem(node, "the hostname defaults to the VM name, and %s" % err.message,
                             'Set one: cloud-init { hostname "%s" }' % re.sub(r"[^A-Za-z0-9.-]", "-", name), npath)
        user = self.settings.get("ssh", {}).get("user")
        if ssh is not None and user and user[0] is not None:
            try:
                checks.validate_user(user[0])
            except InvalidSpec as err:
                self.problem(user[1], "cloud-init cannot create the user: %s" % err.message, err.hint, npath)

    def check_login_user(self, npath, cloud_init):
        """The ssh user of a VM whose users cloud-init does not create (an image's own, or user-data's)."""
        user = self.settings.get("ssh", {}).get("user")
        if user and isinstance(user[0], str) and (cloud_init is None or cloud_init["user_data"]):
            try:
                checks.validate_login_user(user[0])
            except InvalidSpec as err:
                self.problem(user[1], err.message, err.hint, npath)

    def check_keys(self, npath, cloud_init, ssh):
        """The key the guest trusts is the key vmctl logs in with, and each key file is what its node says."""
        ssh_key = self.settings.get("cloud-init", {}).get("ssh-key")
        private_key = self.settings.get("ssh", {}).get("private-key")
        if ssh_key and "user-data" in self.settings.get("cloud-init", {}):
            self.problem(ssh_key[1], "ssh-key is not used when user-data is given",
                         "vmctl passes your user-data untouched: put the key in its ssh_authorized_keys, "
                         "or remove user-data", npath)
        public = None
        if private_key and private_key[0] is not None and keys.HAS_CRYPTOGRAPHY:
            try:
                public = keys.public_openssh_of(private_key[0])
            except KeygenFailed as err:
                self.problem(private_key[1], err.message, err.hint, npath)
        if ssh_key and ssh_key[0] is not None and not cloud_init["user_data"]:
            try:
                text = checks.read_public_key(ssh_key[0], ssh_key[1].value)
            except InvalidSpec as err:
                self.problem(ssh_key[1], err.message, err.hint, npath)
                return
            if public and not keys.same_key(text, public):
                self.problem(private_key[1], "private-key %s is not the pair of ssh-key %s, which the guest trusts"
                             % (private_key[1].value, ssh_key[1].value),
                             "Use the two halves of the same key pair, or drop ssh-key: the public half of "
                             "private-key is then installed", npath)

    def network(self, node, field, npath):
        values = self.block(node, field.children, npath, props=field.props, allow_args=1)
        kind = None
        if not node.args:
            self.problem(_At(node.line, node.col + len(node.name)), "network needs a type",
                         'Write network "user", network "tap" { bridge "br0" } or network "none"', npath)
        else:
            kind = self.check_value(field.arg, node.args[0], "network type", npath)
        bridge = values.get("bridge", (None, None))
        vnic = values.get("name", (None, None))
        if kind not in ("tap", None) and "bridge" in values:
            self.problem(bridge[1], "bridge only applies to tap networking", "Remove it, or use network \"tap\"", npath)
        if kind not in ("vnic", None) and "name" in values:
            self.problem(vnic[1], "name only applies to vnic networking", "Remove it, or use network \"vnic\"", npath)
        if kind == "vnic" and "name" not in values:
            self.problem(node, "vnic networking needs the VNIC's name", 'Write network "vnic" { name "vnic0" }', npath)
        return {"type": kind or "user", "bridge": (bridge[0] or TAP_DEFAULT_BRIDGE) if kind == "tap" else None,
                "name": vnic[0] if kind == "vnic" else None}

    def private_network(self, node, field, npath):
        """``private-network "lab" address="192.168.77.11/24"`` (or ``{ address "…" }``): ``(record, name value, address value)``."""
        values = self.block_with_arg(node, field, npath, "private-network needs the switch's name",
                                     'Write private-network "lab" address="192.168.77.11/24"')
        if values is None:
            return None
        name = self.check_value(field.arg, node.args[0], "private network name", npath)
        address, where = values.get("address", (None, None))
        if name is None or ("address" in values and address is None):
            return None  # already reported
        return {"name": name, "address": address}, node.args[0], where

    def check_private_networks(self, vm, npath, given, cloud_init):
        """The VM's private networks (each switch once; an address needs cloud-init); addresses are kept with
        their positions for the check across VMs (``parse_text``)."""
        result, seen = [], {}
        for entry in given:
            if entry is None:
                continue
            net, name_at, address_at = entry
            if net["name"] in seen:
                self.problem(name_at, "private network %s is given twice in vm %s" % (net["name"], _show(vm)),
                             "Join each switch once (the first is on line %d)" % seen[net["name"]], npath)
                continue
            seen[net["name"]] = name_at.line
            if net["address"] and cloud_init is None:
                self.problem(address_at, "the address on private network %s is set by cloud-init, and vm %s has no "
                             "cloud-init" % (net["name"], _show(vm)),
                             "Add a cloud-init { } block, or leave the address out and configure the NIC in the guest", npath)
                continue
            if net["address"]:
                self.addresses.append((vm, net["name"], net["address"], address_at))
            result.append(net)
        return result

    def check_addresses(self):
        """Two VMs of one VMFile with one address on the same switch: the second is the problem."""
        first = {}
        for vm, name, address, where in self.addresses:
            key = (name, private_network.host_of(address))
            if key in first:
                other, line = first[key]
                self.problem(where, "address %s on private network %s is taken by vm %s (line %d)" % (address, name, _show(other), line),
                             "Give each VM on %s its own address" % name, 'vm "%s"' % vm)
            else:
                first[key] = (vm, where.line)

    def cloud_init(self, node, field, npath):
        values = self.settings["cloud-init"] = self.block(node, field.children, npath)
        return {"hostname": values.get("hostname", (None,))[0], "ssh_key": values.get("ssh-key", (None,))[0],
                "user_data": values.get("user-data", (None,))[0]}

    def ssh(self, node, field, npath):
        values = self.settings["ssh"] = self.block(node, field.children, npath)
        return {"user": values.get("user", ("vm",))[0], "private_key": values.get("private-key", (None,))[0],
                "boot_timeout": values.get("boot-timeout", (None,))[0], "stall_timeout": values.get("stall-timeout", (None,))[0],
                "host_key_checking": values.get("host-key-checking", ("yes",))[0]}

    def provision(self, node, step, npath):
        field = VM_NODES["provision"]
        npath = "%s #%d" % (npath, step)
        values = self.block(node, field.children, npath, allow_args=1)
        if not node.args:
            self.problem(_At(node.line, node.col + len(node.name)), "provision needs a type",
                         'Write provision "shell" { inline "…" } or provision "file" { source "…" destination "/…" }', npath)
            return None
        kind = self.check_value(field.arg, node.args[0], "provisioner type", npath)
        if kind is None:
            return None
        have = values
        record = {"step": step, "type": kind}
        if kind == "shell":
            for key in ("source", "destination"):
                if key in have:
                    self.problem(have[key][1], "%s belongs to file provisioners" % key, "Use inline or script here", npath)
            if ("inline" in have) == ("script" in have):
                where = have["script"][1] if "inline" in have else node
                self.problem(where, "a shell provisioner needs exactly one of inline and script",
                             'Write inline "command" or script "path/to/script.sh" (not both)', npath)
                return None
            if any(value is None for value, _where in have.values()):
                return None  # a wrong setting, already reported
            if "inline" in have:
                record["inline"] = have["inline"][0]
            else:
                record["script"] = have["script"][0]
            return record
        for key in ("inline", "script"):
            if key in have:
                self.problem(have[key][1], "%s belongs to shell provisioners" % key, "Use source and destination here", npath)
        missing = [k for k in ("source", "destination") if k not in have]
        if missing:
            self.problem(node, "a file provisioner needs %s" % " and ".join(missing),
                         'Write provision "file" { source "local/file" destination "/absolute/path" }', npath)
            return None
        if any(value is None for value, _where in have.values()):
            return None  # a wrong setting, already reported
        if not have["destination"][0].startswith("/"):
            self.problem(have["destination"][1], "destination must be an absolute path on the guest, got %r" % have["destination"][0],
                         'Start it with /, e.g. "/tmp/%s"' % os.path.basename(have["destination"][0]), npath)
            return None
        record.update(source=have["source"][0], destination=have["destination"][0])
        return record


class _At:
    """A bare position (for places that are not a node or a value)."""

    def __init__(self, line, col):
        self.line, self.col = line, col


def _count_nodes(nodes):
    total, stack = 0, list(nodes)
    while stack:
        node = stack.pop()
        total += 1
        stack.extend(node.children or ())
    return total


def _excerpt(line, col):
    """``(text, col)``: at most MAX_EXCERPT characters of ``line`` around ``col`` (the caret column in the text)."""
    if len(line) <= MAX_EXCERPT:
        return line, col
    start = max(0, min(col - 1 - MAX_EXCERPT // 2, len(line) - MAX_EXCERPT))
    text = line[start:start + MAX_EXCERPT]
    prefix = "…" if start else ""
    return prefix + text + ("…" if start + MAX_EXCERPT < len(line) else ""), col - start + len(prefix)


def _show(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"%s"' % value if len(value) <= 60 else '"%s…" (%d characters)' % (value[:60], len(value))
    return str(value)


# --- entry points ------------------------------------------------------------------------------------

def find(path=None, cwd=None):
    """The VMFile to use: ``path``, or VMFile.kdl in ``cwd`` (the guide's discovery)."""
    candidate = path or os.path.join(cwd or os.getcwd(), DEFAULT_NAME)
    if not os.path.isfile(candidate):
        raise VmfileNotFound("no VMFile at %s" % candidate, path=candidate,
                             hint="Create %s, or point to one (vmctl --file PATH, or -e vmfile=PATH)" % DEFAULT_NAME)
    return candidate


def parse_text(text, path=DEFAULT_NAME):
    """Records of every VM in ``text`` (the VMFile at ``path``); raises VmfileError with every problem."""
    checker = _Checker(path, text)
    if len(text) > MAX_BYTES:
        raise VmfileError([Problem(path, None, None, "the VMFile has %d characters; at most %d are read" % (len(text), MAX_BYTES),
                                   "A VMFile is a few KB: put scripts and data in files it names", "VMFile")])
    try:
        nodes = kdl.parse(text)
    except kdl.KdlSyntaxError as err:
        checker.problem(_At(err.line, err.col), "KDL syntax: %s" % err.message, err.hint)
        raise VmfileError(checker.problems)
    count = _count_nodes(nodes)
    if count > MAX_NODES:
        raise VmfileError([Problem(path, None, None, "the VMFile has %d nodes; at most %d are allowed" % (count, MAX_NODES),
                                   "Split it, or move repeated steps into a script", "VMFile")])
    records = []
    first = {}
    for node in nodes:
        if node.name != "vm":
            checker.problem(node, "unknown top-level node %s" % node.name,
                            "%s; a VMFile holds vm \"name\" { … } blocks" % _suggest(node.name, ["vm"]), node.name)
            continue
        record = checker.vm(node)
        if record is None:
            continue
        if record["name"] in first:
            checker.problem(node.args[0], "VM %s is defined twice" % record["name"],
                            "VM names must be unique; the first is on line %d" % first[record["name"]], 'vm "%s"' % record["name"])
            continue
        first[record["name"]] = node.line
        records.append(record)
    checker.check_addresses()
    if not nodes:
        checker.problem(_At(1, 1), "the VMFile defines no VM", 'Add a vm "name" { image … } block')
    if checker.problems:
        raise VmfileError(checker.problems)
    return records


def load(path=None, names=None, cwd=None):
    """Records of the VMs in the VMFile (``names`` selects some); raises VmfileError / VmfileNotFound."""
    path = find(path, cwd)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise VmfileError([Problem(path, None, None, "the VMFile is larger than %d bytes" % MAX_BYTES,
                                   "A VMFile is a few KB: put scripts and data in files it names", "VMFile")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise VmfileError([Problem(path, line, col, "the file is not UTF-8 text (byte 0x%02x)" % data[err.start],
                                   "Save it as UTF-8")])
    records = parse_text(text, path)
    if names:
        known = [r["name"] for r in records]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UnknownVm("no VM named %s in %s" % (", ".join(unknown), path), hint="Defined there: %s" % ", ".join(known),
                            names=unknown)
        records = [r for r in records if r["name"] in names]
    return records
