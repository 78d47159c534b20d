"""Ansible conventions the collection follows: one action group with every module, the standard
attributes documented on each, and module_defaults through that group."""

import json
import os
import subprocess

import yaml

from support.ansible_run import _env, playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))


def test_action_group_holds_every_module_and_each_says_so():
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as f:
        assert sorted(yaml.safe_load(f)["action_groups"]["vm"]) == MODULES
    proc = subprocess.run(["ansible-doc", "-j"] + ["vmctl.core." + m for m in MODULES], capture_output=True,
                          text=True, env=_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    for name, entry in json.loads(proc.stdout).items():
        attributes = entry["doc"]["attributes"]
        assert attributes["action_group"]["membership"] == ["vmctl.core.vm"], name
        assert attributes["platform"]["platforms"] == "posix", name
        for attribute in ("check_mode", "diff_mode", "platform", "action_group"):
            assert attributes[attribute]["support"] in ("full", "partial", "none", "N/A"), (name, attribute)
            assert attributes[attribute]["description"], (name, attribute)


def test_module_defaults_through_the_group(tmp_path):
    """module_defaults: group/vmctl.core.vm reaches the modules: vm_info without arguments asks for the
    VM the defaults name (absent here, so it fails naming it); without the group it lists every VM."""
    play = tmp_path / "defaults.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/vmctl.core.vm:
      name: ghost
  tasks:
    - name: Ask for the default VM
      vmctl.core.vm_info:
      register: info
      ignore_errors: true
    - name: The defaults reached vm_info
      ansible.builtin.assert:
        that:
          - info is failed
          - "'ghost' in info.msg"

- hosts: localhost
  gather_facts: false
  tasks:
    - name: Without the defaults
      vmctl.core.vm_info:
      register: all_vms
    - name: Every VM, none here
      ansible.builtin.assert:
        that: all_vms.vms == []
""")
    proc = playbook(play)  # implicit localhost: the venv's python
    assert proc.returncode == 0, proc.stdout + proc.stderr
