import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
# Fixtures: a real nginx for download tests.
from support.nginx_server import http_files, nginx  # noqa: E402,F401  pylint: disable=unused-import
from support.sshd_server import LoopbackSshd  # noqa: E402
from support.vm_ssh_helpers import new_control_dir, remove_control_dir  # noqa: E402


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback (LoopbackSshd), one per test module that asks for it."""
    server = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def control_dir(monkeypatch):
    """This test's own directory of vm_ssh session daemons (ANSIBLE_VMCTL_CONTROL_PATH_DIR)."""
    path = new_control_dir()
    monkeypatch.setenv("ANSIBLE_VMCTL_CONTROL_PATH_DIR", path)
    yield path
    remove_control_dir(path)
