"""Small real disk images for download tests, made with qemu-img and compressed with the real CLIs."""

import hashlib
import os
import random
import subprocess

COMPRESSORS = {
    "zst": ["zstd", "-q", "-f", "-k"],
    "xz": ["xz", "-f", "-k", "-T1"],
    "gz": ["gzip", "-f", "-k"],
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_raw(path, size_mb=8, data_mb=2, seed=0):
    """A sparse raw disk of ``size_mb`` with ``data_mb`` of random data in 256 KB runs spread over it."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "%dM" % size_mb], check=True)
    rng = random.Random(seed)
    run = 256 << 10
    slots = rng.sample(range(size_mb * (1 << 20) // run), data_mb * (1 << 20) // run)
    with open(path, "r+b") as f:
        for slot in sorted(slots):
            f.seek(slot * run)
            f.write(rng.randbytes(run) if hasattr(rng, "randbytes") else bytes(rng.getrandbits(8) for dummy in range(run)))
    return str(path)


def make_qcow2(path, size_mb=8, data_mb=2, seed=0, backing=None):
    """A qcow2 converted from a raw disk with data in it (or an overlay on ``backing``)."""
    path = str(path)
    if backing:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), path], check=True)
        return path
    raw = path + ".raw"
    make_raw(raw, size_mb, data_mb, seed)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path], check=True)
    os.unlink(raw)
    return path


def compress(path, codec):
    """``path.<codec>`` made by the real compressor (the original is kept)."""
    subprocess.run(COMPRESSORS[codec] + [str(path)], check=True)
    return "%s.%s" % (path, codec)
