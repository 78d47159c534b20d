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


class _TmpfsMounts:
    """Small tmpfs file systems for disk-full faults (``mount``), and ``fill`` to use up one's space."""

    def __init__(self, base):
        self.base, self.mounts = base, []

    def mount(self, size, mode="0700"):
        """A fresh tmpfs of ``size`` ("1m", "96m") under the test's tmp dir; the test is skipped if none can be mounted."""
        import subprocess
        path = self.base / ("tmpfs-%d" % len(self.mounts))
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=%s" % (size, mode), "tmpfs", str(path)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
        self.mounts.append(path)
        return path

    @staticmethod
    def fill(directory):
        """Write a file in ``directory`` until its file system is full; returns the file's path."""
        path = os.path.join(str(directory), "filler")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        return path


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs.mount(size)`` and ``tmpfs.fill(dir)``; every mount is unmounted after the test."""
    import subprocess
    mounts = _TmpfsMounts(tmp_path)
    yield mounts
    for path in mounts.mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


# The test files that take longest (minutes of TCG guests each, measured in CI), longest first. With
# two workers (scripts/test: pytest-xdist, one file per worker at a time) they start first, so the
# run does not end with one worker alone on a long file while the other idles.
LONGEST_FIRST = (
    "test_playbooks.py", "test_private_network_guests.py", "test_first_try.py", "test_snapshots.py",
    "test_console_host_keys.py", "test_molecule.py", "test_vm_modules.py", "test_vm_playbook.py",
    "test_cli.py", "test_debian_guest.py", "test_vm_ssh_guest.py", "test_tap_network.py",
)


def pytest_collection_modifyitems(items):
    """Runs the files of LONGEST_FIRST first, in that order; every other test keeps its place after them."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
