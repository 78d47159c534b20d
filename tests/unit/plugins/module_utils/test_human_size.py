"""Sizes are labelled in the binary units they are computed in (1024-based: KiB, MiB, GiB), as the CLI
prints them in image lists, download progress and inspect output."""

from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size


def test_binary_units():
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(16 << 20) == "16.0 MiB"
    assert human_size(276 << 20) == "276.0 MiB"
    assert human_size(3 << 30) == "3.0 GiB"
    assert human_size(5 << 40) == "5120.0 GiB"  # GiB is the largest unit
