# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turning a published byte stream into a disk image file, in bounded memory.

Private helper of ``images.py``: compression detection (magic bytes, then file suffix), streaming
decoders for zstd, xz and gzip that never hold more than one output chunk (a 32 KB zstd frame can
expand to 1 GB of zeros), detection of streams cut short (a truncated zstd stream is accepted
silently by the zstd library itself), a sparse image writer over a page-cache or an O_DIRECT
output, and pipeline stages (threads) so decompression, hashing and writing overlap the download.
"""

from __future__ import annotations

__metaclass__ = type

import errno
import fcntl
import hashlib
import itertools
import lzma
import mmap
import os
import queue
import threading
import zlib

try:
    import zstandard
except ImportError:  # only needed for zstd images; reported when one is met
    zstandard = None

from ansible_collections.vmctl.core.plugins.module_utils.errors import CorruptImage, DiskFull, ImageTooLarge, ToolMissing

READ_CHUNK = 4 << 20     # network and file reads
OUT_CHUNK = 1 << 20      # most decompressed bytes held at once
SPARSE_BLOCK = 64 << 10  # granularity of hole detection (a qcow2 cluster)
WRITEBACK_STEP = 32 << 20  # start writeback of the image every 32 MB written
QUEUE_DEPTH = 4          # chunks waiting between two threads: bounds memory (4 x 4 MB, 4 x 1 MB)

# Comparing bytes objects is a memcmp; comparing memoryviews is 30x slower.
_ZERO_BLOCK = bytes(SPARSE_BLOCK)
_ZERO_PAGE = bytes(4096)


MAGIC = ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gzip"))
SUFFIXES = ((".zst", "zstd"), (".zstd", "zstd"), (".xz", "xz"), (".gz", "gzip"))
MAGIC_LEN = 6


def compression_from_suffix(name):
    lower = name.lower()
    for suffix, codec in SUFFIXES:
        if lower.endswith(suffix):
            return codec, name[:-len(suffix)]
    return None, name


def detect_compression(head, name):
    """Codec of a stream from its first bytes, else from the file name's suffix, else ``None``."""
    for magic, codec in MAGIC:
        if head.startswith(magic):
            return codec
    return compression_from_suffix(name)[0]


QCOW2_MAGIC = b"QFI\xfb"
FREE_RESERVE = 64 << 20  # bytes a download always leaves free on the cache's file system
FREE_CHECK_STEP = 16 << 20  # free space is checked every 16 MB of image written


def qcow2_bound(virtual_size):
    """Most bytes a qcow2 file of ``virtual_size`` holds: every cluster, plus its L2 and refcount
    tables (under 1/64 of the data) and headroom for the header and L1 table."""
    return virtual_size + virtual_size // 64 + (16 << 20)


class SizeBound:
    """Limits on an image as it is written: at most ``max_size`` bytes (``setting`` names the option
    that raises it), less when a qcow2 header at the start declares a smaller virtual size, and never
    leaving less than ``FREE_RESERVE`` free on the file system of ``directory``."""

    def __init__(self, max_size, directory, setting="max_image_size"):
        self.limit = self.max_size = max_size
        self.directory = directory
        self.setting = setting
        self.declared = None
        self._head = b""
        self._next_check = 0

    def check(self, pos, data):
        """Before ``data`` is written at ``pos``: raise ImageTooLarge or DiskFull when it breaks a bound."""
        if pos == len(self._head) < 32:  # the header may come in small pieces
            self._head += bytes(data[:32 - pos])
            if len(self._head) == 32 and self._head.startswith(QCOW2_MAGIC):
                self.declared = int.from_bytes(self._head[24:32], "big")
                self.limit = min(x for x in (self.max_size, qcow2_bound(self.declared)) if x is not None)
        end = pos + len(data)
        if self.limit is not None and end > self.limit:
            if self.declared is not None and self.limit == qcow2_bound(self.declared):
                raise ImageTooLarge(
                    "the image grew past %d bytes, more than its qcow2 header's virtual size of %d bytes allows"
                    % (self.limit, self.declared), limit=self.limit, virtual_size=self.declared,
                    hint="The file is not the image it claims to be (a decompression bomb?); it was not cached")
            raise ImageTooLarge("the image grew past the limit of %d bytes (%s)" % (self.limit, self.setting),
                                limit=self.limit, setting=self.setting,
                                hint="If the image really is that large, raise %s (vmctl image pull --max-size)" % self.setting)
        if end >= self._next_check:
            self._next_check = end + FREE_CHECK_STEP
            st = os.statvfs(self.directory)
            free = st.f_bavail * st.f_frsize
            if free - len(data) < FREE_RESERVE:
                raise DiskFull("only %d bytes are free in %s after writing %d bytes of the image (at least %d must stay free)"
                               % (free, self.directory, pos, FREE_RESERVE), free=free, directory=self.directory,
                               hint="Free space in %s (vmctl image prune removes unused images), then pull again" % self.directory)


class ImageWriter:
    """Writes image bytes in order to ``out`` (a ``BufferedFile`` or a ``DirectAppender``), leaving a
    hole for every all-zero block of ``SPARSE_BLOCK`` bytes aligned in the file, and hashes them with
    sha256 unless ``hash=False``. A ``bound`` (SizeBound) is checked before each write. ``finish()``
    sets the final size and makes the file durable."""

    def __init__(self, out, hash=True, bound=None):
        self.out = out
        self.pos = out.pos
        self.sha256 = hashlib.sha256() if hash else None
        self.bound = bound

    def write(self, data):
        if isinstance(data, memoryview):
            data = data.tobytes()  # find() needs bytes, a bytearray or an mmap
        if self.bound is not None:
            self.bound.check(self.pos, data)
        if self.sha256 is not None:
            self.sha256.update(data)
        view = memoryview(data)  # slices of it are not copies
        n = len(data)
        if data.find(_ZERO_PAGE) < 0:  # no zero page at all: common, and found fast (the search skips)
            self.out.write_at(self.pos, view)
            self.pos += n
            return n
        start = 0  # beginning of the data not yet written or skipped
        i = (-self.pos) % SPARSE_BLOCK  # first block boundary in data
        while i + SPARSE_BLOCK <= n:
            if data[i:i + SPARSE_BLOCK] == _ZERO_BLOCK:
                if i > start:
                    self.out.write_at(self.pos + start, view[start:i])
                start = i + SPARSE_BLOCK
            i += SPARSE_BLOCK
        if start < n:
            self.out.write_at(self.pos + start, view[start:])
        self.pos += n
        return n

    def finish(self):
        self.out.finish(self.pos)
        return self.pos


class BufferedFile:
    """``ImageWriter`` output through the page cache, starting writeback early so that the final fsync
    has little left to do (for a file that is also read back, such as an uncompressed ``.part``)."""

    def __init__(self, f):
        self.f = f
        self.pos = self._file_pos = self._synced = f.tell()

    def write_at(self, offset, data):
        if offset != self._file_pos:
            self.f.seek(offset)
        self.f.write(data)
        self._file_pos = offset + len(data)
        if self._file_pos - self._synced >= WRITEBACK_STEP:
            self.f.flush()
            if hasattr(os, "posix_fadvise"):  # DONTNEED starts writeback of the dirty range now
                os.posix_fadvise(self.f.fileno(), self._synced, self._file_pos - self._synced, os.POSIX_FADV_DONTNEED)
            self._synced = self._file_pos

    def finish(self, size):
        self.f.flush()
        if os.fstat(self.f.fileno()).st_size != size:
            self.f.truncate(size)  # a trailing hole
        os.fsync(self.f.fileno())


class DirectAppender:
    """Writes a file front to back with O_DIRECT, bypassing the page cache, through an aligned buffer.

    Used for the compressed ``.part`` (read back at most once, on resume, and deleted when the image is
    committed) and for the decompressed image: caching them only costs memory and CPU (and fresh
    page-cache pages are slow to get in VMs). Falls back to ordinary writes where O_DIRECT is not
    supported. With ``eager``, every ``write`` puts all but the last partial 4 KB block on disk (a
    ``.part`` loses almost nothing to a crash); otherwise data goes out in 4 MB writes. Jumps forward
    (holes) must land on 4 KB boundaries, or writing continues without O_DIRECT.
    """

    SIZE = 4 << 20
    ALIGN = 4096

    def __init__(self, path, offset=0, eager=False, truncate=False):
        self.eager = eager
        self.direct = hasattr(os, "O_DIRECT")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags | (os.O_DIRECT if self.direct else 0), 0o600)
        self._map = mmap.mmap(-1, self.SIZE)  # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._map)
        self.file_pos = offset - offset % self.ALIGN  # where the buffer starts in the file
        self.n = 0
        if offset > self.file_pos:  # a resumed file: re-stage its unaligned tail
            with open(path, "rb") as f:
                f.seek(self.file_pos)
                tail = f.read(offset - self.file_pos)
            self._view[:len(tail)] = tail
            self.n = len(tail)

    @property
    def pos(self):
        return self.file_pos + self.n

    def write(self, data):
        """Append ``data``."""
        data = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            take = min(self.SIZE - self.n, n - i)
            self._view[self.n:self.n + take] = data[i:i + take]
            self.n += take
            i += take
            if self.eager or self.n == self.SIZE:
                self._flush(self.n - self.n % self.ALIGN)
        return n

    def write_at(self, offset, data):
        if offset != self.pos:
            self._flush(self.n)
            if self.direct and offset % self.ALIGN:
                self._buffered()
            self.file_pos = offset
        self.write(data)

    def _flush(self, length):
        if length % self.ALIGN and self.direct:
            self._buffered()
        done = 0
        while done < length:
            try:
                done += os.pwrite(self.fd, self._view[done:length], self.file_pos + done)
            except OSError as err:
                if err.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()  # this file system refuses O_DIRECT
        rest = self.n - length
        self._view[:rest] = self._view[length:self.n]
        self.file_pos += length
        self.n = rest

    def _buffered(self):
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
        self.direct = False

    def finish(self, size):
        """Write the rest, set the size (a trailing hole), fsync and close."""
        self._flush(self.n)
        if os.fstat(self.fd).st_size != size:
            os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.close()

    def close(self):
        """Write the rest (unless finished) and close."""
        if self.fd is None:
            return
        try:
            if self.n:
                self._flush(self.n)
        finally:
            os.close(self.fd)
            self.fd = None
            self._view.release()
            self._map.close()


def hash_file(path, algorithm):
    """Hex digest of a file. It is read with O_DIRECT where supported (through the page cache, reading
    a fresh image cost more CPU than hashing it) into a ring of buffers, and hashed in a ``Stage``
    meanwhile (the buffer contract of ``make_decoder``)."""
    h = hashlib.new(algorithm)
    hasher = Stage("vmctl-image-hash", h.update)
    ring = [mmap.mmap(-1, OUT_CHUNK) for dummy in range(QUEUE_DEPTH + 2)]  # page-aligned, as O_DIRECT needs
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_RDONLY)  # a file system without O_DIRECT
    hasher.start()
    try:
        for i in itertools.count():
            view = memoryview(ring[i % len(ring)])
            try:
                n = os.readv(fd, [view])
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~getattr(os, "O_DIRECT", 0))
                n = os.readv(fd, [view])
            if not n:
                break
            hasher.put(view[:n])
        hasher.finish()
    finally:
        os.close(fd)
        if hasher.is_alive():
            hasher.abort()
    return h.hexdigest()


class _ZstdFrames:
    """Follows zstd frame and block headers (RFC 8878) to tell whether a stream ends at the end of a
    frame. python-zstandard's streaming APIs accept a stream cut anywhere without complaint."""

    def __init__(self):
        self._state = "magic"
        self._buf = b""
        self._need = 4
        self._skip = 0
        self._checksum = False
        self.frames = 0

    def feed(self, data):
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._advance(header)

    def _advance(self, header):
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
            elif 0x184D2A50 <= magic <= 0x184D2A5F:
                self._state, self._need = "skippable", 4
            else:
                raise CorruptImage("not a zstd frame (magic %08x)" % magic)
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = "magic", 4
        elif state == "descriptor":
            fhd = header[0]
            if fhd & 0x08:
                raise CorruptImage("zstd frame header has its reserved bit set")
            single = (fhd >> 5) & 1
            self._checksum = bool((fhd >> 2) & 1)
            content_size_len = ((1 if single else 0), 2, 4, 8)[fhd >> 6]
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + content_size_len
            self._state, self._need = "block", 3
        else:  # block header: last-block bit, type, size
            value = int.from_bytes(header, "little")
            kind = (value >> 1) & 3
            if kind == 3:
                raise CorruptImage("zstd block of reserved type")
            self._skip = 1 if kind == 1 else value >> 3
            if value & 1:
                self._skip += 4 if self._checksum else 0
                self.frames += 1
                self._state, self._need = "magic", 4

    @property
    def complete(self):
        return self.frames > 0 and self._state == "magic" and not self._buf and not self._skip


class _ZstdDecoder:
    """Runs in a ``Stage`` (``pull``): takes compressed chunks from ``next_chunk()`` and decompresses
    them with ``readinto`` into a few reused buffers. python-zstandard releases the GIL for a whole
    buffer at a time, and no output object is allocated: its ``stream_writer`` made a new bytes object
    per output chunk, and the page faults of those allocations cost almost as much CPU as decompressing."""

    def __init__(self, sink):
        if zstandard is None:
            raise ToolMissing("the Python package 'zstandard' is needed to decompress zstd images",
                              hint="Install it on the host that pulls the image (pip install zstandard)")
        self.sink = sink
        self._frames = _ZstdFrames()
        self._next_chunk = None

    def read(self, size=-1):
        """The zstd reader's source: the next chunk, whatever its size (``b""`` at the end)."""
        data = self._next_chunk()
        self._frames.feed(data)
        return data

    def run(self, next_chunk):
        self._next_chunk = next_chunk
        reader = zstandard.ZstdDecompressor().stream_reader(self, read_across_frames=True, closefd=False)
        # The sink gets the buffers themselves, not copies (see make_decoder): one is reused
        # QUEUE_DEPTH + 2 writes later, when a Stage (QUEUE_DEPTH items queued, one being consumed)
        # is surely done with it.
        ring = [bytearray(OUT_CHUNK) for dummy in range(QUEUE_DEPTH + 2)]
        try:
            for i in itertools.count():
                buf = ring[i % len(ring)]
                n = reader.readinto(buf)
                if not n:
                    break
                self.sink.write(buf if n == len(buf) else buf[:n])
        except zstandard.ZstdError as err:
            raise CorruptImage("zstd data is corrupt: %s" % err)
        if not self._frames.complete:
            raise CorruptImage("zstd stream ends in the middle of a frame (the file is truncated)")


class _MemberDecoder:
    """xz and gzip, whose files may hold several concatenated streams (members), optionally followed
    by zero padding. Output is produced at most ``OUT_CHUNK`` bytes at a time."""

    def __init__(self, codec, sink):
        self.codec = codec
        self.sink = sink
        self.magic = dict((c, m) for m, c in MAGIC)[codec]
        self._d = None
        self._pending = b""  # bytes after a finished member, not yet known to start another
        self._members = 0

    def _new(self):
        if self.codec == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, data):
        try:
            self._feed(data)
        except (lzma.LZMAError, zlib.error) as err:
            raise CorruptImage("%s data is corrupt: %s" % (self.codec, err))

    def _feed(self, data):
        while data:
            if self._d is None:
                data = self._pending + data
                self._pending = b""
                # Zero padding is allowed between and after members, not before the first.
                stripped = data.lstrip(b"\0") if self._members else data
                if not stripped:
                    self._pending = data
                    return
                if len(stripped) < len(self.magic) and self.magic.startswith(stripped):
                    self._pending = data
                    return
                if not stripped.startswith(self.magic):
                    if self._members:
                        raise CorruptImage("unexpected data after the end of the %s stream" % self.codec)
                    raise CorruptImage("not %s data (no %s header)" % (self.codec, self.codec))
                data = stripped
                self._d = self._new()
            data = self._decode(data)

    def _decode(self, data):
        d = self._d
        if self.codec == "xz":
            out = d.decompress(data, OUT_CHUNK)
            while True:
                self.sink.write(out)
                if d.eof or d.needs_input:
                    break
                out = d.decompress(b"", OUT_CHUNK)
        else:
            while True:
                out = d.decompress(data, OUT_CHUNK)
                self.sink.write(out)
                data = d.unconsumed_tail
                if d.eof or not data:
                    break
        if d.eof:
            self._members += 1
            self._d = None
            return d.unused_data
        return b""

    def finish(self):
        if self._d is not None or self._members == 0 or self._pending.strip(b"\0"):
            raise CorruptImage("%s stream ends before its end marker (the file is truncated)" % self.codec)


def make_decoder(codec, sink):
    """A started ``Stage`` that decodes what is ``feed``-ed to it and writes the image to ``sink``.

    ``sink.write`` gets bytes-like objects of at most ``OUT_CHUNK`` bytes. The zstd decoder reuses its
    buffers: a sink may keep one only until it has been given ``QUEUE_DEPTH + 1`` more, which a
    ``Stage`` used as the sink guarantees (it copies nothing)."""
    if codec == "zstd":
        stage = Stage("vmctl-image-decode", pull=_ZstdDecoder(sink).run)
    elif codec in ("xz", "gzip"):
        decoder = _MemberDecoder(codec, sink)
        stage = Stage("vmctl-image-decode", decoder.feed, decoder.finish)
    else:
        raise ValueError("unknown compression %r" % codec)
    stage.start()
    return stage


_END = object()
_ABORT = object()


class _Aborted(Exception):
    pass


class Stage(threading.Thread):
    """One step of the download pipeline in its own thread: ``put(item)`` queues an item and the
    thread calls ``consume(item)``, or, for a ``pull`` stage, runs ``pull(next_chunk)`` once, which
    takes the items itself (``next_chunk()`` returns ``b""`` after the last). ``finish()`` lets it
    drain, calls ``done()`` there and re-raises any error. Receiving, saving ``.part``, decompressing
    and writing the image each have a stage, and run in parallel (zstd's ``readinto``, hashlib and
    file writes release the GIL).

    ``put`` blocks while ``QUEUE_DEPTH`` items wait, which bounds memory; an error in the stage is
    re-raised in the producer at its next ``put``.
    """

    def __init__(self, name, consume=None, done=None, pull=None):
        super(Stage, self).__init__(name=name, daemon=True)
        self.consume = consume
        self.done = done
        self.pull = pull
        self.error = None
        self._ended = False
        self._queue = queue.Queue(maxsize=QUEUE_DEPTH)

    def run(self):
        try:
            if self.pull is not None:
                self.pull(self._next_chunk)
            else:
                for item in iter(self._get, _END):
                    self.consume(item)
            if self.done is not None:
                self.done()
        except _Aborted:
            pass
        except BaseException as err:  # handed to the producer thread
            self.error = err

    def _get(self):
        item = self._queue.get()
        if item is _ABORT:
            raise _Aborted()
        return item

    def _next_chunk(self):
        if not self._ended:
            item = self._get()
            if item is not _END:
                return item
            self._ended = True
        return b""

    def put(self, item):
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self.is_alive():
                    if self.error is not None:  # it failed between the check above and now
                        raise self.error
                    raise CorruptImage("the %s thread stopped unexpectedly" % self.name)

    feed = put  # a decoder's interface

    def write(self, data):
        """File-like: lets a stage be the sink of a decoder."""
        self.put(data)
        return len(data)

    def finish(self):
        self.put(_END)
        self.join()
        if self.error is not None:
            raise self.error

    def abort(self):
        """Stop without finishing (the download failed); waits briefly for the thread."""
        while self.is_alive():
            try:
                self._queue.put(_ABORT, timeout=0.1)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self.join(timeout=10)
