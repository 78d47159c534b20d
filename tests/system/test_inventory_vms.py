"""The vmctl.core.vms inventory through real ``ansible-inventory`` / ``ansible`` runs over a real store
(noop-backend entries: the inventory reads the store and asks the backend for the live state)."""

import json
import os
import subprocess

import pytest
from support.ansible_run import _env

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig, VmHandle


def put(name, **values):
    defaults = dict(id="id-" + name, name=name, backend="noop", state="running", work_dir="/srv/vms/" + name,
                    ssh_user="vm", private_key_path="/srv/vms/%s/id_ed25519_generated" % name,
                    known_hosts="/srv/vms/%s/known_hosts" % name, vcpus=2, memory_mb=1024)
    defaults.update(values)
    return VmStore().put(VmHandle(**defaults))


def inventory_cmd(*args, env=None):
    proc = subprocess.run(["ansible-inventory"] + list(args), capture_output=True, text=True, env=_env(env),
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def plain(value):
    """ansible-inventory --list writes untrusted (unsafe) strings as {"__ansible_unsafe": value}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def listing(source, env=None):
    return plain(json.loads(inventory_cmd("-i", str(source), "--list", env=env)))


def group_hosts(data, group):
    return sorted(data.get(group, {}).get("hosts", []))


@pytest.fixture
def store(vmctl_data_home, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    put("web", ssh_host_port=10022, mac_addr="52:54:00:00:00:01", vmfile=str(project / "VMFile.kdl"), hostname="web-1",
        memory_mb=2048, console_log="/srv/vms/web/console.log")
    put("db", state="stopped", ssh_host_port=10023, vmfile=str(project / "VMFile.kdl"))
    put("edge", network=NetworkConfig(type="tap", bridge="br0"), mac_addr="52:54:00:00:00:03", vcpus=4,
        vmfile=str(tmp_path / "other" / "VMFile.kdl"))
    # a QEMU VM on a bridge that has no DHCP lease yet
    put("lonely", backend="qemu", state="prepared", network=NetworkConfig(type="tap", bridge="br9"),
        mac_addr="52:54:00:9e:9e:9e", pidfile=str(tmp_path / "lonely.pid"))
    return project


def write_source(path, text):
    path.write_text(text)
    return path


def test_hosts_groups_and_hostvars(store, tmp_path):
    data = listing(write_source(tmp_path / "all.vmctl.yml", "plugin: vmctl.core.vms\n"))
    assert group_hosts(data, "vmctl_state_running") == ["edge", "web"]
    assert group_hosts(data, "vmctl_state_stopped") == ["db"]
    assert group_hosts(data, "vmctl_state_prepared") == ["lonely"]
    assert group_hosts(data, "vmctl_backend_noop") == ["db", "edge", "web"]
    assert group_hosts(data, "vmctl_backend_qemu") == ["lonely"]
    assert group_hosts(data, "vmctl_network_user") == ["db", "web"]
    assert group_hosts(data, "vmctl_network_tap") == ["edge", "lonely"]
    web = data["_meta"]["hostvars"]["web"]
    assert web["ansible_connection"] == "vmctl.core.vm_ssh" and web["ansible_python_interpreter"] == "auto_silent"
    assert (web["ansible_host"], web["ansible_port"], web["ansible_user"]) == ("127.0.0.1", 10022, "vm")
    own = paths.vm_dir("web")  # every file of a VM is derived from its name; the stored /srv/vms/... is ignored
    assert web["ansible_ssh_private_key_file"] == os.path.join(own, "id_ed25519_generated")
    assert web["ansible_vmctl_known_hosts_file"] == os.path.join(own, "known_hosts") and web["ansible_vmctl_vm_name"] == "web"
    assert not {"vmctl_known_hosts", "vmctl_vm_name"} & set(web)  # the old names: still read by vm_ssh, no longer emitted
    assert (web["vmctl_state"], web["vmctl_backend"], web["vmctl_vcpus"], web["vmctl_memory_mb"]) == ("running", "noop", 2, 2048)
    assert (web["vmctl_network"], web["vmctl_mac"], web["vmctl_work_dir"], web["vmctl_ssh_host_port"]) == \
        ("user", "52:54:00:00:00:01", own, 10022)
    edge = data["_meta"]["hostvars"]["edge"]
    assert edge["vmctl_network"] == "tap" and edge["vmctl_network_bridge"] == "br0" and edge["ansible_port"] == 22
    assert edge["ansible_host"] == "127.0.0.1"  # what the noop backend answers for the guest's address
    lonely = data["_meta"]["hostvars"]["lonely"]
    assert "ansible_host" not in lonely  # no lease for its MAC: the connection plugin looks it up when it connects
    assert lonely["vmctl_network_bridge"] == "br9" and lonely["vmctl_state"] == "prepared"


def test_graph(store, tmp_path):
    graph = inventory_cmd("-i", str(write_source(tmp_path / "g.vmctl.yaml", "plugin: vmctl.core.vms\n")), "--graph")
    assert "@vmctl_state_running:" in graph and "|--web" in graph and "@vmctl_state_stopped:" in graph


def test_filters_by_state_and_vmfile(store, tmp_path):
    running = listing(write_source(tmp_path / "r.vmctl.yml", "plugin: vmctl.core.vms\nstates: [running]\n"))
    assert sorted(running["_meta"]["hostvars"]) == ["edge", "web"]
    several = listing(write_source(tmp_path / "r2.vmctl.yml", "plugin: vmctl.core.vms\nstates: [stopped, prepared]\n"))
    assert sorted(several["_meta"]["hostvars"]) == ["db", "lonely"]
    # vmfile is relative to the inventory file's directory
    project = listing(write_source(store / "p.vmctl.yml", "plugin: vmctl.core.vms\nvmfile: VMFile.kdl\n"))
    assert sorted(project["_meta"]["hostvars"]) == ["db", "web"]
    both = listing(write_source(store / "pr.vmctl.yml", "plugin: vmctl.core.vms\nvmfile: ./VMFile.kdl\nstates: [running]\n"))
    assert sorted(both["_meta"]["hostvars"]) == ["web"]


def test_live_state_comes_from_the_backend(store, tmp_path, vmctl_data_home):
    # a qemu VM whose process is gone reads as stopped, whatever the store recorded
    put("crashed", backend="qemu", state="running", pidfile=str(tmp_path / "nope.pid"))
    source = write_source(tmp_path / "s.vmctl.yml", "plugin: vmctl.core.vms\n")
    assert "crashed" in group_hosts(listing(source), "vmctl_state_stopped")
    recorded = write_source(tmp_path / "rec.vmctl.yml", "plugin: vmctl.core.vms\nlive_state: false\n")
    assert "crashed" in group_hosts(listing(recorded), "vmctl_state_running")


def test_data_dir_option(store, tmp_path, vmctl_data_home):
    elsewhere = tmp_path / "elsewhere"
    source = write_source(tmp_path / "d.vmctl.yml", "plugin: vmctl.core.vms\ndata_dir: %s\n" % elsewhere)
    assert listing(source)["_meta"]["hostvars"] == {}
    # relative to the inventory file's directory
    source = write_source(tmp_path / "d2.vmctl.yml", "plugin: vmctl.core.vms\ndata_dir: %s\n" % os.path.relpath(vmctl_data_home, tmp_path))
    web = listing(source)["_meta"]["hostvars"]["web"]
    assert web["ansible_vmctl_data_dir"] == str(vmctl_data_home)


def test_constructed_compose_groups_keyed_groups(store, tmp_path):
    source = write_source(tmp_path / "c.vmctl.yml", """plugin: vmctl.core.vms
compose:
  memory_gb: vmctl_memory_mb // 1024
groups:
  big: vmctl_vcpus >= 4
keyed_groups:
  - key: vmctl_memory_mb | string
    prefix: mem
""")
    data = listing(source)
    assert data["_meta"]["hostvars"]["web"]["memory_gb"] == 2
    assert group_hosts(data, "big") == ["edge"]
    assert group_hosts(data, "mem_2048") == ["web"] and group_hosts(data, "mem_1024") == ["db", "edge", "lonely"]


def test_strict_reports_bad_expressions(store, tmp_path):
    source = write_source(tmp_path / "st.vmctl.yml", "plugin: vmctl.core.vms\nstrict: true\ncompose:\n  x: no_such_var + 1\n")
    proc = subprocess.run(["ansible-inventory", "-i", str(source), "--list"], capture_output=True, text=True,
                          env=_env({"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}), timeout=120, check=False)
    assert proc.returncode != 0 and "no_such_var" in proc.stderr


def test_other_file_names_are_not_ours(store, tmp_path):
    source = write_source(tmp_path / "plain.yml", "plugin: vmctl.core.vms\n")
    proc = subprocess.run(["ansible-inventory", "-i", str(source), "--list"], capture_output=True, text=True,
                          env=_env({"ANSIBLE_INVENTORY_ENABLED": "vmctl.core.vms", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}),
                          timeout=120, check=False)
    assert proc.returncode != 0


def test_store_values_are_never_templated(vmctl_data_home, tmp_path):
    """A template in a free-form store value (the VMFile path) is shown as text, never run; a template as a
    hostname or user is not even a valid record (checked on load): nothing of it is templated either."""
    put("evil", vmfile="/tmp/{{ 7*7 }}/{{ lookup('pipe', 'id') }}.kdl", ssh_host_port=10030)
    put("bad", hostname="{{ 7*7 }}", ssh_user="{{ lookup('pipe', 'id') }}", ssh_host_port=10031)
    source = write_source(tmp_path / "e.vmctl.yml", "plugin: vmctl.core.vms\ncompose:\n  shown: vmctl_vmfile\n")
    proc = subprocess.run(["ansible", "all", "-i", str(source), "-c", "local", "-m", "ansible.builtin.debug",
                           "-a", "msg=[{{ vmctl_vmfile }}][{{ shown }}]"],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = "/tmp/{{ 7*7 }}/{{ lookup('pipe', 'id') }}.kdl"
    assert "[%s][%s]" % (shown, shown) in proc.stdout, proc.stdout + proc.stderr
    assert "uid=" not in proc.stdout + proc.stderr and "/49/" not in proc.stdout and "[49]" not in proc.stdout


def test_cache(store, tmp_path, vmctl_data_home):
    cache_dir = tmp_path / "cache"
    source = write_source(tmp_path / "cached.vmctl.yml", """plugin: vmctl.core.vms
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: %s
cache_timeout: 3600
""" % cache_dir)
    assert "web" in listing(source)["_meta"]["hostvars"]
    assert os.listdir(cache_dir)
    VmStore().remove("web")
    assert "web" in listing(source)["_meta"]["hostvars"]  # from the cache
    fresh = plain(json.loads(inventory_cmd("-i", str(source), "--list", "--flush-cache")))
    assert "web" not in fresh["_meta"]["hostvars"]
