"""PinnedHostKeys reads known_hosts as OpenSSH does; the session daemon's frames survive any split."""

import base64
import os
import subprocess

import pytest

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import protocol
from ansible_collections.vmctl.core.plugins.module_utils.errors import HostKeyMismatch
from ansible_collections.vmctl.core.plugins.module_utils.guest.keys import generate_ed25519, known_hosts_line
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import PinnedHostKeys, fingerprint


def blob(public_openssh):
    return base64.b64decode(public_openssh.split()[1])


@pytest.fixture
def keys():
    return [generate_ed25519("k%d" % i).public_openssh for i in range(3)]


def pins(tmp_path, text):
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return PinnedHostKeys(str(path))


def test_engine_format_pins_port_line_and_star_line(tmp_path, keys):
    pinned = pins(tmp_path, known_hosts_line("127.0.0.1", 10022, keys[0]) + "* %s\n" % " ".join(keys[1].split()[:2]))
    pinned.verify("vm", "127.0.0.1", 10022, "ssh-ed25519", blob(keys[0]))
    pinned.verify("vm", "10.0.0.7", 22, "ssh-ed25519", blob(keys[1]))     # a TAP guest: any address
    with pytest.raises(HostKeyMismatch) as err:
        pinned.verify("vm", "127.0.0.1", 10022, "ssh-ed25519", blob(keys[2]))
    message = str(err.value)
    assert "VM vm" in message and "[127.0.0.1]:10022" in message
    assert fingerprint("ssh-ed25519", blob(keys[2])) in message
    assert fingerprint("ssh-ed25519", blob(keys[0])) in message and fingerprint("ssh-ed25519", blob(keys[1])) in message


def test_brackets_are_literal_and_port_22_has_none(tmp_path, keys):
    pinned = pins(tmp_path, known_hosts_line("127.0.0.1", 22, keys[0]) + known_hosts_line("127.0.0.1", 2222, keys[1]))
    assert [k.blob for k in pinned.lookup("127.0.0.1", 22)[0]] == [blob(keys[0])]
    assert [k.blob for k in pinned.lookup("127.0.0.1", 2222)[0]] == [blob(keys[1])]
    assert pinned.lookup("127.0.0.2", 2222)[0] == []  # '[' is not a character class


def test_patterns_negation_and_revoked(tmp_path, keys):
    k0, k1 = [" ".join(k.split()[:2]) for k in keys[:2]]
    pinned = pins(tmp_path, "# comment\n\n10.0.0.*,!10.0.0.9 %s\n@revoked * %s\n@cert-authority * %s\nhost?.lan %s\n" % (k0, k1, k0, k0))
    assert len(pinned.lookup("10.0.0.4", 22)[0]) == 1
    assert pinned.lookup("10.0.0.9", 22)[0] == []
    assert len(pinned.lookup("host1.lan", 22)[0]) == 1 and pinned.lookup("host12.lan", 22)[0] == []
    with pytest.raises(HostKeyMismatch, match="@revoked"):
        pinned.verify("vm", "10.0.0.4", 22, "ssh-ed25519", blob(keys[1]))


def test_hashed_names(tmp_path, keys):
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line("192.168.1.5", 22, keys[0]) + known_hosts_line("127.0.0.1", 2200, keys[1]))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    assert "192.168.1.5" not in path.read_text()
    pinned = PinnedHostKeys(str(path))
    pinned.verify("vm", "192.168.1.5", 22, "ssh-ed25519", blob(keys[0]))
    pinned.verify("vm", "127.0.0.1", 2200, "ssh-ed25519", blob(keys[1]))
    with pytest.raises(HostKeyMismatch):
        pinned.verify("vm", "192.168.1.6", 22, "ssh-ed25519", blob(keys[0]))


def test_no_pin_at_all_is_refused_with_a_hint(tmp_path, keys):
    pinned = pins(tmp_path, "")
    with pytest.raises(HostKeyMismatch) as err:
        pinned.verify("web", "127.0.0.1", 2222, "ssh-ed25519", blob(keys[0]))
    assert "pins no host key" in str(err.value) and err.value.hint


def test_asks_for_the_pinned_key_types_first(tmp_path, keys):
    rsa = "AAAAB3NzaC1yc2EAAAADAQAB"  # only the type matters here
    pinned = pins(tmp_path, "* ssh-rsa %s\n* %s\n" % (rsa, " ".join(keys[0].split()[:2])))
    assert pinned.key_algorithms("h", 22) == ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed25519"]


def test_fingerprint_matches_ssh_keygen(tmp_path, keys):
    path = tmp_path / "k.pub"
    path.write_text(keys[0] + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], check=True, capture_output=True, text=True).stdout
    assert fingerprint("ssh-ed25519", blob(keys[0])) == "ssh-ed25519 " + out.split()[1]


def test_frames_survive_any_split():
    data = (protocol.json_frame(protocol.REQUEST, {"op": "exec"}) + protocol.frame(protocol.STDIN, os.urandom(70000))
            + protocol.frame(protocol.STDIN_EOF))
    for step in (1, 7, 4096, len(data)):
        reader = protocol.FrameReader()
        frames = []
        for start in range(0, len(data), step):
            frames += reader.feed(data[start:start + step])
        assert [kind for kind, _payload in frames] == [protocol.REQUEST, protocol.STDIN, protocol.STDIN_EOF]
        assert len(frames[1][1]) == 70000


def test_oversized_frame_is_refused():
    with pytest.raises(EOFError):
        protocol.FrameReader().feed(protocol._HEADER.pack(protocol.STDOUT, protocol.MAX_FRAME + 1))
