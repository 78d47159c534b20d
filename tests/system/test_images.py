"""The image cache against a real nginx: compression, resume, checksums, locking, crashes, safety.

Every download goes over real sockets to nginx (tests/system/support/nginx_server.py); the access log tells
which requests a pull made, including the Range and If-Range headers.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.disk_images import compress, make_qcow2, make_raw, sha256_file
from support.nginx_server import DroppingProxy

from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    ChecksumMismatch, CorruptImage, DownloadFailed, ImageError, ImageInUse, ImageNotFound, InvalidChecksum, UnsafeImage,
)
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle


@pytest.fixture
def cache():
    return VmManager().image_cache()


@pytest.fixture
def qcow2(tmp_path):
    return make_qcow2(tmp_path / "disk.qcow2", size_mb=16, data_mb=3, seed=1)


def cache_files(cache):
    """Everything in the cache directory, hidden work files included (lock files excepted)."""
    found = []
    for root, dummy, files in os.walk(cache.root):
        found += [os.path.relpath(os.path.join(root, f), cache.root) for f in files if not f.endswith(".lock")]
    return sorted(found)


def partial_files(cache):
    return [f for f in cache_files(cache) if f.startswith(".partial")]


def assert_usable_base(image, tmp_path):
    """A VM can be built on it: an overlay with an absolute backing path that qemu-img reads."""
    overlay = str(tmp_path / ("overlay-%s.qcow2" % os.path.basename(image.path)))
    qemu_img.create_overlay(image.path, overlay, image.format)
    info = qemu_img.info(overlay)
    assert info["backing-filename"] == image.path
    assert info["backing-filename-format"] == image.format
    assert info["virtual-size"] == qemu_img.info(image.path)["virtual-size"]
    subprocess.run(["qemu-img", "compare", "-q", image.path, overlay], check=True)


def run_pull_process(url, data_home, extra=""):
    """A separate process pulling ``url`` (prints the result as JSON)."""
    code = ("import json, sys\n"
            "from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager\n"
            "%s\n"
            "print(json.dumps(VmManager().image_cache().pull(sys.argv[1]).to_dict()))\n" % extra)
    env = dict(os.environ, XDG_DATA_HOME=str(data_home))
    return subprocess.Popen([sys.executable, "-c", code, url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


def part_size(cache):
    parts = [os.path.join(cache.root, f) for f in partial_files(cache) if f.endswith(".part")]
    return os.path.getsize(parts[0]) if parts else 0


# --- pulls and formats --------------------------------------------------------------------------------

def test_plain_qcow2_pull_then_cache_hit_without_a_request_for_the_body(cache, qcow2, http_files, tmp_path):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    progress = []
    first = cache.pull(url, progress=lambda done, total: progress.append((done, total)))
    assert first.downloaded and first.format == "qcow2" and first.url == url
    assert first.digest() == sha256_file(qcow2) and first.size == os.path.getsize(qcow2)
    assert sha256_file(first.path) == first.digest()
    assert progress[-1] == (first.size, first.size) and all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))
    assert_usable_base(first, tmp_path)

    second = cache.pull(url)
    assert not second.downloaded and second.path == first.path and second.digest() == first.digest()
    assert len(http_files.requests("disk.qcow2")) == 1  # the second pull made no request at all
    assert [e.url for e in cache.list()] == [url]


@pytest.mark.parametrize("codec", ["zst", "xz", "gz"])
def test_compressed_images_are_decompressed_while_streaming(cache, qcow2, http_files, tmp_path, codec):
    published = compress(qcow2, codec)
    http_files.put("disk.qcow2." + codec, published)
    url = http_files.url("disk.qcow2." + codec)
    image = cache.pull(url)
    assert image.downloaded and image.format == "qcow2"
    assert image.digest() == sha256_file(qcow2)  # the cached image is the decompressed one
    assert image.compression == {"zst": "zstd", "xz": "xz", "gz": "gzip"}[codec]
    assert image.source_size == os.path.getsize(published)
    assert os.path.basename(image.path).endswith(".qcow2") and not os.path.basename(image.path).endswith(codec)
    assert_usable_base(image, tmp_path)
    assert not cache.pull(url).downloaded
    assert len(http_files.body_gets("disk.qcow2." + codec)) == 1
    assert partial_files(cache) == []


def test_the_sha256_of_a_decompressed_image_is_computed_once_when_first_asked_for(cache, qcow2, http_files):
    http_files.put("disk.qcow2.zst", compress(qcow2, "zst"))
    url = http_files.url("disk.qcow2.zst")
    image = cache.pull(url)
    sidecar = image.path + ".json"
    assert json.load(open(sidecar))["sha256"] is None  # the pull itself does not hash the image
    assert cache.lookup(url).to_dict(digest=False)["sha256"] is None
    assert dataclasses.replace(image, downloaded=False) == cache.lookup(url) and "sha256=None" in repr(image)  # no hashing
    assert json.load(open(sidecar))["sha256"] is None
    assert image.digest() == sha256_file(qcow2) == json.load(open(sidecar))["sha256"]  # recorded
    assert cache.lookup(url).sha256 == image.digest()  # known from the sidecar
    cache.remove(url)
    assert cache.lookup(url) is None
    gone = cache.pull(url)
    cache.remove(url)
    assert gone.digest() is None and not os.path.exists(gone.path + ".json")  # no sidecar written for a removed entry


def test_zstd_is_recognised_by_its_magic_bytes_without_a_suffix(cache, qcow2, http_files):
    http_files.put("disk.bin", open(compress(qcow2, "zst"), "rb").read())
    image = cache.pull(http_files.url("disk.bin"))
    assert image.compression == "zstd" and image.digest() == sha256_file(qcow2)


def test_raw_image_stays_sparse_in_the_cache(cache, tmp_path, http_files):
    raw = make_raw(tmp_path / "disk.raw", size_mb=64, data_mb=2)
    http_files.put("disk.raw.zst", compress(raw, "zst"))
    image = cache.pull(http_files.url("disk.raw.zst"))
    assert image.format == "raw" and image.size == 64 << 20 and image.digest() == sha256_file(raw)
    assert os.stat(image.path).st_blocks * 512 < 8 << 20


def test_a_named_pull_uses_the_name_in_the_file_name(cache, qcow2, http_files):
    http_files.put("x.qcow2", qcow2)
    image = cache.pull(http_files.url("x.qcow2"), name="debian-12.qcow2")
    assert os.path.basename(image.path).startswith("debian-12-") and image.name == "debian-12.qcow2"


def test_dry_run_downloads_nothing(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    plan = cache.pull(url, dry_run=True)
    assert plan.downloaded and plan.sha256 is None and not os.path.exists(plan.path)
    assert http_files.requests() == [] and cache.list() == []
    real = cache.pull(url)
    assert real.path == plan.path
    assert not cache.pull(url, dry_run=True).downloaded


# --- HTTP errors ------------------------------------------------------------------------------------

def test_404_is_an_error_naming_url_and_status_and_caches_nothing(cache, http_files):
    url = http_files.url("missing.qcow2")
    with pytest.raises(DownloadFailed) as err:
        cache.pull(url)
    assert url in str(err.value) and "404" in str(err.value) and err.value.details["status"] == 404
    assert cache.list() == [] and cache_files(cache) == []


def test_500_is_an_error_naming_url_and_status_and_caches_nothing(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2", location="error500")
    with pytest.raises(DownloadFailed) as err:
        cache.pull(url)
    assert url in str(err.value) and "500" in str(err.value)
    assert [e["status"] for e in http_files.requests("disk.qcow2")] == [500]
    assert cache.list() == [] and cache_files(cache) == []


def test_connection_refused_is_a_download_error(cache):
    from support.nginx_server import free_port
    with pytest.raises(DownloadFailed, match="127.0.0.1"):
        cache.pull("http://127.0.0.1:%d/x.img" % free_port(), timeout=5)


# --- checksums --------------------------------------------------------------------------------------

def test_checksums_of_the_published_file_are_verified(cache, qcow2, http_files):
    import hashlib
    published = compress(qcow2, "zst")
    http_files.put("disk.qcow2.zst", published)
    url = http_files.url("disk.qcow2.zst")
    data = open(published, "rb").read()
    sha512 = hashlib.sha512(data).hexdigest()
    image = cache.pull(url, checksum="sha512:" + sha512)
    assert image.source_digests == {"sha512": sha512} and image.digest() == sha256_file(qcow2)
    # A cache hit is checked against the checksum too, without downloading.
    assert not cache.pull(url, checksum="sha512:" + sha512).downloaded
    assert len(http_files.body_gets("disk.qcow2.zst")) == 1


def test_a_wrong_checksum_is_an_error_and_leaves_nothing_behind(cache, qcow2, http_files):
    http_files.put("disk.qcow2.zst", compress(qcow2, "zst"))
    url = http_files.url("disk.qcow2.zst")
    decompressed_sha = sha256_file(qcow2)  # the checksum is of the published (compressed) bytes
    with pytest.raises(ChecksumMismatch) as err:
        cache.pull(url, checksum="sha256:" + decompressed_sha)
    assert url in str(err.value) and decompressed_sha in str(err.value)
    assert cache.list() == [] and cache_files(cache) == []


def test_checksum_file_url(cache, qcow2, http_files):
    import hashlib
    published = compress(qcow2, "xz")
    http_files.put("disk.qcow2.xz", published)
    digest = hashlib.sha256(open(published, "rb").read()).hexdigest()
    http_files.put("SHA256SUMS", ("%s *other.img\n%s *disk.qcow2.xz\n" % ("0" * 64, digest)).encode())
    image = cache.pull(http_files.url("disk.qcow2.xz"), checksum=http_files.url("SHA256SUMS"))
    assert image.source_digests == {"sha256": digest}
    http_files.put("wrong.qcow2.xz", published)
    with pytest.raises(InvalidChecksum, match="wrong.qcow2.xz"):
        cache.pull(http_files.url("wrong.qcow2.xz"), checksum=http_files.url("SHA256SUMS"))
    with pytest.raises(DownloadFailed, match="404"):
        cache.pull(http_files.url("wrong.qcow2.xz"), checksum=http_files.url("NOSUMS"))


def test_a_cached_image_that_does_not_match_a_new_checksum_is_downloaded_again(cache, tmp_path, http_files):
    old = make_qcow2(tmp_path / "old.qcow2", seed=1)
    new = make_qcow2(tmp_path / "new.qcow2", seed=2)
    path = http_files.put("disk.qcow2", old)
    url = http_files.url("disk.qcow2")
    cache.pull(url)
    http_files.put("disk.qcow2", new)
    os.utime(path, (time.time() + 10, time.time() + 10))
    image = cache.pull(url, checksum="sha256:" + sha256_file(new))
    assert image.downloaded and image.digest() == sha256_file(new) and sha256_file(image.path) == image.digest()


# --- resume -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", [None, "zst"])
def test_a_dropped_connection_is_resumed_with_a_range_request(cache, qcow2, http_files, nginx, codec):
    published = compress(qcow2, codec) if codec else qcow2
    name = os.path.basename(published)
    http_files.put(name, published)
    proxy = DroppingProxy(nginx.port, after=700000, drops=1)
    try:
        url = proxy.url(http_files.url(name))
        with pytest.raises(DownloadFailed, match="interrupted") as err:
            cache.pull(url, checksum="sha256:" + sha256_file(published))
        assert "run the pull again" in err.value.hint
        assert cache.lookup(url) is None
        offset = part_size(cache)
        assert 0 < offset < os.path.getsize(published)

        image = cache.pull(url, checksum="sha256:" + sha256_file(published))
    finally:
        proxy.close()
    assert image.downloaded and image.digest() == sha256_file(qcow2)
    gets = http_files.body_gets(name)
    assert [g["range"] for g in gets] == ["", "bytes=%d-" % offset]
    assert gets[1]["status"] == 206 and gets[1]["if_range"]
    assert gets[1]["bytes"] == os.path.getsize(published) - offset
    assert partial_files(cache) == []


def test_a_changed_file_on_the_server_restarts_the_download(cache, tmp_path, http_files, nginx):
    old = make_qcow2(tmp_path / "old.qcow2", seed=1)
    new = make_qcow2(tmp_path / "new.qcow2", seed=2)
    path = http_files.put("disk.qcow2", old)
    proxy = DroppingProxy(nginx.port, after=500000, drops=1)
    try:
        url = proxy.url(http_files.url("disk.qcow2"))
        with pytest.raises(DownloadFailed):
            cache.pull(url)
        assert part_size(cache) > 0
        http_files.put("disk.qcow2", new)
        os.utime(path, (time.time() + 100, time.time() + 100))  # a new ETag even within the same second
        image = cache.pull(url)
    finally:
        proxy.close()
    assert image.digest() == sha256_file(new) and sha256_file(image.path) == image.digest()
    second = http_files.body_gets("disk.qcow2")[1]
    assert second["range"].startswith("bytes=") and second["status"] == 200  # a range was asked, the whole file sent


def test_ctrl_c_mid_download_leaves_no_entry_and_the_next_pull_resumes(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2", location="slow")

    def interrupt(done, total):
        if done >= 1 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.pull(url, progress=interrupt)
    assert cache.lookup(url) is None and cache.list() == []
    offset = part_size(cache)
    assert offset >= 1 << 20
    image = cache.pull(url)
    assert image.digest() == sha256_file(qcow2)
    assert http_files.body_gets("disk.qcow2")[-1]["range"] == "bytes=%d-" % offset


# --- concurrency and crashes ----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_pulling_one_url_download_it_once(cache, tmp_path, http_files, vmctl_data_home):
    big = make_qcow2(tmp_path / "big.qcow2", size_mb=32, data_mb=6, seed=3)
    http_files.put("big.qcow2", big)
    url = http_files.url("big.qcow2", location="throttled")  # 2 MB/s: the first is still busy when the second starts
    data_home = os.path.dirname(str(vmctl_data_home))
    first = run_pull_process(url, data_home)
    wait_for(lambda: part_size(cache) > 0, what="the first pull to start receiving")
    second = run_pull_process(url, data_home)
    results = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert [r["downloaded"] for r in results] == [True, False]
    assert results[0]["path"] == results[1]["path"] and results[1]["sha256"] == sha256_file(big)
    assert len(http_files.body_gets("big.qcow2")) == 1


@pytest.mark.slow
def test_sigkill_mid_download_leaves_no_entry_and_the_next_pull_completes(cache, tmp_path, http_files, vmctl_data_home):
    big = make_qcow2(tmp_path / "big.qcow2", size_mb=16, data_mb=2, seed=4)
    published = compress(big, "zst")
    http_files.put("big.qcow2.zst", published)
    url = http_files.url("big.qcow2.zst", location="slow")  # 1 MB fast, then 256 KB/s
    proc = run_pull_process(url, os.path.dirname(str(vmctl_data_home)))
    wait_for(lambda: part_size(cache) >= 1 << 20, what="1 MB to arrive")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cache.lookup(url) is None and cache.list() == []
    assert not [f for f in cache_files(cache) if not f.startswith(".partial")]
    offset = part_size(cache)
    image = cache.pull(url)
    assert image.downloaded and image.digest() == sha256_file(big)
    assert http_files.body_gets("big.qcow2.zst")[-1]["range"] == "bytes=%d-" % offset
    assert partial_files(cache) == []


# --- safety -----------------------------------------------------------------------------------------

def test_a_qcow2_with_a_foreign_backing_file_is_refused(cache, qcow2, tmp_path, http_files):
    other = make_qcow2(tmp_path / "other.qcow2", seed=5)
    evil = make_qcow2(tmp_path / "evil.qcow2", backing=other)
    with pytest.raises(UnsafeImage) as err:
        cache.local_image(evil)
    assert other in str(err.value) and "backing file" in str(err.value) and err.value.code == "vmctl.image.unsafe_backing_file"
    assert cache.local_image(evil, allow_backing=True).format == "qcow2"

    http_files.put("evil.qcow2", evil)
    with pytest.raises(UnsafeImage, match="backing file"):
        cache.pull(http_files.url("evil.qcow2"))
    assert cache.list() == [] and cache_files(cache) == []


def test_a_qcow2_with_an_external_data_file_is_refused(cache, tmp_path):
    path = str(tmp_path / "datafile.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=%s" % (tmp_path / "data.raw"), path, "8M"],
                   check=True)
    with pytest.raises(UnsafeImage, match="data-file"):
        cache.local_image(path)


def test_local_images(cache, qcow2, tmp_path):
    image = cache.local_image(qcow2)
    assert image.format == "qcow2" and image.path == os.path.abspath(qcow2) and image.url is None
    raw = make_raw(tmp_path / "disk.img", size_mb=4, data_mb=1)
    assert cache.local_image(raw).format == "raw"
    with pytest.raises(ImageNotFound):
        cache.local_image(tmp_path / "nope.qcow2")


def test_truncated_compressed_image_is_refused_and_not_cached(cache, qcow2, http_files):
    data = open(compress(qcow2, "zst"), "rb").read()
    http_files.put("cut.qcow2.zst", data[:len(data) * 2 // 3])
    with pytest.raises(CorruptImage, match="truncated"):
        cache.pull(http_files.url("cut.qcow2.zst"))
    assert cache_files(cache) == []


# --- list, inspect, remove, prune ---------------------------------------------------------------------

def register_vm(name, image_path):
    VmStore().put(VmHandle(id=name, name=name, work_dir="/nonexistent/" + name, image_path=image_path))


def test_inspect_by_url_and_by_path(cache, qcow2, http_files, tmp_path):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    image = cache.pull(url)
    register_vm("web", image.path)
    by_url = cache.inspect(url)
    assert by_url["path"] == image.path and by_url["format"] == "qcow2" and by_url["cached"]
    assert by_url["virtual_size"] == 16 << 20 and by_url["backing_file"] is None and by_url["external_references"] == []
    assert by_url["url"] == url and by_url["sha256"] == image.digest() and by_url["used_by"] == ["web"]
    assert cache.inspect(image.path)["url"] == url
    local = cache.inspect(qcow2)
    assert not local["cached"] and local["format"] == "qcow2" and "url" not in local
    other = make_qcow2(tmp_path / "top.qcow2", backing=qcow2)
    assert cache.inspect(other)["backing_file"] == qcow2
    with pytest.raises(ImageNotFound, match="not in the image cache"):
        cache.inspect(http_files.url("never-pulled.qcow2"))


def test_remove_is_refused_while_a_vm_uses_the_image_unless_forced(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    image = cache.pull(url)
    register_vm("db", image.path)
    register_vm("web", image.path)
    with pytest.raises(ImageInUse) as err:
        cache.remove(url)
    assert "db, web" in str(err.value) and err.value.details["vms"] == ["db", "web"]
    assert os.path.exists(image.path)
    assert cache.list()[0].used_by == ["db", "web"]
    assert cache.remove(url, force=True, dry_run=True).path == image.path and os.path.exists(image.path)
    assert cache.remove(url, force=True).path == image.path
    assert not os.path.exists(image.path) and cache.list() == []
    assert cache.remove(url) is None


def test_remove_by_path_only_inside_the_cache(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    image = cache.pull(http_files.url("disk.qcow2"))
    with pytest.raises(ImageError, match="not in the image cache"):
        cache.remove(qcow2)
    assert os.path.exists(qcow2)
    assert cache.remove(image.path).url == image.url and cache.list() == []


def test_downloading_again_refuses_to_replace_an_image_in_use(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    image = cache.pull(url)
    register_vm("web", image.path)
    with pytest.raises(ImageInUse, match="web"):
        cache.pull(url, force=True)
    assert len(http_files.body_gets("disk.qcow2")) == 1 and sha256_file(image.path) == image.digest()


def test_prune_removes_unused_entries_and_stale_partial_downloads(cache, tmp_path, http_files, nginx):
    used_src = make_qcow2(tmp_path / "used.qcow2", seed=6)
    unused_src = make_qcow2(tmp_path / "unused.qcow2", seed=7)
    http_files.put("used.qcow2", used_src)
    http_files.put("unused.qcow2", unused_src)
    used = cache.pull(http_files.url("used.qcow2"))
    unused = cache.pull(http_files.url("unused.qcow2"))
    register_vm("web", used.path)
    proxy = DroppingProxy(nginx.port, after=400000)
    try:
        with pytest.raises(DownloadFailed):
            cache.pull(proxy.url(http_files.url("unused.qcow2")))
    finally:
        proxy.close()
    assert partial_files(cache)
    planned = cache.prune(dry_run=True)
    assert os.path.exists(unused.path) and partial_files(cache)
    removed = cache.prune()
    assert sorted(r["path"] for r in removed) == sorted(r["path"] for r in planned)
    reasons = {r["reason"] for r in removed}
    assert {"unused", "unfinished download"} <= reasons
    assert [e.path for e in cache.list()] == [used.path] and not os.path.exists(unused.path)
    assert partial_files(cache) == []
    assert cache.pull(http_files.url("used.qcow2")).downloaded is False


def test_a_damaged_entry_is_never_served(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    image = cache.pull(url)
    os.chmod(image.path, 0o644)
    with open(image.path, "r+b") as f:
        f.truncate(1000)
    assert cache.lookup(url) is None and cache.list() == []
    again = cache.pull(url)
    assert again.downloaded and sha256_file(again.path) == sha256_file(qcow2)


def test_a_checksum_given_later_is_checked_without_downloading_when_the_image_was_published_plain(cache, qcow2, http_files):
    import hashlib
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2")
    cache.pull(url)
    sha512 = hashlib.sha512(open(qcow2, "rb").read()).hexdigest()
    image = cache.pull(url, checksum="sha512:" + sha512)
    assert not image.downloaded and image.source_digests["sha512"] == sha512
    assert cache.lookup(url).source_digests["sha512"] == sha512  # remembered in the sidecar
    with pytest.raises(ChecksumMismatch):
        cache.pull(url, checksum="sha512:" + "0" * 128)  # downloads again, and that does not match either
    assert cache.lookup(url) is not None  # the good entry is kept
    assert len(http_files.body_gets("disk.qcow2")) == 2


def test_a_checksum_given_later_for_a_compressed_image_is_verified_by_downloading_again(cache, qcow2, http_files):
    import hashlib
    published = compress(qcow2, "gz")
    http_files.put("disk.qcow2.gz", published)
    url = http_files.url("disk.qcow2.gz")
    cache.pull(url)  # no checksum: the compressed bytes were not hashed
    digest = hashlib.sha256(open(published, "rb").read()).hexdigest()
    image = cache.pull(url, checksum="sha256:" + digest)
    assert image.downloaded and image.source_digests == {"sha256": digest}
    assert not cache.pull(url, checksum="sha256:" + digest).downloaded
    assert len(http_files.body_gets("disk.qcow2.gz")) == 2


def test_inspect_of_a_local_file_ignores_an_unrelated_json_next_to_it(cache, qcow2):
    with open(qcow2 + ".json", "w") as f:
        f.write('{"url": "http://x/y", "file": "disk.qcow2"}')
    assert cache.inspect(qcow2)["cached"] is False


def test_progress_is_logged_with_percent_bytes_and_rate(cache, qcow2, http_files, caplog, monkeypatch):
    import logging
    from ansible_collections.vmctl.core.plugins.module_utils.images import cache as images
    monkeypatch.setattr(images, "LOG_INTERVAL", 0.0)
    http_files.put("disk.qcow2", qcow2)
    with caplog.at_level(logging.INFO, logger="vmctl.images"):
        cache.pull(http_files.url("disk.qcow2", location="throttled"))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pulling ")]
    assert progress and all("%" in m and " of " in m and "/s" in m for m in progress)
    assert any(m.startswith("cached ") for m in (r.getMessage() for r in caplog.records))


def test_tls_certificates_are_verified_unless_validate_certs_is_false(cache, qcow2, http_files):
    http_files.put("disk.qcow2", qcow2)
    url = http_files.url("disk.qcow2", tls=True)  # nginx with a self-signed certificate
    with pytest.raises(DownloadFailed, match="TLS verification failed") as err:
        cache.pull(url)
    assert "validate_certs" in err.value.hint and cache_files(cache) == []
    image = cache.pull(url, validate_certs=False)
    assert image.downloaded and image.digest() == sha256_file(qcow2)
