"""Issue 11 item 12 and its siblings: a FIFO, a directory or /dev/zero where a file is expected (an
ssh-key, user-data, a private key, the files an SSH connection uses) says what it is, never "does not
exist", and never blocks (a FIFO is never read: these tests would hang if it were) nor reads forever."""

import os
import signal

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import checks, specs
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, SshError
from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks fails the test after 10 s instead of hanging the run."""
    def timeout(*args):
        raise AssertionError("blocked reading a file")
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def not_files(tmp_path):
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    folder = str(tmp_path / "folder")
    os.mkdir(folder)
    return [(fifo, "a FIFO (named pipe)"), (folder, "a directory"), ("/dev/zero", "a character device")]


def test_file_kind_names_what_is_there(tmp_path, not_files):
    regular = tmp_path / "file"
    regular.write_text("x")
    assert checks.file_kind(str(regular)) is None
    assert checks.file_kind(str(tmp_path / "missing")) == "missing"
    assert checks.file_kind(str(regular / "below")) == "missing"  # a path through a file
    for path, kind in not_files:
        assert checks.file_kind(path) == kind


def test_an_ssh_key_user_data_or_private_key_that_is_not_a_file_says_what_it_is(tmp_path, not_files):
    """Bad input: each of them as an ssh-key, as user-data (the vm module's cloud_init) and as a private
    key. Gets: InvalidSpec "<what> <path> is <kind>, not a regular file" with a hint."""
    for path, kind in not_files:
        with pytest.raises(InvalidSpec) as caught:
            checks.read_public_key(path)
        assert caught.value.message == "ssh-key %s is %s, not a regular file" % (path, kind) and caught.value.hint
        with pytest.raises(InvalidSpec) as caught:
            specs.cloud_init_config({"name": "vm1", "cloud_init": {"user_data": path}})
        assert caught.value.message == "VM vm1: user-data %s is %s, not a regular file" % (path, kind)
        with pytest.raises(InvalidSpec) as caught:
            keys.public_openssh_of(path)
        assert caught.value.message == "private key %s is %s, not a regular file" % (path, kind)
    with pytest.raises(InvalidSpec) as caught:
        checks.read_public_key(str(tmp_path / "missing.pub"))
    assert "does not exist" in caught.value.message


def test_a_file_too_large_for_what_it_is_is_refused(tmp_path):
    """Bad input: a 100 KB file as an ssh-key (a disk image named by mistake). Gets: an error saying
    it is larger than a key can be; nothing beyond the bound is read."""
    big = tmp_path / "disk.img"
    big.write_bytes(b"\0" * 100000)
    with pytest.raises(InvalidSpec) as caught:
        checks.read_public_key(str(big))
    assert "is larger than 65536 bytes" in caught.value.message


def test_an_ssh_connection_file_that_is_not_a_file_says_what_it_is(tmp_path, not_files):
    """Bad input: the connection's private key or known_hosts file is a FIFO, a directory or /dev/zero.
    Gets: SshError "<what> <path> is <kind>, not a regular file" before any traffic (ssh would block
    opening a FIFO); a missing one still says it does not exist."""
    key = tmp_path / "id"
    key.write_text("key")
    known = tmp_path / "known_hosts"
    known.write_text("")
    for path, kind in not_files:
        for field, what in (("private_key_path", "private key"), ("known_hosts", "known_hosts file")):
            values = dict(vm="vm1", host="127.0.0.1", port=22, user="vm", private_key_path=str(key), known_hosts=str(known))
            values[field] = path
            target = SshTarget(**values)
            target.identity()  # hashes the files: must not block either
            with pytest.raises(SshError) as caught:
                target.check()
            assert caught.value.message == "VM vm1: %s %s is %s, not a regular file" % (what, path, kind)
    target = SshTarget(vm="vm1", host="127.0.0.1", port=22, user="vm", private_key_path=str(tmp_path / "gone"),
                       known_hosts=str(known))
    with pytest.raises(SshError) as caught:
        target.check()
    assert "does not exist" in caught.value.message
