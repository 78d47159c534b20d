# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image cache: cloud images pulled over HTTP(S), and checks of local images.

Layout under ``$XDG_DATA_HOME/vmctl/images/``::

    noble-server-cloudimg-amd64-3f2a9c1d0b7e.img        the image (decompressed, read-only, sparse)
    noble-server-cloudimg-amd64-3f2a9c1d0b7e.img.json   its sidecar: url, etag, last_modified, size,
                                                        sha256 (see below), format, fetched_at,
                                                        source digests
    .partial/3f2a9c1d0b7e.part (+ .part.json, .tmp)     an unfinished download, its validators, and
                                                        the image being decompressed from it
    .locks/3f2a9c1d0b7e.lock                            one flock per entry

The key (``3f2a9c1d0b7e``) is a hash of the URL, so a changed URL never reuses an old image. An
entry exists exactly when its sidecar exists: the image is written to ``.partial``, verified
(byte count, end of the compressed stream, checksum of the file as published, qemu-img format and
no references to other files), fsynced and renamed into place, and only then is the sidecar
written (atomically). A crash at any point leaves no entry, only a ``.partial`` file that the next
pull resumes and ``prune`` removes.

Resume and decompression: the ``.part`` file always holds the bytes *as published* (compressed),
so a resume is a plain ``Range: bytes=N-`` request with ``If-Range`` (the server answers 200 with
the whole file when it changed or ignores ranges, and we start over). Decompression runs while the
download streams, into a sparse ``.tmp`` file; on resume the bytes already in ``.part`` are
decompressed again from disk first (a local read, much faster than the network), because a
decompressor's state cannot be saved. This keeps one pass over the network, overlaps download and
decompression, and keeps memory bounded (a few MB per stage), at the cost of holding the compressed
and the decompressed copy on disk until the entry is committed.

Throughput: a compressed pull is a pipeline of threads (receive; save ``.part``; decompress; write
the image), connected by small bounded queues. zstd (``readinto``), hashlib and file writes release
the GIL. The ``.part`` and the image are written with O_DIRECT: they need no page cache, and filling
fresh page-cache pages is the most expensive part of a buffered write in a VM. The sha256 of the
compressed bytes is computed only when a checksum asks for it. The sha256 of a decompressed image
is not computed by the pull (hashing costs as much CPU as decompressing): the sidecar records
``null`` until ``CachedImage.digest()`` is first called (``vm_image``, ``vm_image_info``), which hashes
the image once and records the digest. An image published uncompressed is hashed as it arrives.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import http.client
import itertools
import json
import logging
import os
import posixpath
import re
import time
import warnings

from urllib.parse import unquote, urlparse

try:
    import requests
    import urllib3
except ImportError:
    requests = None
    urllib3 = None

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.images.stream import (
    MAGIC_LEN, READ_CHUNK, BufferedFile, DirectAppender, ImageWriter, SizeBound, Stage, compression_from_suffix,
    detect_compression, hash_file, make_decoder,
)
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    ChecksumMismatch, CorruptImage, DiskFull, DownloadFailed, DownloadInterrupted, DownloadTimeout, ImageInUse,
    ImageNotCached, ImageNotFound, ImageTooLarge, InvalidChecksum, InvalidImageUrl, ToolMissing, UnsafeImage,
)
from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
from ansible_collections.vmctl.core.plugins.module_utils.store import atomic_write
from ansible_collections.vmctl.core.plugins.module_utils.model import validate_name

LOG = logging.getLogger("vmctl.images")

KEY_LEN = 12
SIDECAR_VERSION = 1
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
CHECKSUM_FILE_LIMIT = 4 << 20
LOG_INTERVAL = 5.0
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}")
_HEX = re.compile(r"[0-9a-fA-F]+")

# Bounds of a download (each settable per pull; see DownloadLimits and SizeBound).
DEFAULT_MAX_IMAGE_SIZE = 64 << 30  # bytes an image may have on disk when its header does not say less
DEADLINE_FLOOR = 600               # seconds every download gets, however small the file
DEADLINE_RATE = 256 << 10          # bytes/s: the default deadline allows the whole file at this rate
DEADLINE_UNKNOWN_SIZE = 3600       # seconds when the server does not say the size
STALL_TIMEOUT = 60                 # seconds: fewer than STALL_MIN_BYTES in this long is a stall
STALL_MIN_BYTES = 64 << 10


def url_key(url):
    """The cache key of a URL: the first 12 hex digits of its sha256."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:KEY_LEN]


def is_url(value):
    return isinstance(value, str) and urlparse(value).scheme in ("http", "https")


def _check_url(url):
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidImageUrl("image URL %r is not an http(s) URL" % (url,), url=url)


def _url_file_name(url):
    return unquote(posixpath.basename(urlparse(url).path))


def cache_file_name(url, name=None):
    """``<readable name>-<key><.ext>``: the name given, else the URL's file name without its
    compression suffix, made safe for a path."""
    if name:
        base = validate_name(name, what="image name")
    else:
        base = compression_from_suffix(_url_file_name(url))[1]
        base = _UNSAFE_NAME_CHARS.sub("_", base).strip("._-")[:80] or "image"
    stem, ext = os.path.splitext(base)
    if not stem or not _EXTENSION.fullmatch(ext) or ext.lower() == ".json":
        stem, ext = base, ""
    return "%s-%s%s" % (stem, url_key(url), ext)


# --- checksums -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Checksum:
    """What the user asked for: an algorithm and digest, or a checksum file to find them in."""

    algorithm: str | None
    digest: str | None = None
    file_url: str | None = None

    def __str__(self):
        return "%s:%s" % (self.algorithm, self.digest) if self.digest else "%s" % self.file_url


def parse_checksum(spec):
    """``sha256:<hex>``, ``sha512:<hex>``, ``[sha256:|sha512:]<URL of a SHA256SUMS-style file>``."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidChecksum("checksum %r is empty or not a string" % (spec,))
    spec = spec.strip()
    algorithm, rest = None, spec
    head, sep, tail = spec.partition(":")
    if sep and head.lower() in DIGEST_LENGTHS:
        algorithm, rest = head.lower(), tail.strip()
    if is_url(rest):
        return Checksum(algorithm, file_url=rest)
    if algorithm is None:
        raise InvalidChecksum("checksum %r names no algorithm" % spec, checksum=spec)
    if len(rest) != DIGEST_LENGTHS[algorithm] or not _HEX.fullmatch(rest):
        raise InvalidChecksum("checksum %r is not a %s digest (%d hex digits)" % (spec, algorithm, DIGEST_LENGTHS[algorithm]),
                              checksum=spec)
    return Checksum(algorithm, rest.lower())


_SUMS_GNU = re.compile(r"^(?:\\)?([0-9a-fA-F]{64}|[0-9a-fA-F]{128}) [ *]?(.+)$")
_SUMS_BSD = re.compile(r"^(SHA256|SHA512) ?\((.+)\) ?= ?([0-9a-fA-F]+)$")


def find_in_checksum_file(text, filename, algorithm=None):
    """The (algorithm, digest) for ``filename`` in a checksum file: GNU coreutils lines
    (``<hex>  name`` or ``<hex> *name``) or BSD lines (``SHA256 (name) = <hex>``), as published
    next to cloud images (PGP armor and comments are skipped). ``None`` when it is not listed."""
    found = set()
    for line in text.splitlines():
        line = line.strip()
        gnu, bsd = _SUMS_GNU.match(line), _SUMS_BSD.match(line)
        if gnu:
            digest, name = gnu.group(1), gnu.group(2)
            algo = "sha256" if len(digest) == 64 else "sha512"
        elif bsd:
            algo, name, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
        else:
            continue
        name = name.strip()
        if name.startswith("./"):
            name = name[2:]
        if name != filename or (algorithm and algo != algorithm) or len(digest) != DIGEST_LENGTHS[algo]:
            continue
        found.add((algo, digest.lower()))
    if len(found) > 1:
        raise InvalidChecksum("the checksum file lists %s more than once with different digests" % filename)
    return found.pop() if found else None


# --- image safety ----------------------------------------------------------------------------------

_REFERENCE_KEYS = ("data-file", "filename", "backing-file", "backing-filename", "file")


def external_references(info):
    """Files other than itself that an image refers to, from ``qemu-img info``: a backing file (the
    classic qcow2 attack: a "backing file" of /etc/shadow or /dev/sda is read into the guest), a
    qcow2 external data file, VMDK extents in other files. Empty for a self-contained image."""
    refs = []
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        refs.append("backing file %s" % backing)
    own = info.get("filename")

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _REFERENCE_KEYS and isinstance(value, str):
                    if value != own:
                        refs.append("%s %s" % (key, value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(info.get("format-specific") or {})
    return refs


# --- results ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class CachedImage:
    """An image ready to be a VM's base: a cache entry (``url`` set) or a checked local file.

    ``sha256`` is ``None`` while unknown: a compressed download is not hashed while it streams (that
    would cost as much CPU as decompressing it). ``digest()`` hashes a cache entry's image when asked
    and records the digest in its sidecar (once); ``to_dict()`` calls it, ``to_dict(digest=False)``,
    ``==`` and ``repr`` never hash."""

    path: str
    format: str | None
    size: int | None
    sha256: str | None = None
    url: str | None = None
    downloaded: bool = False
    name: str | None = None
    virtual_size: int | None = None
    fetched_at: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    compression: str | None = None
    source_size: int | None = None
    source_digests: dict = dataclasses.field(default_factory=dict)
    used_by: list | None = None

    def digest(self):
        """The sha256 of the image: known, or computed now for a cache entry (``None`` if the entry
        was removed or downloaded again meanwhile)."""
        cache = vars(self).pop("_cache", None)
        if self.sha256 is None and cache is not None:
            self.sha256 = cache._record_sha256(self)
        return self.sha256

    def to_dict(self, digest=True):
        if digest:
            self.digest()
        return dataclasses.asdict(self)

    def sidecar(self):
        data = self.to_dict(digest=False)
        for key in ("path", "downloaded", "used_by"):
            data.pop(key)
        data["version"] = SIDECAR_VERSION
        data["file"] = os.path.basename(self.path)
        return data

    @classmethod
    def from_sidecar(cls, data, path):
        fields = {f.name for f in dataclasses.fields(cls)} - {"path", "downloaded", "used_by"}
        kwargs = {k: v for k, v in data.items() if k in fields}
        return cls(path=path, **kwargs)


def _iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _unlink(*paths_):
    for path in paths_:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_sidecar(entry):
    atomic_write(entry.path + ".json", json.dumps(entry.sidecar(), indent=2) + "\n", mode=0o644)  # fsyncs the directory


def human_size(n):
    """``n`` bytes as people read them, in the binary units they are computed in: ``512 B``, ``1.5 MiB``, ``3.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0
    return "%d" % n


class _Meter:
    """Progress to the ``progress(done, total)`` callback (every chunk) and to the log (every few s)."""

    def __init__(self, url, total, callback, done=0):
        self.url, self.total, self.callback = url, total, callback
        self.done = self.start_done = done
        self.started = self.logged = time.monotonic()

    def add(self, n):
        self.done += n
        if self.callback:
            self.callback(self.done, self.total)
        now = time.monotonic()
        if now - self.logged >= LOG_INTERVAL:
            self.logged = now
            LOG.info("pulling %s: %s", self.url, self.describe(now))

    def describe(self, now=None):
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        if self.total:
            return "%d%% (%s of %s) at %s/s" % (100 * self.done // self.total, human_size(self.done), human_size(self.total), human_size(rate))
        return "%s at %s/s" % (human_size(self.done), human_size(rate))


class DownloadLimits:
    """The time bounds of one download: an overall ``deadline`` in seconds (default: the file's size at
    ``DEADLINE_RATE``, at least ``DEADLINE_FLOOR``; ``DEADLINE_UNKNOWN_SIZE`` without a size), and a
    stall: fewer than ``STALL_MIN_BYTES`` received in ``stall_timeout`` seconds (a body trickling a
    byte at a time, or none). Breaking either raises DownloadTimeout naming the limit."""

    def __init__(self, deadline=None, stall_timeout=None):
        self.deadline = deadline
        self.stall_timeout = stall_timeout or STALL_TIMEOUT
        self.started = time.monotonic()
        self.seconds = deadline or DEADLINE_UNKNOWN_SIZE
        self._window = (self.started, 0)

    def sized(self, total):
        """The body's size is known: scale the default deadline to it."""
        if not self.deadline and total:
            self.seconds = max(DEADLINE_FLOOR, total / float(DEADLINE_RATE))

    def check(self, url, meter, n=0, silent=False):
        """After ``n`` more bytes arrived; ``silent``: none arrived for ``stall_timeout`` seconds."""
        now = time.monotonic()
        if now - self.started > self.seconds:
            raise DownloadTimeout(
                "download of %s did not finish within its deadline of %d s (%s received)" % (url, self.seconds, _progress_text(meter)),
                url=url, limit="deadline", seconds=self.seconds, received=meter.done,
                hint="Raise the deadline (vm_image download_timeout, vmctl image pull --deadline SECONDS) and pull "
                     "again; the partial download was removed")
        begin, received = self._window[0], self._window[1] + n
        if silent or now - begin >= self.stall_timeout:
            if received < STALL_MIN_BYTES:
                raise DownloadTimeout(
                    "download of %s stalled: %d bytes in the last %d s (less than %d; %s received)"
                    % (url, received, now - begin, STALL_MIN_BYTES, _progress_text(meter)),
                    url=url, limit="stall_timeout", seconds=self.stall_timeout, received=meter.done,
                    hint="The server sends too slowly (the partial download was removed); try again later, or "
                         "raise the stall timeout (vm_image stall_timeout, vmctl image pull --stall-timeout SECONDS)")
            begin, received = now, 0
        self._window = (begin, received)


def _body_chunks(resp, url, meter, limits, decode_content=False):
    """The raw (not content-decoded) body in pieces of up to ``READ_CHUNK``: whatever has arrived
    (``read1``), so progress and Ctrl-C stay responsive on slow links; network failures become
    ``DownloadInterrupted`` naming how far the download got, and ``limits`` (DownloadLimits) are checked as
    each piece arrives (a read waits at most the stall timeout)."""
    raw = resp.raw
    read = raw.read1 if hasattr(raw, "read1") else raw.read  # read1: urllib3 >= 2
    while True:
        try:
            chunk = read(READ_CHUNK, decode_content=decode_content)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            limits.check(url, meter, silent=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
            raise DownloadInterrupted("download of %s was interrupted after %s: %s" % (url, _progress_text(meter), err),
                                      url=url, received=meter.done, total=meter.total)
        if not chunk:
            return
        limits.check(url, meter, len(chunk))
        yield chunk


def _progress_text(meter):
    return "%d of %s bytes" % (meter.done, meter.total if meter.total is not None else "?")


def _content_range(resp):
    """(first byte, total or None) of a 206 answer."""
    match = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", resp.headers.get("Content-Range", ""))
    if not match:
        return None, None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _strong_etag(etag):
    return etag if etag and not etag.startswith("W/") else None


def _require_requests():
    if requests is None:
        raise ToolMissing("the Python package 'requests' is needed to download images",
                          hint="Install it for the Python that runs vmctl (Debian: apt install python3-requests)")


# --- the cache ---------------------------------------------------------------------------------------

class ImageCache:
    """``ImageCache(users=...).pull(url)`` and friends; see the module docstring for the guarantees.

    ``users()`` returns ``{name: base image path}`` of every VM (``VmManager.image_users``; the manager's
    ``image_cache()`` builds the cache with it): an image a VM is made from is never removed or replaced.
    """

    def __init__(self, root=None, users=None):
        if users is None:
            raise TypeError("ImageCache needs users (VmManager().image_cache() passes them): "
                            "without them an image in use could be removed")
        self.root = os.path.abspath(root or paths.images_dir())
        self._vm_images = users

    # -- paths and locks --
    def _dirs(self):
        paths.ensure_private_dir(self.root)
        for sub in (".partial", ".locks"):
            paths.ensure_private_dir(os.path.join(self.root, sub))

    def _partial(self, key, suffix):
        return os.path.join(self.root, ".partial", key + suffix)

    def _lock_path(self, key):
        return os.path.join(self.root, ".locks", key + ".lock")

    def _lock(self, key, blocking=True):
        """flock on the entry's lock file. The file may be deleted by ``prune`` while we wait, so
        after locking, check that the path still names the file we locked, and retry if not."""
        path = self._lock_path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, key):
        self._dirs()
        fd = self._lock(key)
        try:
            yield
        finally:
            os.close(fd)

    def _discard_partial(self, key):
        _unlink(self._partial(key, ".part"), self._partial(key, ".part.json"), self._partial(key, ".tmp"))

    # -- entries --
    def _sidecars(self, key=None):
        return sorted(glob.glob(os.path.join(glob.escape(self.root), ("*-%s*.json" % key) if key else "*.json")))

    def _load(self, sidecar):
        """The entry of a sidecar file, or ``None`` (with a warning) if it is unreadable or the image
        no longer matches it — a damaged entry is never served; the next pull replaces it."""
        try:
            with open(sidecar, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
            if not isinstance(data, dict) or not data.get("url") or not data.get("file"):
                raise ValueError("not a vmctl image sidecar")
            entry = CachedImage.from_sidecar(data, os.path.join(self.root, data["file"]))
        except (OSError, ValueError, TypeError) as err:
            LOG.warning("ignoring unreadable image sidecar %s: %s", sidecar, err)
            return None
        if entry.path + ".json" != sidecar:
            LOG.warning("ignoring image sidecar %s: it describes %s", sidecar, entry.path)
            return None
        try:
            size = os.stat(entry.path).st_size
        except OSError:
            size = None
        if size != entry.size:
            LOG.warning("cached image %s is damaged or missing (size %s, expected %s); it will be downloaded again",
                        entry.path, size, entry.size)
            return None
        entry._cache = self  # for digest(): its sha256, if not known, is computed when asked for
        return entry

    def _entry_of_path(self, path):
        """The entry whose image is ``path``, or ``None`` (also for files outside the cache)."""
        if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.root):
            return None
        sidecar = os.path.join(self.root, os.path.basename(path)) + ".json"
        return self._load(sidecar) if os.path.exists(sidecar) else None

    def _entry(self, key, url):
        for sidecar in self._sidecars(key):
            entry = self._load(sidecar)
            if entry is not None and entry.url == url:
                return entry
        return None

    def _users(self):
        """realpath of each image used by a VM -> VM names."""
        users = {}
        for name, image_path in sorted(self._vm_images().items()):
            if image_path:
                users.setdefault(os.path.realpath(image_path), []).append(name)
        return users

    def _with_users(self, entry, users=None):
        users = self._users() if users is None else users
        entry.used_by = users.get(os.path.realpath(entry.path), [])
        return entry

    # -- public API --
    def lookup(self, url):
        """The cache entry of ``url``, or ``None``."""
        _check_url(url)
        return self._entry(url_key(url), url)

    def list(self):
        """Every cache entry, by name, with ``used_by`` (the VMs whose base image it is)."""
        users = self._users()
        entries = [self._load(sidecar) for sidecar in self._sidecars()]
        return [self._with_users(e, users) for e in entries if e is not None]

    def pull(self, url, checksum=None, name=None, progress=None, force=False, timeout=30, validate_certs=True,
             dry_run=False, deadline=None, stall_timeout=None, max_size=None):
        """Ensure ``url`` is cached and return it (``downloaded`` tells whether it was fetched now).

        ``checksum``: ``sha256:<hex>``, ``sha512:<hex>`` or a checksum file URL; it is checked
        against the file as published (compressed bytes for a ``.zst``) before anything enters the
        cache, and a cached entry that does not match it is downloaded again. ``name``: the readable
        part of the file name on first download. ``progress(done_bytes, total_bytes_or_None)``.
        ``force``: download even if cached. ``dry_run``: decide only; nothing is downloaded.
        Bounds: ``timeout`` for connecting and the answer's headers; ``deadline`` (seconds, default
        scaled to the size) and ``stall_timeout`` for the body (DownloadLimits); ``max_size`` bytes
        for the image on disk (default DEFAULT_MAX_IMAGE_SIZE; less when a qcow2 header declares a
        smaller virtual size), with free space checked as it is written. Breaking any bound leaves
        nothing behind (not even the ``.part``); an interrupted transfer (connection lost, Ctrl-C) keeps
        the ``.part`` for a resume.
        """
        _check_url(url)
        expected = parse_checksum(checksum) if checksum is not None else None
        if name is not None:
            validate_name(name, what="image name")
        key = url_key(url)
        with self._locked(key):
            entry = self._entry(key, url)
            digest = None
            if expected is not None:
                digest = self._resolve_checksum(expected, url, timeout, validate_certs, DownloadLimits(deadline, stall_timeout))
            if entry is not None and not force:
                if digest is None or self._entry_matches(entry, digest, record=not dry_run):
                    if not dry_run and os.path.exists(self._partial(key, ".part")):
                        self._discard_partial(key)  # left by a crash after the commit
                    return entry
                LOG.info("cached %s does not match %s:%s; downloading it again", url, digest[0], digest[1])
            if entry is not None:
                users = self._users().get(os.path.realpath(entry.path))
                if users:
                    raise ImageInUse("cannot download %s again: its cached image %s is the base of VM(s) %s"
                                     % (url, entry.path, ", ".join(users)), path=entry.path, url=url, vms=users,
                                     hint="Destroy those VMs first; replacing a base image under an overlay corrupts it")
            path = entry.path if entry is not None else os.path.join(self.root, cache_file_name(url, name))
            if dry_run:
                return CachedImage(path=path, format=None, size=None, sha256=None, url=url, downloaded=True,
                                   name=name or (entry.name if entry else None))
            _require_requests()
            find_tool("qemu-img")  # needed to check the image: fail before downloading, not after
            limits = DownloadLimits(deadline, stall_timeout)
            return self._download(url, key, path, digest, name or (entry.name if entry else None),
                                  progress, timeout, validate_certs, limits, max_size or DEFAULT_MAX_IMAGE_SIZE)

    def inspect(self, path_or_url):
        """qemu-img's view of an image (format, virtual and disk size, backing file, references to
        other files), plus the cache metadata when it is a cache entry."""
        if is_url(path_or_url):
            entry = self.lookup(path_or_url)
            if entry is None:
                raise ImageNotFound("%s is not in the image cache" % path_or_url, url=path_or_url,
                                    hint="Pull it first (vmctl.core.vm_image)")
            path = entry.path
        else:
            path = os.path.abspath(os.path.expanduser(path_or_url))
            entry = self._entry_of_path(path)
        info = qemu_img.info(path)
        data = {
            "path": path,
            "format": info.get("format"),
            "virtual_size": info.get("virtual-size"),
            "disk_size": info.get("actual-size"),
            "size": os.stat(path).st_size,
            "backing_file": info.get("full-backing-filename") or info.get("backing-filename"),
            "backing_format": info.get("backing-filename-format"),
            "external_references": external_references(info),
            "dirty": info.get("dirty-flag", False),
            "cached": entry is not None,
        }
        if entry is not None:
            cached = self._with_users(entry).to_dict()
            for key in ("path", "format", "size", "virtual_size", "downloaded"):
                cached.pop(key)
            data.update(cached)
        return data

    def local_image(self, path, allow_backing=False):
        """A local image checked for use as a base: it exists, qemu-img knows its format, and it does
        not refer to other files (unless ``allow_backing``)."""
        path = os.path.abspath(os.path.expanduser(path))
        info = qemu_img.info(path)  # a missing path, a directory, a FIFO or a device is an error saying which
        refs = external_references(info)
        if refs and not allow_backing:
            raise UnsafeImage("image %s refers to other files (%s); refusing to use it as a base image" % (path, "; ".join(refs)),
                              path=path, references=refs)
        return CachedImage(path=path, format=info.get("format"), size=os.stat(path).st_size, sha256=None,
                           virtual_size=info.get("virtual-size"))

    def remove(self, url_or_path, force=False, dry_run=False):
        """Remove an entry (by URL or by its path in the cache); returns it, or ``None`` if it was
        not cached. Refused while a VM uses it, unless ``force``."""
        if is_url(url_or_path):
            url = url_or_path
        else:
            path = os.path.abspath(os.path.expanduser(url_or_path))
            if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.root):
                raise ImageNotCached("%s is not in the image cache %s; vmctl only removes images it downloaded" % (path, self.root),
                                     path=path,
                                     hint="Give the URL of the image or a path listed by vmctl.core.vm_image_info")
            entry = self._entry_of_path(path)
            if entry is None:
                return None
            url = entry.url
        key = url_key(url)
        with self._locked(key):
            entry = self._entry(key, url)
            if entry is None:
                if not dry_run:
                    self._discard_partial(key)
                return None
            self._with_users(entry)
            if entry.used_by and not force:
                raise ImageInUse("image %s (%s) is the base of VM(s) %s" % (entry.path, url, ", ".join(entry.used_by)),
                                 path=entry.path, url=url, vms=entry.used_by)
            if not dry_run:
                _unlink(entry.path + ".json", entry.path)
                self._discard_partial(key)
                LOG.info("removed cached image %s (%s)", entry.path, url)
            return entry

    def prune(self, dry_run=False):
        """Remove entries no VM uses, unfinished downloads no pull is working on, image files without
        a sidecar and stale lock files. Returns ``[{"path", "reason", "size"}]``."""
        if not os.path.isdir(self.root):
            return []
        self._dirs()
        users = self._users()
        removed = []

        def drop(path, reason):
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                return
            if not dry_run:
                _unlink(path)
            removed.append({"path": path, "reason": reason, "size": size})

        keys = set()
        for sidecar in self._sidecars():
            keys.add(self._key_of(sidecar[:-len(".json")]))
        root = glob.escape(self.root)
        for image in glob.glob(os.path.join(root, "*")):
            if not image.endswith(".json"):
                keys.add(self._key_of(image))
        for path in glob.glob(os.path.join(root, ".partial", "*")) + glob.glob(os.path.join(root, ".locks", "*.lock")):
            keys.add(os.path.basename(path).split(".", 1)[0])
        keys.discard(None)

        for key in sorted(keys):
            fd = self._lock(key, blocking=False)
            if fd is None:
                continue  # a pull or remove is working on it
            try:
                kept = False
                for sidecar in self._sidecars(key):
                    entry = self._load(sidecar)
                    image = sidecar[:-len(".json")]
                    if entry is not None and users.get(os.path.realpath(entry.path)):
                        kept = True
                        continue
                    drop(image, "unused" if entry is not None else "damaged entry")
                    drop(sidecar, "sidecar")
                for image in glob.glob(os.path.join(root, "*-%s*" % key)):
                    if not image.endswith(".json") and not os.path.exists(image + ".json") and self._key_of(image) == key:
                        if not users.get(os.path.realpath(image)):
                            drop(image, "no sidecar")
                        else:
                            kept = True
                for suffix in (".part", ".part.json", ".tmp"):
                    drop(self._partial(key, suffix), "unfinished download")
                if not kept and not dry_run:
                    _unlink(self._lock_path(key))  # waiters re-check the inode and retry
            finally:
                os.close(fd)
        return removed

    @staticmethod
    def _key_of(path):
        match = re.search(r"-([0-9a-f]{%d})(\.[A-Za-z0-9]{1,8})?$" % KEY_LEN, os.path.basename(path))
        return match.group(1) if match else None

    # -- checksums --
    def _resolve_checksum(self, expected, url, timeout, verify, limits=None):
        """(algorithm, hex digest): as given, or looked up in the checksum file (fetched within ``limits``)."""
        if expected.digest:
            return expected.algorithm, expected.digest
        _require_requests()
        text = self._fetch_text(expected.file_url, timeout, verify, limits or DownloadLimits())
        filename = _url_file_name(url)
        found = find_in_checksum_file(text, filename, expected.algorithm)
        if found is None:
            raise InvalidChecksum("checksum file %s lists no %sdigest for %s" % (
                expected.file_url, (expected.algorithm + " ") if expected.algorithm else "", filename),
                url=url, checksum_url=expected.file_url,
                hint="Check that the checksum file belongs to this image's directory")
        return found

    def _fetch_text(self, url, timeout, verify, limits):
        """A checksum file's text: at most CHECKSUM_FILE_LIMIT bytes, within the download's time bounds (a
        server trickling it a byte at a time is a stall, not a wait holding the image's lock forever)."""
        with contextlib.closing(requests.Session()) as session:
            resp = self._get(session, url, {}, timeout, verify, limits.stall_timeout)
            with contextlib.closing(resp):
                if resp.status_code != 200:
                    raise DownloadFailed("GET %s (checksum file) returned HTTP %d %s" % (url, resp.status_code, resp.reason),
                                         url=url, status=resp.status_code)
                limits.sized(CHECKSUM_FILE_LIMIT)
                meter = _Meter(url, None, None)
                data = bytearray()
                for chunk in _body_chunks(resp, url, meter, limits, decode_content=True):
                    meter.add(len(chunk))
                    data += chunk
                    if len(data) > CHECKSUM_FILE_LIMIT:
                        break
        if len(data) > CHECKSUM_FILE_LIMIT:
            raise InvalidChecksum("checksum file %s is larger than %s" % (url, human_size(CHECKSUM_FILE_LIMIT)), checksum_url=url)
        return data.decode("utf-8", "replace")

    def _entry_matches(self, entry, digest, record=True):
        algorithm, value = digest
        known = entry.source_digests.get(algorithm)
        if known is None and not entry.compression:
            # Published uncompressed: the cached file is the published file; hash it and remember.
            known = hash_file(entry.path, algorithm)
            if record:
                entry.source_digests[algorithm] = known
                _write_sidecar(entry)
        return known == value

    def _record_sha256(self, image):
        """The sha256 of a cache entry's image, computed now and recorded in its sidecar (under the
        entry's lock); ``None`` if the entry was removed or downloaded again meanwhile."""
        key = url_key(image.url)
        with self._locked(key):
            entry = self._entry(key, image.url)
            if entry is None or (entry.path, entry.fetched_at) != (image.path, image.fetched_at):
                return None
            if entry.sha256 is None:
                entry.sha256 = hash_file(entry.path, "sha256")
                _write_sidecar(entry)
            return entry.sha256

    # -- download --
    @staticmethod
    def _get(session, url, headers, timeout, verify, read_timeout=None):
        headers = dict(headers, **{"Accept-Encoding": "identity", "User-Agent": "vmctl.core image cache"})
        try:
            with warnings.catch_warnings():
                if not verify:  # said once in our log, not on every request by urllib3
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                    if url.startswith("https:"):
                        LOG.warning("not verifying the TLS certificate of %s (validate_certs is false)", url)
                return session.get(url, headers=headers, stream=True, timeout=(timeout, read_timeout or timeout), verify=verify,
                                   allow_redirects=True)
        except requests.exceptions.SSLError as err:
            raise DownloadFailed("GET %s: TLS verification failed: %s" % (url, err), url=url,
                                 hint="Fix the server's certificate or the CA bundle; validate_certs=false skips the check (insecure)")
        except requests.exceptions.Timeout:
            raise DownloadFailed("GET %s: no answer within %ss" % (url, timeout), url=url)
        except requests.exceptions.RequestException as err:
            raise DownloadFailed("GET %s failed: %s" % (url, err), url=url)

    def _download(self, url, key, path, digest, name, progress, timeout, verify, limits, max_size):
        part = self._partial(key, ".part")
        tmp = self._partial(key, ".tmp")
        with contextlib.closing(requests.Session()) as session:
            resp, offset, total = self._open(session, url, key, timeout, verify, limits.stall_timeout)
            with contextlib.closing(resp):
                limits.sized(total)
                meter = _Meter(url, total, progress, offset)
                chunks = _body_chunks(resp, url, meter, limits) if resp.status_code != 416 else iter(())
                bound = SizeBound(max_size, os.path.dirname(tmp))
                try:
                    result = self._receive(url, chunks, part, tmp, offset, meter, digest, bound)
                except (CorruptImage, ChecksumMismatch):
                    self._discard_partial(key)
                    raise
                except DownloadTimeout:  # a time bound: nothing stays behind either (the limit is named)
                    self._discard_partial(key)
                    raise
                except (ImageTooLarge, DiskFull) as err:  # a size bound: nothing stays behind
                    self._discard_partial(key)
                    raise type(err)("%s: %s" % (url, err.message), hint=err.hint, url=url, **err.details)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        _unlink(tmp)
                        raise
                    self._discard_partial(key)
                    raise DiskFull("%s: the disk holding %s is full" % (url, self.root), url=url,
                                   hint="Free space there (vmctl image prune removes unused images), then pull again")
                except BaseException:
                    _unlink(tmp)  # the .part stays for a resume
                    raise
        try:
            image_file, codec, digests, size, sha256 = result
            info = qemu_img.info(image_file)
            refs = external_references(info)
            if refs:
                raise UnsafeImage("image downloaded from %s refers to other files (%s); refusing to cache it" % (url, "; ".join(refs)),
                                  url=url, references=refs,
                                  hint="A published base image must be self-contained; ask its publisher, or flatten it yourself "
                                       "with 'qemu-img convert' and use it as a local image")
            part_meta = self._read_part_meta(key, url) or {}
            entry = CachedImage(
                path=path, format=info.get("format"), size=size, sha256=sha256, url=url, downloaded=True, name=name,
                virtual_size=info.get("virtual-size"), fetched_at=_iso_now(), etag=part_meta.get("etag"),
                last_modified=part_meta.get("last_modified"), compression=codec, source_size=meter.done,
                source_digests=digests)
            os.chmod(image_file, 0o444)  # a base image must never be written to
            os.replace(image_file, path)
            _write_sidecar(entry)
        except BaseException:
            self._discard_partial(key)
            raise
        self._discard_partial(key)
        LOG.info("cached %s as %s (%s, %s)", url, path, entry.format, human_size(size))
        entry._cache = self  # for digest(): its sha256, if not known, is computed when asked for
        return entry

    def _read_part_meta(self, key, url):
        try:
            with open(self._partial(key, ".part.json"), "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("url") == url else None

    def _open(self, session, url, key, timeout, verify, read_timeout=None):
        """GET the body, resuming the ``.part`` when its validators allow. Returns the response,
        the offset its body starts at, and the total size (or ``None``)."""
        part = self._partial(key, ".part")
        meta = self._read_part_meta(key, url)
        validator = meta and (_strong_etag(meta.get("etag")) or meta.get("last_modified"))
        offset = os.path.getsize(part) if validator and os.path.exists(part) else 0
        while True:
            headers = {"Range": "bytes=%d-" % offset, "If-Range": validator} if offset else {}
            resp = self._get(session, url, headers, timeout, verify, read_timeout)
            status = resp.status_code
            if offset and status == 206:
                start, total = _content_range(resp)
                etag = resp.headers.get("ETag")
                if start == offset and (not meta.get("etag") or not etag or etag == meta["etag"]) \
                        and (meta.get("total") is None or total == meta["total"]):
                    LOG.info("resuming %s at byte %d of %s", url, offset, total)
                    return resp, offset, total
                LOG.info("%s: the partial download does not match the server's file; starting over", url)
            elif offset and status == 416:
                match = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", resp.headers.get("Content-Range", ""))
                if match and int(match.group(1)) == offset and meta.get("total") in (None, offset):
                    return resp, offset, offset  # the .part was already complete
            elif status in (200, 203):
                if offset:
                    LOG.info("%s: the server sent the whole file (it changed, or ignores ranges); starting over", url)
                total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
                new_meta = {"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
                            "total": total, "started_at": _iso_now()}
                _unlink(part, self._partial(key, ".tmp"))
                atomic_write(self._partial(key, ".part.json"), json.dumps(new_meta) + "\n")
                return resp, 0, total
            else:
                resp.close()
                if status in (404, 410):
                    self._discard_partial(key)
                hint = ("Check the URL" if 400 <= status < 500 else
                        "The server failed; try again later (a partial download is kept and resumed)")
                raise DownloadFailed("GET %s returned HTTP %d %s" % (url, status, resp.reason), url=url, status=status, hint=hint)
            resp.close()
            offset = 0

    def _receive(self, url, chunks, part, tmp, offset, meter, digest, bound=None):
        """Stream the body into ``.part`` (and, when compressed, through the decoder into ``.tmp``),
        verifying length, stream end and checksum. Returns (image file, codec, source digests, size,
        sha256 of the image or ``None``: a decompressed image is hashed only when asked for)."""
        closers = []
        stages = []  # when compressed: decode, write the image, save .part (in parallel)
        with open(part, "r+b" if offset else "w+b") as f:
            first, head = [], f.read(MAGIC_LEN)
            if not offset:  # learn the compression from the first bytes of the body
                for chunk in chunks:
                    first.append(chunk)
                    head += chunk[:MAGIC_LEN]
                    if len(head) >= MAGIC_LEN:
                        break
            codec = detect_compression(head, _url_file_name(url))
            # The published bytes are hashed for the checksum, and when they are the image itself (then
            # it costs little next to receiving). Hashing a decompressed image would cost as much CPU as
            # decompressing it: CachedImage.digest() does it when asked for.
            algorithms = set([digest[0]] if digest else []) | (set() if codec else {"sha256"})
            hashes = dict((a, hashlib.new(a)) for a in sorted(algorithms))
            try:
                if codec:
                    out = DirectAppender(tmp, truncate=True)
                    closers.append(out.close)
                    image = ImageWriter(out, hash=False, bound=bound)
                    writer = Stage("vmctl-image-write", image.write)
                    writer.start()
                    stages = [make_decoder(codec, writer), writer]
                # On resume, the bytes already in .part go through the hashes (and the decoder) first.
                f.seek(0)
                remaining = offset
                while remaining:
                    chunk = f.read(min(READ_CHUNK, remaining))
                    if not chunk:
                        raise CorruptImage("the partial download %s shrank while reading it" % part)
                    remaining -= len(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    if stages:
                        stages[0].put(chunk)
                if codec:
                    # The compressed bytes go to .part in a stage of their own: O_DIRECT writes wait for
                    # the disk, and receiving should not.
                    appender = DirectAppender(part, offset, eager=True)
                    closers.append(appender.close)
                    saver = Stage("vmctl-image-part", appender.write)
                    saver.start()
                    stages.append(saver)

                    def store(chunk):
                        saver.put(chunk)
                        stages[0].put(chunk)
                else:
                    image = ImageWriter(BufferedFile(f), hash=False, bound=bound)  # the published file is the image: hashed once, above
                    store = image.write
                for chunk in itertools.chain(first, chunks):
                    for h in hashes.values():
                        h.update(chunk)
                    store(chunk)
                    meter.add(len(chunk))
                if meter.total is not None and meter.done != meter.total:
                    raise DownloadInterrupted("download of %s ended after %s" % (url, _progress_text(meter)),
                                              url=url, received=meter.done, total=meter.total)
                if codec:
                    for stage in stages:
                        stage.finish()
                    appender.close()  # .part needs no fsync: it is deleted once the image is committed
                    size = image.finish()
                else:
                    size = image.finish()
            except CorruptImage as err:
                raise CorruptImage("%s: %s" % (url, err.message), url=url, compression=codec)
            finally:
                for stage in stages:
                    if stage.is_alive():
                        stage.abort()
                for close in closers:
                    close()  # what arrived stays in .part, for a resume
        digests = dict((a, h.hexdigest()) for a, h in hashes.items())
        if digest and digests[digest[0]] != digest[1]:
            raise ChecksumMismatch("checksum mismatch for %s: expected %s:%s, got %s:%s" % (
                url, digest[0], digest[1], digest[0], digests[digest[0]]),
                url=url, expected="%s:%s" % digest, actual="%s:%s" % (digest[0], digests[digest[0]]))
        LOG.info("downloaded %s: %s", url, meter.describe())
        return (tmp if codec else part), codec, digests, size, (None if codec else digests["sha256"])
