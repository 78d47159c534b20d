"""``vmctl ssh-config`` and ``vmctl cp`` against a real OpenSSH sshd on loopback (a store entry, noop backend,
running, points at it with a known_hosts in the QEMU backend's format): the real ssh reads the printed
config with host keys pinned, and cp moves files both ways over the engine's pinned session."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")


def vmctl(*args):
    return subprocess.run([VMCTL] + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def loop_vm(sshd, tmp_path, vmctl_data_home):
    return sshd.store_vm("loop", tmp_path / "vm-loop")


def ssh(config, name, *command):
    """The real OpenSSH client with the printed config (no prompts)."""
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", name] + list(command),
                          capture_output=True, text=True, timeout=60, check=False)


def ssh_config(tmp_path, *names):
    proc = vmctl("ssh-config", *names)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "ssh_config"
    path.write_text(proc.stdout)
    return path


def test_ssh_with_the_printed_config_logs_in_with_the_host_key_pinned(tmp_path, loop_vm):
    config = ssh_config(tmp_path, "loop")
    text = config.read_text()
    assert "UserKnownHostsFile \"%s\"" % loop_vm.known_hosts in text and "StrictHostKeyChecking yes" in text
    proc = ssh(config, "loop", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr
    # default: every VM with SSH settings
    assert vmctl("ssh-config").stdout == text


def test_a_tampered_known_hosts_makes_ssh_refuse(tmp_path, sshd, loop_vm):
    """Bad input: the VM's known_hosts pins another key (a decoy in tmp): ssh refuses the host."""
    from support.sshd_server import keygen
    other = keygen(tmp_path / "other_host_key")
    with open(other + ".pub") as f:
        sshd.known_hosts_file(loop_vm.known_hosts, f.read().strip())
    config = ssh_config(tmp_path, "loop")
    proc = ssh(config, "loop", "true")
    assert proc.returncode == 255
    assert "host key" in proc.stderr.lower()


def test_ssh_config_of_an_unknown_vm_is_an_error(loop_vm):
    """Bad input: a name not in the store: exit 3 naming it, nothing on stdout."""
    proc = vmctl("ssh-config", "loop", "nosuch")
    assert proc.returncode == 3 and proc.stdout == ""
    assert "nosuch" in proc.stderr


def test_ssh_config_of_a_path_with_spaces_works(tmp_path, sshd, vmctl_data_home):
    """A key in a folder with spaces (a copy in tmp) is quoted, and ssh reads it."""
    folder = tmp_path / "my keys"
    folder.mkdir()
    key = folder / "id 1"
    key.write_bytes(open(sshd.user_key, "rb").read())
    key.chmod(0o600)
    sshd.store_vm("spaced", tmp_path / "vm", private_key_path=str(key))
    config = ssh_config(tmp_path, "spaced")
    proc = ssh(config, "spaced", "true")
    assert proc.returncode == 0, proc.stderr


def test_cp_a_file_both_ways(tmp_path, loop_vm):
    src = tmp_path / "up.txt"
    src.write_bytes(b"hello vm\n" * 1000)
    remote = tmp_path / "remote"  # the loopback 'VM' shares this host's file system
    remote.mkdir()
    proc = vmctl("cp", src, "loop:%s/" % remote)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert "9000 bytes" in proc.stderr
    assert (remote / "up.txt").read_bytes() == src.read_bytes()
    back = tmp_path / "back.txt"
    proc = vmctl("cp", "loop:%s/up.txt" % remote, back)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert back.read_bytes() == src.read_bytes()


def test_cp_r_a_folder_both_ways(tmp_path, loop_vm):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("a")
    (tree / "sub" / "b").write_text("bb")
    remote = tmp_path / "remote"
    remote.mkdir()
    proc = vmctl("cp", "-r", tree, "loop:%s" % remote)
    assert proc.returncode == 0, proc.stderr
    assert "2 files, 3 bytes" in proc.stderr
    assert (remote / "tree" / "sub" / "b").read_text() == "bb"
    down = tmp_path / "down"
    proc = vmctl("cp", "-r", "loop:%s/tree" % remote, down)
    assert proc.returncode == 0, proc.stderr
    assert (down / "a").read_text() == "a" and (down / "sub" / "b").read_text() == "bb"


def test_cp_bad_inputs(tmp_path, sshd, loop_vm):
    """Each bad input gets a clear error and a non-zero exit; nothing is written."""
    folder = tmp_path / "folder"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        # unknown VM: not found (3), naming it
        (("cp", afile, "nosuch:/tmp/x"), 3, "nosuch"),
        # both sides remote / neither remote: usage (2)
        (("cp", "loop:/a", "loop:/b"), 2, "both are in a VM"),
        (("cp", afile, tmp_path / "x"), 2, "neither is in a VM"),
        # a missing local source: usage (2), naming it
        (("cp", tmp_path / "missing", "loop:/tmp/x"), 2, "missing does not exist on the host"),
        # a folder without -r, either way: usage (2)
        (("cp", folder, "loop:%s/x" % tmp_path), 2, "is a folder: copying it needs -r"),
        (("cp", "loop:%s" % folder, tmp_path / "y"), 2, "is a folder: copying it needs -r"),
        # a remote path that does not exist: failed (1), naming it
        (("cp", "loop:%s/absent" % tmp_path, tmp_path / "z"), 1, "absent does not exist in the VM"),
    ]
    for args, code, message in cases:
        proc = vmctl(*args)
        assert proc.returncode == code and message in proc.stderr, (args, proc.returncode, proc.stderr)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_cp_to_a_stopped_vm_is_an_error(tmp_path, sshd, vmctl_data_home):
    """Bad input: the VM is not running (noop backend, stopped): exit 4, with the start hint."""
    sshd.store_vm("off", tmp_path / "vm", state="stopped")
    src = tmp_path / "f"
    src.write_text("x")
    proc = vmctl("cp", src, "off:/tmp/f")
    assert proc.returncode == 4 and "VM off is stopped" in proc.stderr and "vmctl start off" in proc.stderr, proc.stderr
