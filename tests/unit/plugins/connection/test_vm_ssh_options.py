"""vm_ssh's options answer to the names Ansible users already set (ANSIBLE_TIMEOUT, ansible_timeout,
ANSIBLE_PIPELINING, ansible_pipelining), and its host variables carry the plugin's prefix
(ansible_vmctl_*) while the old vmctl_* names still work. Options are read through ansible-core's own
plugin loader and config manager, as a play reads them; no connection is opened."""

import json
import subprocess
import sys

import pytest

# Run in a child: init_plugin_loader() installs ansible's collection finder, which this pytest process must not get.
RESOLVE = """
import json, os, sys
from ansible.plugins.loader import init_plugin_loader, connection_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
out = []
for env, host_vars, options in json.load(sys.stdin):
    saved = dict(os.environ)
    os.environ.update(env)
    conn = connection_loader.get("vmctl.core.vm_ssh", PlayContext(), None)
    conn.set_options(var_options=host_vars)
    out.append([conn.get_option(o) for o in options])
    os.environ.clear()
    os.environ.update(saved)
json.dump(out, sys.stdout)
"""


def resolve(*cases):
    """[(env, host_vars, [option, ...]), ...] -> the options' values, for each case."""
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("ANSIBLE_TIMEOUT", "ANSIBLE_SSH_", "ANSIBLE_VMCTL_", "ANSIBLE_PIPELINING", "ANSIBLE_CONFIG"))}
    proc = subprocess.run([sys.executable, "-c", RESOLVE], input=json.dumps(cases), capture_output=True, text=True,
                          env=env, cwd="/", check=False)  # cwd /: no ansible.cfg of the checkout
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def connection(env=None, **host_vars):
    """A stand-in with get_option for one case (each call is one child)."""
    class Options:
        def get_option(self, name):
            return resolve((env or {}, host_vars, [name]))[0][0]
    return Options()


def test_defaults():
    conn = connection()
    assert (conn.get_option("timeout"), conn.get_option("pipelining")) == (10, True)


@pytest.mark.parametrize("env, host_vars, expected", [
    ({"ANSIBLE_TIMEOUT": "7"}, {}, 7),
    ({}, {"ansible_timeout": 8}, 8),
    ({}, {"ansible_ssh_timeout": 9}, 9),
    ({"ANSIBLE_TIMEOUT": "7", "ANSIBLE_VMCTL_TIMEOUT": "11"}, {}, 11),  # the plugin's own name wins
    ({"ANSIBLE_TIMEOUT": "7"}, {"ansible_timeout": 8}, 8),  # a host variable beats the environment
])
def test_timeout_names(env, host_vars, expected):
    assert connection(env, **host_vars).get_option("timeout") == expected


@pytest.mark.parametrize("env, host_vars", [
    ({"ANSIBLE_PIPELINING": "false"}, {}),
    ({}, {"ansible_pipelining": False}),
    ({}, {"ansible_vmctl_pipelining": False}),
])
def test_pipelining_names(env, host_vars):
    assert connection(env, **host_vars).get_option("pipelining") is False


@pytest.mark.parametrize("option, old, new", [
    ("vmctl_vm_name", "vmctl_vm_name", "ansible_vmctl_vm_name"),
    ("data_dir", "vmctl_data_dir", "ansible_vmctl_data_dir"),
    ("known_hosts_file", "vmctl_known_hosts", "ansible_vmctl_known_hosts_file"),
])
def test_prefixed_host_vars_and_old_aliases(option, old, new):
    assert connection(**{new: "/srv/new"}).get_option(option) == "/srv/new"
    assert connection(**{old: "/srv/old"}).get_option(option) == "/srv/old"
    assert connection(**{old: "/srv/old", new: "/srv/new"}).get_option(option) == "/srv/new"  # the new name wins
