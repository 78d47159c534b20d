# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One VM description (a VMFile record or the ``vm`` module's options) turned into a VmSpec.

The record shape is the one the ``vmfile`` module returns and the ``vm`` module accepts:
``name, image, vcpus, memory, disk, network{type,bridge,name}, cloud_init{hostname,ssh_key,
user_data,generate_key}, ssh{user,private_key,host_key_checking}, accel, cpu, machine, backend, vmfile``.
"""

from __future__ import annotations

__metaclass__ = type

import os

from ansible_collections.vmctl.core.plugins.module_utils import checks
from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit, keys
from ansible_collections.vmctl.core.plugins.module_utils.backends.router import default_backend_tag
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec
from ansible_collections.vmctl.core.plugins.module_utils.model import DEFAULTS, CloudInitConfig, SshConfig, VmSpec


def _read(path, what, vm):
    try:
        return checks.read_small_file(os.path.expanduser(path), what, shown=path)
    except InvalidSpec as err:
        raise InvalidSpec("VM %s: %s" % (vm, err.message), hint=err.hint, path=path)


def cloud_init_config(record):
    """The CloudInitConfig for a record, resolving which key the guest trusts.

    Without ``ssh_key`` and ``user_data``, the guest trusts the key the ``ssh`` block logs in with
    (its public half), or a key vmctl generates when there is none — never one key injected and
    another used to log in.
    """
    ci = block(record, "cloud_init")
    if ci is None:
        return None
    name = record["name"]
    config = CloudInitConfig(hostname=ci.get("hostname"))
    private_key = (block(record, "ssh") or {}).get("private_key")
    source = cloudinit.trusted_key(ci.get("user_data"), ci.get("ssh_key"), private_key)
    if source == "user_data":
        config.user_data = _read(ci["user_data"], "user-data", name)
    elif source == "ssh_key":
        try:
            config.ssh_public_keys = [checks.read_public_key(os.path.expanduser(ci["ssh_key"]), ci["ssh_key"])]
        except InvalidSpec as err:
            raise err.with_message("VM %s: %s" % (name, err.message))
    elif source == "private_key":
        config.ssh_public_keys = [keys.public_openssh_of(os.path.expanduser(private_key))]
    else:
        config.generate_key = ci.get("generate_key", True) is not False
    return config


def block(record, key, switch=True):
    """A record's settings block (``cloud_init``, ``ssh``, ``network``) as a dict, or None when it is not given.

    With ``switch``, ``false`` means none and ``true`` the block with its defaults, as an Ansible user writes
    ``cloud_init: false`` for an image without cloud-init. Anything else is refused with what was given.
    """
    value = record.get(key)
    if value is None or isinstance(value, dict):
        return value
    if switch and isinstance(value, bool):
        return {} if value else None
    raise InvalidSpec("VM %s: %s must be a dict of its settings%s, got %s"
                      % (record.get("name"), key, " (or false for none)" if switch else "", checks.short(value)),
                      hint="See ansible-doc vmctl.core.vm for the suboptions of %s" % key, name=record.get("name"))


BLOCKS = {"cloud_init": True, "ssh": True, "network": False}  # the settings blocks; True: false/true switch it


def switch_blocks(params):
    """``params`` with each settings block given as a boolean replaced by what it means (see ``block``)."""
    params = dict(params)
    for key, switch in BLOCKS.items():
        if key in params:
            value = block(params, key, switch)
            if value is None:
                params.pop(key)
            else:
                params[key] = value
    return params


def _given(record, key, default):
    """The record's value, or ``default`` only when it is not given: an explicit 0 is checked, never replaced."""
    value = record.get(key)
    return default if value is None else value


def spec_from_record(record, image_path, image_format=None):
    """A VmSpec for ``record`` booting ``image_path`` (a local file; URLs go through the image cache first)."""
    ssh = block(record, "ssh")
    network = block(record, "network", BLOCKS["network"]) or {}
    backend = record.get("backend") or DEFAULTS["backend"]
    return VmSpec(
        name=record["name"], image_path=image_path, image_format=image_format,
        vcpus=_given(record, "vcpus", DEFAULTS["vcpus"]), memory_mb=_given(record, "memory", DEFAULTS["memory"]),
        disk_gb=record.get("disk"),
        network={"type": network.get("type") or DEFAULTS["network"], "bridge": network.get("bridge"), "name": network.get("name")},
        cloud_init=cloud_init_config(record),
        ssh=SshConfig(user=_given(ssh, "user", DEFAULTS["ssh_user"]),
                      private_key_path=os.path.expanduser(ssh["private_key"]) if ssh.get("private_key") else None,
                      host_key_checking=ssh.get("host_key_checking") or DEFAULTS["host_key_checking"])
        if ssh is not None else None,
        accel=record.get("accel") or DEFAULTS["accel"], cpu=record.get("cpu"), machine=record.get("machine"),
        backend=default_backend_tag() if backend == "auto" else backend,
        vmfile=record.get("vmfile"), vnc=record.get("vnc", DEFAULTS["vnc"]) is not False,
        vnc_tcp=record.get("vnc_tcp", DEFAULTS["vnc_tcp"]) is True,
        kernel=record.get("kernel"), initrd=record.get("initrd"), kernel_append=record.get("kernel_append"),
        port_forwards=record.get("port_forwards") or [], shares=record.get("shares") or [],
        firmware=record.get("firmware") or DEFAULTS["firmware"],
    )


def record_params(record, image=None, **options):
    """The ``vm`` module's parameters for a whole VM record (``vmfile``'s shape), with ``options`` (state, recreate,
    validate_certs) added. A given ``image`` (the path ``vm_image`` pulled) wins over the record's image source."""
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise InvalidSpec("record must be a VM record of vmctl.core.vmfile (a dict with a name), got %s" % checks.short(record),
                          hint="Pass one item of the vmfile module's vms list")
    params = dict(record, **options)
    if image:
        params.update(image=image, image_url=None, image_checksum=None)
    return params


def resolve_image(image=None, image_url=None, checksum=None, validate_certs=True, check_mode=False, progress=None):
    """``{"path", "format", ...}`` of a local image, or of ``image_url`` pulled into the image cache.

    In check mode an image that is not cached yet is not downloaded: its future path is returned
    with ``would_download: true``. ``progress(done_bytes, total_bytes_or_None)`` follows a download.
    """
    from ansible_collections.vmctl.core.plugins.module_utils.images import cache as images
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    cache = VmManager().image_cache()
    if image:
        return cache.local_image(image).to_dict()
    # digest=False: a sha256 of the image that is not known yet is not computed (a read of the whole image).
    if check_mode:
        cached = cache.lookup(image_url)
        if cached is None:
            return {"path": os.path.join(cache.root, images.cache_file_name(image_url)), "format": None,
                    "url": image_url, "would_download": True}
        return cached.to_dict(digest=False)
    return cache.pull(image_url, checksum=checksum, validate_certs=validate_certs, progress=progress).to_dict(digest=False)
