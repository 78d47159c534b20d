# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where vmctl keeps its state: ``$XDG_DATA_HOME/vmctl`` (default ``~/.local/share/vmctl``)."""

from __future__ import annotations

__metaclass__ = type

import os


def data_dir():
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "vmctl")


def store_path():
    return os.path.join(data_dir(), "vms.json")


def images_dir():
    return os.path.join(data_dir(), "images")


def vms_dir():
    return os.path.join(data_dir(), "vms")


def vm_dir(name):
    return os.path.join(vms_dir(), name)


def ensure_private_dir(path):
    """Create ``path`` (and parents) with mode 0700 for the leaf; return it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
