"""The ssh-config stanza's quoting: paths are quoted with % doubled; what could end a value, expand or start
another option is refused (bad input: each gets InvalidSpec/InvalidName naming the VM or the value)."""

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidName, InvalidSpec, VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.ssh import config_path, split_remote, stanza


def test_a_path_with_spaces_and_percent_is_quoted():
    text = stanza("web", "127.0.0.1", 2222, "vm", "/d/my keys/id 100%", "/d/my vm/known_hosts")
    assert '  IdentityFile "/d/my keys/id 100%%"' in text.splitlines()
    assert '  UserKnownHostsFile "/d/my vm/known_hosts"' in text.splitlines()
    assert text.startswith("Host web\n  HostName 127.0.0.1\n  Port 2222\n  User vm\n")
    for line in ("  StrictHostKeyChecking yes", "  IdentitiesOnly yes", "  GlobalKnownHostsFile /dev/null", "  LogLevel ERROR"):
        assert line in text.splitlines()


@pytest.mark.parametrize("path", ['/d/a"\n  ProxyCommand touch /tmp/x', "/d/a\nProxyCommand x", "/d/${HOME}/k",
                                  "/d/a\\b", "relative/key", "/d/a\x00b"])
def test_a_path_that_could_inject_or_expand_is_refused(path):
    """Bad input: a quote, newline, backslash, ${VAR}, NUL or relative path: InvalidSpec naming the VM."""
    with pytest.raises(InvalidSpec, match="VM web: its private key path"):
        config_path(path, "private key", "web")


def test_name_user_address_and_port_are_validated():
    """Bad input: an option-looking user, a name with a space, a host that is no address, a port out of range."""
    with pytest.raises(VmctlError):
        stanza("web", "127.0.0.1", 22, "-oProxyCommand=x", None, "/k")
    with pytest.raises(InvalidName):
        stanza("web x", "127.0.0.1", 22, "vm", None, "/k")
    with pytest.raises(ValueError):
        stanza("web", "127.0.0.1\n  ProxyCommand x", 22, "vm", None, "/k")
    with pytest.raises(InvalidSpec):
        stanza("web", "127.0.0.1", 70000, "vm", None, "/k")


def test_no_identity_file_line_without_a_key():
    assert "IdentityFile" not in stanza("web", "10.0.0.5", 22, "vm", None, "/k")


@pytest.mark.parametrize("arg, expected", [("web:/tmp/a", ("web", "/tmp/a")), ("web:", ("web", ".")),
                                           ("./web:a", (None, "./web:a")), ("/x/y", (None, "/x/y")),
                                           ("a b:c", (None, "a b:c"))])
def test_split_remote(arg, expected):
    assert split_remote(arg) == expected


def test_a_tap_guest_without_a_lease_gets_a_comment_not_a_bogus_hostname():
    from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig, VmHandle
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli.ssh import _stanza_of

    class NoLease:
        def endpoint(self, handle):
            return None, 22  # what VmManager.endpoint says for a TAP guest with no DHCP lease yet

    handle = VmHandle(id="t", name="tapvm", ssh_user="vm", known_hosts="/k", network=NetworkConfig(type="tap", bridge="br0"))
    text = _stanza_of(NoLease(), handle)
    assert text.startswith("# tapvm: no address yet") and "HostName" not in text
