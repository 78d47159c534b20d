# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ed25519 keys in OpenSSH format: the per-VM user key and the per-VM host key we pin."""

from __future__ import annotations

__metaclass__ = type

import os

from ansible_collections.vmctl.core.plugins.module_utils import checks
from ansible_collections.vmctl.core.plugins.module_utils.errors import KeygenFailed

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported when a key is needed
    HAS_CRYPTOGRAPHY = False


class KeyPair:
    def __init__(self, private_openssh, public_openssh):
        self.private_openssh = private_openssh
        self.public_openssh = public_openssh


def generate_ed25519(comment):
    """A new key pair; ``public_openssh`` is ``ssh-ed25519 AAAA… comment``."""
    if not HAS_CRYPTOGRAPHY:
        raise KeygenFailed("cannot generate keys: the Python 'cryptography' package is missing",
                           hint="Install it: pip install cryptography")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return KeyPair(private, "%s %s" % (public, comment))


def write_keypair(pair, private_path):
    """Write ``private_path`` (0600) and ``private_path.pub`` (0644)."""
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pair.private_openssh)
    os.chmod(private_path, 0o600)
    with open(private_path + ".pub", "w") as f:
        f.write(pair.public_openssh + "\n")
    return private_path


def load_or_create(private_path, comment):
    """The key pair at ``private_path``, generated on first use (idempotent across re-runs)."""
    if os.path.exists(private_path) and os.path.exists(private_path + ".pub"):
        with open(private_path) as f:
            private = f.read()
        with open(private_path + ".pub") as f:
            public = f.read().strip()
        return KeyPair(private, public)
    pair = generate_ed25519(comment)
    write_keypair(pair, private_path)
    return pair


def known_hosts_line(host, port, public_openssh):
    """A known_hosts entry for ``host:port`` (OpenSSH's ``[host]:port`` form unless port 22)."""
    key_type, key_b64 = public_openssh.split()[:2]
    name = host if int(port) == 22 else "[%s]:%d" % (host, int(port))
    return "%s %s %s\n" % (name, key_type, key_b64)


def public_openssh_of(private_path):
    """``type base64`` of the public half of an OpenSSH/PEM private key (``<key>.pub`` is not trusted to match).

    KeygenFailed says why a file is no key vmctl can log in with: a public key, a key behind a
    passphrase (vmctl uses neither an agent nor a prompt), or no key at all.
    """
    if not HAS_CRYPTOGRAPHY:
        raise KeygenFailed("cannot read keys: the Python 'cryptography' package is missing",
                           hint="Install it: pip install cryptography")
    unencrypted = "Use an unencrypted OpenSSH or PEM private key (ssh-keygen -t ed25519 -N '')"
    try:
        data = checks.read_small_file(private_path, "private key", limit=1 << 20, binary=True)
        if is_public_key(data.decode("utf-8", "replace")):
            raise KeygenFailed("%s is a public key, not a private one" % private_path, path=private_path,
                               hint="Point private-key at the private half (the file without .pub)")
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way to say "encrypted"
        raise KeygenFailed("the private key %s is protected by a passphrase" % private_path, path=private_path,
                           hint="vmctl logs in with neither an agent nor a passphrase prompt: use a key without a "
                                "passphrase (ssh-keygen -t ed25519 -N ''), or leave private-key out and let cloud-init "
                                "install a key vmctl generates")
    except (OSError, ValueError) as err:
        raise KeygenFailed("cannot read the private key %s: %s" % (private_path, err), path=private_path, hint=unencrypted)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode("ascii")


def is_public_key(text):
    """Whether ``text`` is an OpenSSH public key line (``ssh-ed25519 AAAA… comment``)."""
    fields = text.strip().split()
    return len(fields) >= 2 and fields[1].startswith("AAAA") and "PRIVATE KEY" not in text


def same_key(public_a, public_b):
    """Whether two OpenSSH public key lines are the same key (comments aside)."""
    return public_a.split()[:2] == public_b.split()[:2]
