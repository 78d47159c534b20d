"""Cache keys and file names, checksum specs and checksum files, image safety from qemu-img info."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.vmctl.core.plugins.module_utils.images import cache as images
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidChecksum, InvalidImageUrl, InvalidName

UBUNTU = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
HEX64 = "a" * 64
HEX128 = "b" * 128


def test_file_name_is_readable_plus_url_hash():
    name = images.cache_file_name(UBUNTU)
    assert name == "noble-server-cloudimg-amd64-%s.img" % images.url_key(UBUNTU)
    assert len(images.url_key(UBUNTU)) == 12


def test_a_changed_url_gets_another_entry_even_with_the_same_file_name():
    other = UBUNTU.replace("current", "20240423")
    assert images.url_key(other) != images.url_key(UBUNTU)
    assert images.cache_file_name(other) != images.cache_file_name(UBUNTU)


@pytest.mark.parametrize("url,expected_prefix,expected_ext", [
    ("https://x.org/a/debian-12.qcow2.zst", "debian-12", ".qcow2"),
    ("https://x.org/a/debian-12.qcow2.xz", "debian-12", ".qcow2"),
    ("https://x.org/a/disk.raw.gz", "disk", ".raw"),
    ("https://x.org/a/my%20image.img?token=1", "my_image", ".img"),
    ("https://x.org/", "image", ""),
    ("https://x.org/a/..", "image", ""),
    ("https://x.org/a/meta.json", "meta.json", ""),
])
def test_file_names_drop_compression_suffixes_and_unsafe_characters(url, expected_prefix, expected_ext):
    name = images.cache_file_name(url)
    assert name == "%s-%s%s" % (expected_prefix, images.url_key(url), expected_ext)


@given(st.text(min_size=1, max_size=300))
def test_any_url_path_gives_a_safe_single_component_name(path):
    url = "https://example.org/" + path
    name = images.cache_file_name(url)
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    assert images.ImageCache._key_of(name) == images.url_key(url)


def test_given_names_are_validated():
    assert images.cache_file_name(UBUNTU, "ubuntu-24.04.img").startswith("ubuntu-24.04-")
    with pytest.raises(InvalidName):
        images.cache_file_name(UBUNTU, "../../etc/passwd")


@pytest.mark.parametrize("url", ["ftp://x.org/a.img", "file:///etc/passwd", "/local/path.img", "https://", None])
def test_only_http_urls_are_pulled(url):
    with pytest.raises(InvalidImageUrl):
        images._check_url(url)


@pytest.mark.parametrize("spec,expected", [
    ("sha256:" + HEX64, images.Checksum("sha256", HEX64)),
    ("SHA512:" + HEX128.upper(), images.Checksum("sha512", HEX128)),
    ("https://x.org/SHA256SUMS", images.Checksum(None, file_url="https://x.org/SHA256SUMS")),
    ("sha512:https://x.org/SHA512SUMS", images.Checksum("sha512", file_url="https://x.org/SHA512SUMS")),
])
def test_checksum_specs(spec, expected):
    assert images.parse_checksum(spec) == expected


@pytest.mark.parametrize("spec", ["", "sha256:abc", "md5:" + "a" * 32, HEX64, "sha256:" + "g" * 64, "sha512:" + HEX64])
def test_bad_checksum_specs_are_refused(spec):
    with pytest.raises(InvalidChecksum):
        images.parse_checksum(spec)


SUMS = """\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

%s *noble-server-cloudimg-amd64.img
%s  noble-server-cloudimg-arm64.img
SHA256 (Fedora-Cloud.qcow2) = %s
%s  ./debian-12.qcow2.zst
-----BEGIN PGP SIGNATURE-----
""" % ("1" * 64, "2" * 64, "3" * 64, "4" * 128)


@pytest.mark.parametrize("name,expected", [
    ("noble-server-cloudimg-amd64.img", ("sha256", "1" * 64)),
    ("noble-server-cloudimg-arm64.img", ("sha256", "2" * 64)),
    ("Fedora-Cloud.qcow2", ("sha256", "3" * 64)),
    ("debian-12.qcow2.zst", ("sha512", "4" * 128)),
    ("noble-server-cloudimg-amd64.img.zst", None),
    ("amd64.img", None),
])
def test_checksum_files_gnu_and_bsd_lines(name, expected):
    assert images.find_in_checksum_file(SUMS, name) == expected


def test_checksum_file_algorithm_filter_and_conflicts():
    assert images.find_in_checksum_file(SUMS, "debian-12.qcow2.zst", "sha256") is None
    twice = SUMS + "%s  noble-server-cloudimg-arm64.img\n" % ("9" * 64)
    with pytest.raises(InvalidChecksum, match="more than once"):
        images.find_in_checksum_file(twice, "noble-server-cloudimg-arm64.img")


@pytest.mark.parametrize("info,unsafe", [
    ({"filename": "a.qcow2", "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}, []),
    ({"filename": "a.qcow2", "format": "qcow2", "backing-filename": "/etc/shadow",
      "full-backing-filename": "/etc/shadow"}, ["backing file /etc/shadow"]),
    ({"filename": "a.qcow2", "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}},
     ["data-file /dev/sda"]),
    ({"filename": "v.vmdk", "format": "vmdk", "format-specific": {"type": "vmdk", "data": {
        "extents": [{"filename": "v.vmdk", "format": "SPARSE"}]}}}, []),
    ({"filename": "v.vmdk", "format": "vmdk", "format-specific": {"type": "vmdk", "data": {
        "extents": [{"filename": "/home/me/.ssh/id_rsa", "format": "FLAT"}]}}}, ["filename /home/me/.ssh/id_rsa"]),
])
def test_external_references(info, unsafe):
    assert images.external_references(info) == unsafe


def test_sidecar_round_trip_keeps_everything_but_runtime_fields(tmp_path):
    entry = images.CachedImage(path=str(tmp_path / "a-123456789abc.img"), format="qcow2", size=3, sha256="c" * 64,
                               url=UBUNTU, downloaded=True, name=None, virtual_size=10, fetched_at="2025-01-01T00:00:00Z",
                               etag='"x"', compression="zstd", source_size=2, source_digests={"sha256": "d" * 64},
                               used_by=["vm1"])
    data = entry.sidecar()
    assert "path" not in data and "downloaded" not in data and "used_by" not in data
    back = images.CachedImage.from_sidecar(dict(data, future_field=1), entry.path)
    assert back.to_dict() == dict(entry.to_dict(), downloaded=False, used_by=None)
