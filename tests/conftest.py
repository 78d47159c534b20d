"""Shared fixtures: every test gets its own vmctl data directory."""

import os

import pytest


@pytest.fixture(autouse=True)
def vmctl_data_home(tmp_path, monkeypatch):
    """An isolated $XDG_DATA_HOME so no test sees another's store, images or VMs."""
    home = tmp_path / "xdg-data"
    home.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home / "vmctl"


@pytest.fixture(scope="session")
def test_images():
    """Paths of the images built by scripts/build-test-image (JSON written there), or skip-fail."""
    import json
    manifest = os.environ.get("VMCTL_TEST_IMAGES")
    if not manifest or not os.path.exists(manifest):
        pytest.fail("VMCTL_TEST_IMAGES is not set; run the tests through scripts/test")
    with open(manifest) as f:
        return json.load(f)
