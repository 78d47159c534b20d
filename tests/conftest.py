"""Shared fixtures: every test gets its own vmctl data directory, and leaves no VM running."""

import contextlib
import json
import os

import pytest


@pytest.fixture(autouse=True)
def vmctl_data_home(tmp_path, monkeypatch):
    """An isolated $XDG_DATA_HOME so no test sees another's store, images or VMs.

    After the test, every VM still in that store is destroyed, so a failing test does not leave
    QEMU processes eating the CPU the next tests need.
    """
    home = tmp_path / "xdg-data"
    home.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    yield home / "vmctl"
    if (home / "vmctl" / "vms.json").exists():
        from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
        manager = VmManager()
        with contextlib.suppress(Exception):
            for name in manager.list():
                with contextlib.suppress(Exception):
                    manager.destroy(name)


@pytest.fixture(scope="session")
def test_images():
    """Paths of the images built by scripts/build-test-image (its manifest.json)."""
    manifest = os.environ.get("VMCTL_TEST_IMAGES")
    if not manifest or not os.path.exists(manifest):
        pytest.fail("VMCTL_TEST_IMAGES is not set; run the tests through scripts/test")
    with open(manifest) as f:
        return json.load(f)
