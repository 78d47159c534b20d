# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud-init NoCloud seed: user-data, meta-data and the ``cidata`` ISO (built with pycdlib)."""

from __future__ import annotations

__metaclass__ = type

import hashlib
import io
import json

from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_hostname, validate_user
from ansible_collections.vmctl.core.plugins.module_utils.errors import CloudInitError, InvalidAuthorizedKey
from ansible_collections.vmctl.core.plugins.module_utils.guest import shares
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


def trusted_key(user_data=None, ssh_key=None, private_key=None):
    """Which key the guest trusts, decided here for every front-end: the user's own user-data says so itself
    (``user_data``), else ``ssh_key``, else the public half of the key the ssh block logs in with
    (``private_key``), else one vmctl generates (``generate``) - never one key installed and another used."""
    if user_data:
        return "user_data"
    if ssh_key:
        return "ssh_key"
    if private_key:
        return "private_key"
    return "generate"


def build_user_data(user, authorized_keys, hostname, host_key=None, mounts=None):
    """The cloud-config vmctl generates (the guide's "Cloud-Init User Setup"), dumped with a YAML emitter.
    ``mounts``: cloud-init ``mounts:`` entries (the VM's shares, guest/shares.py)."""
    if not HAS_YAML:
        raise CloudInitError("cannot build user-data: the Python 'PyYAML' package is missing", hint="pip install PyYAML")
    validate_user(user)
    validate_hostname(hostname)
    for key in authorized_keys:
        if "\n" in key.strip() or not key.strip():
            raise InvalidAuthorizedKey("an SSH public key must be one non-empty line", hint="Point ssh-key at an OpenSSH .pub file")
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
    if mounts:
        config["mounts"] = mounts
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


def cloud_init_digest(spec):
    """A fingerprint of what went into the seed ISO of ``spec`` (changing it needs a fresh disk)."""
    if spec.cloud_init is None:
        return None
    data = {"cloud_init": spec.cloud_init.to_json(), "user": spec.ssh.user if spec.ssh else "vm"}
    data["cloud_init"].pop("instance_id", None)
    if getattr(spec, "shares", None) and spec.cloud_init.user_data is None:  # mounted by the generated cloud-config
        data["mounts"] = shares.mounts(spec.shares)  # a changed source folder is a boot change, not a seed change
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
