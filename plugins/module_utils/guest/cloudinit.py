# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud-init NoCloud seed: user-data, meta-data and the ``cidata`` ISO (built with pycdlib)."""

from __future__ import annotations

__metaclass__ = type

import io
import os

from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_hostname, validate_user
from ansible_collections.vmctl.core.plugins.module_utils.errors import CloudInitError, InvalidSpec
from ansible_collections.vmctl.core.plugins.module_utils.store import atomic_write

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

try:
    import pycdlib
    HAS_PYCDLIB = True
except ImportError:  # pragma: no cover
    HAS_PYCDLIB = False


def build_user_data(user, authorized_keys, hostname, host_key=None):
    """The cloud-config vmctl generates (the guide's "Cloud-Init User Setup"), dumped with a YAML emitter."""
    if not HAS_YAML:
        raise CloudInitError("cannot build user-data: the Python 'PyYAML' package is missing", hint="pip install PyYAML")
    validate_user(user)
    validate_hostname(hostname)
    for key in authorized_keys:
        if "\n" in key.strip() or not key.strip():
            raise InvalidSpec("an SSH public key must be one non-empty line", code="vmctl.cloudinit.invalid_key",
                              hint="Point ssh-key at an OpenSSH .pub file")
    config = {
        "users": [{
            "name": user,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [key.strip() for key in authorized_keys],
        }],
        "disable_root": True,
        "ssh_pwauth": False,
        "hostname": hostname.split(".")[0],
        "manage_etc_hosts": True,
    }
    if "." in hostname:
        config["fqdn"] = hostname
    if host_key is not None:
        # Pin the guest's host key: we generated it, so we can verify it on every connection.
        config["ssh_deletekeys"] = True
        config["ssh_keys"] = {"ed25519_private": host_key.private_openssh,
                              "ed25519_public": host_key.public_openssh}
    return "#cloud-config\n" + yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def build_meta_data(instance_id, hostname):
    if not HAS_YAML:
        raise CloudInitError("cannot build meta-data: the Python 'PyYAML' package is missing", hint="pip install PyYAML")
    validate_hostname(hostname)
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, default_flow_style=False)


def write_seed_iso(path, user_data, meta_data, network_config=None):
    """Write a NoCloud seed ISO (volume ``cidata``, Joliet + Rock Ridge names) atomically to ``path``."""
    if not HAS_PYCDLIB:
        raise CloudInitError("cannot build the seed ISO: the Python 'pycdlib' package is missing", hint="pip install pycdlib")
    files = [("USERDATA.;1", "user-data", user_data), ("METADATA.;1", "meta-data", meta_data)]
    if network_config is not None:
        files.append(("NETCFG.;1", "network-config", network_config))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for iso_name, name, content in files:
            data = content.encode("utf-8") if isinstance(content, str) else content
            iso.add_fp(io.BytesIO(data), len(data), "/" + iso_name, rr_name=name, joliet_path="/" + name)
        out = io.BytesIO()
        iso.write_fp(out)
    except Exception as err:
        raise CloudInitError("building seed ISO %s failed: %s" % (path, err), path=path)
    finally:
        iso.close()
    atomic_write(path, out.getvalue(), mode=0o600)
    return path


def read_seed_iso(path):
    """{name: bytes} of a seed ISO's files (by Rock Ridge name); used by tests and `vm_info`."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        result = {}
        for child in iso.list_children(rr_path="/"):
            name = child.rock_ridge.name().decode() if child.rock_ridge else None
            if child.is_file() and name:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path="/" + name)
                result[name] = out.getvalue()
        return result
    finally:
        iso.close()


def seed_exists(path):
    return os.path.isfile(path) and os.path.getsize(path) > 0
