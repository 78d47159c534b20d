"""Streaming decoders and the sparse writer: bounded output, truncation caught, bytes exact."""

import gzip
import hashlib
import lzma
import os
import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.vmctl.core.plugins.module_utils.images import stream
from ansible_collections.vmctl.core.plugins.module_utils.errors import CorruptImage


class Collect:
    """A sink that keeps what it is given and the largest single write."""

    def __init__(self):
        self.data = bytearray()
        self.largest = 0

    def write(self, b):
        self.data += b
        self.largest = max(self.largest, len(b))
        return len(b)


def compress(codec, data, members=1):
    """``data`` compressed by ``codec``, split into ``members`` concatenated streams/frames."""
    cut = [len(data) * i // members for i in range(members + 1)]
    parts = [data[a:b] for a, b in zip(cut, cut[1:])]
    if codec == "zstd":
        return b"".join(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(p) for p in parts)
    if codec == "xz":
        return b"".join(lzma.compress(p) for p in parts)
    return b"".join(gzip.compress(p) for p in parts)


def decode(codec, blob, step):
    sink = Collect()
    decoder = stream.make_decoder(codec, sink)
    for i in range(0, len(blob), step):
        decoder.feed(blob[i:i + step])
    decoder.finish()
    return sink


SAMPLE = os.urandom(50000) + bytes(300000) + b"image" * 20000


@pytest.mark.parametrize("codec", ["zstd", "xz", "gzip"])
@given(members=st.integers(1, 4), step=st.integers(1, 70000))
@settings(max_examples=25, deadline=None)
def test_any_chunking_and_member_count_decodes_exactly(codec, members, step):
    blob = compress(codec, SAMPLE, members)
    assert bytes(decode(codec, blob, step).data) == SAMPLE


@pytest.mark.parametrize("codec", ["zstd", "xz", "gzip"])
@given(cut=st.floats(0.01, 0.99))
@settings(max_examples=20, deadline=None)
def test_a_truncated_stream_is_an_error_not_a_short_image(codec, cut):
    blob = compress(codec, SAMPLE, 1)
    with pytest.raises(CorruptImage):
        decode(codec, blob[:int(len(blob) * cut)], 65536)


def test_the_zstd_library_alone_would_accept_a_truncated_stream():
    """Why _ZstdFrames exists: python-zstandard's streaming writer does not report a cut stream."""
    data = os.urandom(1 << 20)
    blob = compress("zstd", data, 1)
    out = Collect()
    writer = zstandard.ZstdDecompressor().stream_writer(out, closefd=False)
    writer.write(blob[:len(blob) // 2])
    writer.flush()  # no error: half an image would be taken for a whole one
    assert 0 < len(out.data) < len(data)
    with pytest.raises(CorruptImage):
        decode("zstd", blob[:len(blob) // 2], 4096)


@pytest.mark.parametrize("codec", ["xz", "gzip"])
def test_zero_padding_after_a_member_is_accepted_and_garbage_is_not(codec):
    blob = compress(codec, SAMPLE, 2)
    assert bytes(decode(codec, blob + bytes(64), 1000).data) == SAMPLE
    with pytest.raises(CorruptImage, match="after the end"):
        decode(codec, blob + b"garbage!", 1000)


def test_zstd_skippable_frames_are_followed():
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    blob = skippable + compress("zstd", SAMPLE, 2) + skippable
    assert bytes(decode("zstd", blob, 7).data) == SAMPLE


@pytest.mark.parametrize("codec", ["zstd", "xz", "gzip"])
def test_data_of_another_kind_is_refused(codec):
    with pytest.raises(CorruptImage):
        decode(codec, b"QFI\xfb" + os.urandom(1000), 100)


@pytest.mark.parametrize("codec", ["zstd", "xz", "gzip"])
def test_a_compression_bomb_never_produces_more_than_one_chunk_at_once(codec):
    """A few KB that expand to 256 MB of zeros: output arrives in bounded pieces."""
    zeros = 256 << 20
    if codec == "zstd":
        blob = zstandard.ZstdCompressor(level=19).compress(bytes(zeros))
    elif codec == "xz":
        blob = lzma.compress(bytes(zeros), preset=1)
    else:
        blob = gzip.compress(bytes(zeros), compresslevel=9)
    assert len(blob) < zeros // 500

    class Counter:
        total = largest = 0

        def write(self, b):
            Counter.total += len(b)
            Counter.largest = max(Counter.largest, len(b))
            return len(b)

    decoder = stream.make_decoder(codec, Counter())
    decoder.feed(blob)
    decoder.finish()
    assert Counter.total == zeros
    assert Counter.largest <= stream.OUT_CHUNK


@pytest.mark.parametrize("head,name,expected", [
    (b"\x28\xb5\x2f\xfd\x00\x00", "image.img", "zstd"),        # magic wins over the name
    (b"\xfd7zXZ\x00", "image.qcow2", "xz"),
    (b"\x1f\x8b\x08\x00\x00\x00", "disk", "gzip"),
    (b"QFI\xfb\x00\x00", "image.qcow2.zst", "zstd"),         # suffix when the magic says nothing
    (b"QFI\xfb\x00\x00", "image.qcow2.ZSTD", "zstd"),
    (b"QFI\xfb\x00\x00", "image.qcow2", None),
])
def test_compression_is_detected_by_magic_then_suffix(head, name, expected):
    assert stream.detect_compression(head, name) == expected


def _segments():
    block = st.sampled_from(["zero", "data", "zero-tail"])
    return st.lists(st.tuples(block, st.integers(1, 200000)), min_size=1, max_size=12)


def open_output(kind, path, prefix):
    """An ImageWriter output positioned after ``prefix`` (already in the file): page cache or O_DIRECT."""
    with open(path, "wb") as f:
        f.write(prefix)
    if kind == "direct":
        return stream.DirectAppender(str(path), len(prefix)), None
    f = open(path, "r+b")
    f.seek(len(prefix))
    return stream.BufferedFile(f), f


@pytest.mark.parametrize("kind", ["buffered", "direct"])
@given(segments=_segments(), pieces=st.integers(1, 9), start=st.integers(0, 5000))
@settings(max_examples=30, deadline=None)
def test_sparse_writer_reproduces_the_bytes_and_their_sha256(tmp_path_factory, kind, segments, pieces, start):
    rng = random.Random(len(segments) * 7 + pieces)
    data = b"".join(bytes(n) if kind_ != "data" else bytes(rng.getrandbits(8) | 1 for dummy in range(min(n, 3000))) * (n // 3000 + 1)
                    for kind_, n in segments)
    path = tmp_path_factory.mktemp("sparse") / "out.img"
    prefix = b"P" * start  # writing may start at an offset (a resumed plain download)
    out, f = open_output(kind, path, prefix)
    writer = stream.ImageWriter(out)
    cut = sorted(rng.sample(range(len(data) + 1), min(pieces, len(data) + 1)))
    for a, b in zip([0] + cut, cut + [len(data)]):
        writer.write(data[a:b])
    assert writer.finish() == start + len(data)
    if f:
        f.close()
    assert path.read_bytes() == prefix + data
    assert writer.sha256.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["buffered", "direct"])
def test_sparse_writer_leaves_holes_for_zero_blocks(tmp_path, kind):
    path = tmp_path / "sparse.img"
    data = os.urandom(1 << 20) + bytes(32 << 20) + os.urandom(1 << 20) + bytes(16 << 20)
    out, f = open_output(kind, path, b"")
    writer = stream.ImageWriter(out)
    for i in range(0, len(data), 999999):
        writer.write(data[i:i + 999999])
    writer.finish()
    if f:
        f.close()
    st_ = os.stat(path)
    assert st_.st_size == len(data)
    assert st_.st_blocks * 512 < 8 << 20  # ~2 MB of data allocated, not 50 MB
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_stage_passes_a_worker_error_to_the_producer():
    def consume(item):
        if item == 3:
            raise CorruptImage("bad item")

    stage = stream.Stage("test", consume)
    stage.start()
    with pytest.raises(CorruptImage, match="bad item"):
        for i in range(1000):
            stage.put(i)
    stage.join(5)
    assert not stage.is_alive()


def test_stage_abort_stops_a_blocked_stage():
    seen = []
    stage = stream.Stage("test", seen.append)
    stage.start()
    for i in range(3):
        stage.put(i)
    stage.abort()
    assert not stage.is_alive()


def test_stage_finish_runs_done_in_the_stage_thread_after_all_items():
    import threading
    seen, where = [], []
    stage = stream.Stage("test", seen.append, lambda: where.append(threading.current_thread().name))
    stage.start()
    for i in range(50):
        stage.put(i)
    stage.finish()
    assert seen == list(range(50)) and where == ["test"]


def test_any_bytes_like_type_is_accepted_by_the_writer(tmp_path):
    with open(tmp_path / "x", "wb") as f:
        writer = stream.ImageWriter(stream.BufferedFile(f))
        writer.write(memoryview(b"abc"))
        writer.write(bytearray(b"def"))
        writer.finish()
    assert (tmp_path / "x").read_bytes() == b"abcdef"


@given(sizes=st.lists(st.integers(1, 3 << 20), min_size=1, max_size=6), resume_at=st.integers(0, 20000))
@settings(max_examples=15, deadline=None)
def test_direct_appender_appends_exactly_and_keeps_all_but_a_partial_block_before_close(tmp_path_factory, sizes, resume_at):
    path = tmp_path_factory.mktemp("direct") / "x.part"
    existing = os.urandom(resume_at)  # a resumed .part of any (unaligned) length
    path.write_bytes(existing)
    appender = stream.DirectAppender(str(path), resume_at, eager=True)
    chunks = [os.urandom(n) for n in sizes]
    for chunk in chunks:
        appender.write(chunk)
        on_disk = path.read_bytes()
        expected = existing + b"".join(chunks[:chunks.index(chunk) + 1])
        assert expected.startswith(on_disk) and len(expected) - len(on_disk) < stream.DirectAppender.ALIGN
    appender.close()
    assert path.read_bytes() == existing + b"".join(chunks)
