"""Host keys read from the console (host_keys.py): only the first complete block after the latest
start's offset, markers on lines of their own, real key lines only, never over an existing pin."""

from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys, keys
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget

A = keys.generate_ed25519("a").public_openssh
B = keys.generate_ed25519("b").public_openssh


def short(public):
    return " ".join(public.split()[:2])


def block(*publics):
    return "%s\r\n%s-----END SSH HOST KEY KEYS-----\r\n" % (host_keys.BEGIN, "".join(p + " root@g\r\n" for p in publics))


def console(tmp_path, text):
    path = tmp_path / "console.log"
    path.write_bytes(text.encode())
    return str(path)


def test_the_first_block_after_the_offset_is_read(tmp_path):
    """An old boot's block (before the offset) is not replayed; a later block does not replace the first."""
    old = "[ 1.0] boot\r\n" + block(B)
    log = console(tmp_path, old + "[ 2.0] again\r\n" + block(A) + block(B))
    assert host_keys.keys_from_console(log, 0) == [short(B)]
    assert host_keys.keys_from_console(log, len(old)) == [short(A)]


def test_forged_and_broken_blocks_are_not_read(tmp_path):
    """A marker inside a line (a kernel message quoting a process name), an unfinished block, a key line whose
    blob names another type, and lines that are no key give nothing."""
    forged = "[ 3.1] segfault in %s\r\n%s root@g\r\n-----END SSH HOST KEY KEYS-----\r\n" % (host_keys.BEGIN, A)
    assert host_keys.keys_from_console(console(tmp_path, forged)) == []
    assert host_keys.keys_from_console(console(tmp_path, host_keys.BEGIN + "\r\n" + A + "\r\n")) == []
    wrong_type = "ssh-rsa " + A.split()[1]
    assert host_keys.keys_from_console(console(tmp_path, block(wrong_type, "not a key"))) == []
    mixed = block("[ 4.0] interleaved kernel line", A)
    assert host_keys.keys_from_console(console(tmp_path, mixed)) == [short(A)]


def test_a_pin_is_never_replaced_from_the_console(tmp_path):
    """pin_from_console writes the VM's known_hosts once; a tampered file stays as it is (the login then fails)."""
    known = str(tmp_path / "known_hosts")
    log = console(tmp_path, block(A))
    assert host_keys.pin_from_console(known, log, 0, 10022)
    assert host_keys.pinned_keys(known) == [short(A), short(A)]  # [127.0.0.1]:10022 and *
    with open(known, "w") as f:
        f.write(host_keys.known_hosts_text(10022, [B]))
    assert not host_keys.pin_from_console(known, log, 0, 10022)
    assert set(host_keys.pinned_keys(known)) == {short(B)}


def test_only_the_vms_own_known_hosts_is_filled(tmp_path):
    """A target whose known_hosts the user gave learns nothing; the VM's own may be missing until pinned."""
    known = str(tmp_path / "known_hosts")
    log = console(tmp_path, block(A))
    key = tmp_path / "id"
    keys.write_keypair(keys.generate_ed25519("u"), str(key))
    target = SshTarget("vm1", "127.0.0.1", 10022, "u", str(key), known, console_log=log, learn_host_keys=None)
    target.pin_console_keys()
    assert host_keys.pinned_keys(known) == []
    target.learn_host_keys = "yes"
    target.check()  # no file yet: fine, it comes from the console
    target.pin_console_keys()
    assert short(A) in host_keys.pinned_keys(known)
