"""The hypervisors of a vms inventory file as vmctl reads them (the plugin's own parsing), and the hypervisor's
Host stanza for ProxyJump: every value validated (bad input: each gets a UsageError/InvalidSpec saying what)."""

import os

import pytest
import yaml

from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.ssh import _remote_config, hypervisor_stanza
from ansible_collections.vmctl.core.plugins.plugin_utils.hypervisors import Hypervisor
from ansible_collections.vmctl.core.plugins.plugin_utils.remote_vms import Located, read_inventory


def write(path, config):
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_localhost_and_mappings_are_read_with_the_plugins_defaults(tmp_path):
    path = write(tmp_path / "fleet.vmctl.yml", {"plugin": "vmctl.core.vms", "data_dir": "store", "hypervisor_timeout": 7,
                                                "hypervisors": ["localhost", {"name": "hv1", "host": "192.0.2.10",
                                                                              "user": "vmctl", "private_key_file": "/k"}]})
    inventory = read_inventory(path)
    local, hv1 = inventory.hypervisors
    assert local.local and local.data_dir == os.path.join(str(tmp_path), "store")  # relative to the file, as the plugin
    assert (hv1.name, hv1.host, hv1.port, hv1.user, hv1.known_hosts_file) == (
        "hv1", "192.0.2.10", 22, "vmctl", os.path.expanduser("~/.ssh/known_hosts"))
    assert (inventory.timeout, inventory.strict, inventory.names) == (7, False, "localhost, hv1")
    assert [h.name for h in read_inventory(write(tmp_path / "x.vmctl.yml", {"plugin": "vms"})).hypervisors] == ["localhost"]


@pytest.mark.parametrize("config, message", [
    ({"plugin": "vmctl.core.vms", "hypervisors": [{"name": "../../etc", "host": "h"}]}, "is not an inventory hostname"),
    ({"plugin": "vmctl.core.vms", "hypervisors": [42]}, "a hypervisor is a name or a mapping"),
    ({"plugin": "vmctl.core.vms", "hypervisor_timeout": "soon"}, "hypervisor_timeout"),
    ({"plugin": "yaml"}, "is not a vms inventory"),
])
def test_a_bad_inventory_is_refused_saying_what(tmp_path, config, message):
    with pytest.raises(VmctlError, match=message):
        read_inventory(write(tmp_path / "bad.vmctl.yml", config))


def test_the_hypervisor_stanza_has_its_own_key_and_known_hosts():
    text = hypervisor_stanza(Hypervisor("hv1", host="hv1.example.net", port=2200, user="vmctl", private_key_file="/c/id",
                                        known_hosts_file="/c/known hosts"))
    assert text.startswith("Host hv1\n  HostName hv1.example.net\n  Port 2200\n  User vmctl\n  IdentityFile \"/c/id\"\n")
    assert '  UserKnownHostsFile "/c/known hosts"\n' in text and "  StrictHostKeyChecking yes\n" in text


@pytest.mark.parametrize("changes", [{"host": "-oProxyCommand=x"}, {"host": "h\n  ProxyCommand x"}, {"user": "-oX"},
                                     {"known_hosts_file": "/c/${HOME}"}, {"private_key_file": 'k"'}, {"port": 70000},
                                     {"name": "hv 1"}])
def test_a_hypervisor_value_that_could_inject_is_refused(changes):
    """Bad input: an option-like or multi-line host or user, an expanding or quoted path, a bad port or name."""
    settings = dict(name="hv1", host="192.0.2.10", user="vmctl", private_key_file="/c/id", known_hosts_file="/c/kh")
    settings.update(changes)
    with pytest.raises(VmctlError):
        hypervisor_stanza(Hypervisor(**settings))


def test_a_hypervisor_named_like_a_vm_is_refused():
    """Bad input: hypervisor and VM both called web: their Host stanzas would clash."""
    from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
    hv = Hypervisor("web", host="192.0.2.10", user="vmctl", private_key_file="/c/id", known_hosts_file="/c/kh")
    vm = Located(hv, {"name": "web", "handle": VmHandle(id="x", name="web", ssh_user="vm"), "host": "127.0.0.1",
                      "port": 2222, "state": "running"})
    with pytest.raises(InvalidSpec, match="hypervisor web has the name of a VM"):
        _remote_config([vm], {"web": {"private_key": "/d/id", "known_hosts": "/d/kh"}})
