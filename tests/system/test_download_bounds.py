"""Issue 11 items 6 and 7: a download is bounded in size (decompressed), in free disk space, in time
and in stalls. Decompression bombs are served by the real nginx; the time bounds by a hostile local
HTTP server (loopback only) that trickles its body."""

import contextlib
import http.server
import os
import subprocess
import threading
import time

import pytest
import zstandard

from ansible_collections.vmctl.core.plugins.module_utils.images import cache as images
from ansible_collections.vmctl.core.plugins.module_utils.images.stream import qcow2_bound
from ansible_collections.vmctl.core.plugins.module_utils.errors import DiskFull, DownloadTimeout, ImageTooLarge
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


def cache_files(cache):
    found = []
    for root, dummy, files in os.walk(cache.root):
        found += [os.path.relpath(os.path.join(root, f), cache.root) for f in files if not f.endswith(".lock")]
    return sorted(found)


def zstd_of(path, pieces):
    """Write the zstd compression of the concatenated ``pieces`` (bytes, or (byte, count) runs) to ``path``."""
    with open(path, "wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as writer:
        for piece in pieces:
            if isinstance(piece, tuple):
                byte, count = piece
                block = byte * (1 << 20)
                for dummy in range(count >> 20):
                    writer.write(block)
            else:
                writer.write(piece)
    return path


def qcow2_header(tmp_path, size="1M"):
    path = str(tmp_path / "small.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)
    with open(path, "rb") as f:
        return f.read()


def test_zstd_bomb_is_bounded_by_the_qcow2_virtual_size(tmp_path, http_files):
    """Bad input: a 1 MB qcow2 header followed by 200 MB of data, compressed to a few KB. Gets: the pull
    stops at the bound derived from the header's virtual size, names it, and leaves nothing cached."""
    bomb = zstd_of(str(tmp_path / "bomb.qcow2.zst"), [qcow2_header(tmp_path), (b"\x01", 200 << 20)])
    assert os.path.getsize(bomb) < 100 << 10
    http_files.put("bomb.qcow2.zst", bomb)
    cache = VmManager().image_cache()
    with pytest.raises(ImageTooLarge) as caught:
        cache.pull(http_files.url("bomb.qcow2.zst"))
    err = caught.value
    assert "virtual size of 1048576 bytes" in err.message and "bomb.qcow2.zst" in err.message
    assert err.details["limit"] == qcow2_bound(1 << 20) < 20 << 20
    assert cache_files(cache) == [] and cache.list() == []


def test_raw_zero_bomb_is_bounded_by_the_settable_maximum(tmp_path, http_files):
    """Bad input: 256 MB of zeros (raw, no header) as a tiny .zst, pulled with max_size 32 MB. Gets:
    ImageTooLarge naming max_image_size and how to raise it; nothing cached. The same file under the
    default maximum is accepted (it is a legitimate sparse image)."""
    bomb = zstd_of(str(tmp_path / "zeros.img.zst"), [(b"\0", 256 << 20)])
    http_files.put("zeros.img.zst", bomb)
    cache = VmManager().image_cache()
    with pytest.raises(ImageTooLarge) as caught:
        cache.pull(http_files.url("zeros.img.zst"), max_size=32 << 20)
    assert "max_image_size" in caught.value.message and "--max-size" in caught.value.hint
    assert cache_files(cache) == []
    entry = cache.pull(http_files.url("zeros.img.zst"))
    assert entry.size == 256 << 20 and os.stat(entry.path).st_blocks * 512 < 1 << 20


@pytest.fixture
def small_fs(tmpfs, monkeypatch):
    """A 96 MB tmpfs as the data dir (unmounted afterwards)."""
    mount = tmpfs.mount("96m")
    monkeypatch.setenv("XDG_DATA_HOME", str(mount))
    return mount


def test_a_pull_that_would_fill_the_disk_stops_and_cleans_up(tmp_path, http_files, small_fs):
    """Bad input: a 200 MB image (well within max_size) into a 96 MB file system. Gets: DiskFull naming
    the directory and the free space, before the disk is full; nothing is left in the cache."""
    big = zstd_of(str(tmp_path / "big.img.zst"), [(b"\x02", 200 << 20)])
    http_files.put("big.img.zst", big)
    cache = VmManager().image_cache()
    with pytest.raises(DiskFull) as caught:
        cache.pull(http_files.url("big.img.zst"))
    assert "must stay free" in caught.value.message and "prune" in caught.value.hint
    assert cache_files(cache) == []
    st = os.statvfs(str(small_fs))
    assert st.f_bavail * st.f_frsize > 90 << 20  # the partial image is gone


# --- time bounds ---------------------------------------------------------------------------------------

class _Trickle(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a large Content-Length and then sends the body slowly: ``burst`` bytes
    every ``every`` seconds, forever (until the client gives up)."""

    burst = 1
    every = 2.0

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        with contextlib.suppress(OSError):
            while not self.server.stopping.is_set():
                self.wfile.write(b"\x07" * self.burst)
                self.wfile.flush()
                self.server.stopping.wait(self.every)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def trickle_server(burst, every):
    handler = type("Handler", (_Trickle,), {"burst": burst, "every": every})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/trickle.img" % server.server_address[1]
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def test_a_body_trickling_a_byte_every_two_seconds_is_a_stall(tmp_path):
    """Bad input: a server sending 1 byte every 2 s. Gets: DownloadTimeout naming stall_timeout, after
    about the stall timeout; the URL's lock is released (a second pull runs and fails the same way);
    nothing in the cache, not even a partial file."""
    cache = VmManager().image_cache()
    with trickle_server(1, 2.0) as url:
        for dummy in range(2):
            begin = time.monotonic()
            with pytest.raises(DownloadTimeout) as caught:
                cache.pull(url, stall_timeout=3)
            assert time.monotonic() - begin < 30
            assert caught.value.details["limit"] == "stall_timeout" and "stall-timeout" in caught.value.hint
            assert cache_files(cache) == []
    assert cache.list() == []


def test_a_steady_but_endless_body_hits_the_deadline(tmp_path):
    """Bad input: a server that never stalls (128 KB every 0.2 s) but never ends. Gets: DownloadTimeout
    naming the deadline, with the setting to raise; the megabytes received are not kept (nothing in the cache)."""
    cache = VmManager().image_cache()
    with trickle_server(128 << 10, 0.2) as url:
        with pytest.raises(DownloadTimeout) as caught:
            cache.pull(url, deadline=3, stall_timeout=2)
    assert caught.value.details["limit"] == "deadline" and "download_timeout" in caught.value.hint
    assert caught.value.details["received"] > 0 and cache_files(cache) == []
    assert cache.list() == []


def test_a_trickling_checksum_file_is_a_stall_too(tmp_path):
    """Bad input: the image's checksum file (its SHA256SUMS URL) trickles a byte every 2 s. Gets: the
    same DownloadTimeout naming stall_timeout, after about the stall timeout (it used to wait for 4 MB
    at that rate, holding the image's lock); nothing in the cache."""
    cache = VmManager().image_cache()
    with trickle_server(1, 2.0) as url:
        begin = time.monotonic()
        with pytest.raises(DownloadTimeout) as caught:
            cache.pull(url.replace("trickle.img", "image.qcow2"), checksum="sha256:" + url.replace("trickle.img", "SHA256SUMS"),
                       stall_timeout=3)
        assert time.monotonic() - begin < 30
    assert caught.value.details["limit"] == "stall_timeout" and "SHA256SUMS" in caught.value.message
    assert cache_files(cache) == []


def test_cli_image_pull_takes_the_bounds(tmp_path):
    """`vmctl image pull --stall-timeout` against the trickling server: exit 5 (timeout) with error and
    hint lines; nothing left in the cache."""
    with trickle_server(1, 2.0) as url:
        result = subprocess.run([VMCTL, "image", "pull", url, "--stall-timeout", "3"], capture_output=True,
                                text=True, timeout=120, check=False)
    assert result.returncode == 5, result.stderr
    assert "stalled" in result.stderr and "--stall-timeout" in result.stderr
    assert cache_files(VmManager().image_cache()) == []


def test_default_deadline_scales_with_the_size():
    """The default deadline: at least the floor, else the size at DEADLINE_RATE."""
    limits = images.DownloadLimits()
    limits.sized(10 << 20)
    assert limits.seconds == images.DEADLINE_FLOOR
    limits.sized(4 << 30)
    assert limits.seconds == (4 << 30) / float(images.DEADLINE_RATE)
    fixed = images.DownloadLimits(deadline=5)
    fixed.sized(4 << 30)
    assert fixed.seconds == 5
