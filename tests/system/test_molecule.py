"""Molecule 26 with vmctl.core's molecule_create and molecule_destroy playbooks: the real `molecule test` of the
example role tests/molecule/hello_web (destroy, syntax, create, converge, idempotence, verify, destroy) in a real
Debian guest, its image_url served by the tests' nginx. One guest boot.

The bad inputs need no guest: a platform without an image, and a platform whose name is a VM that something
else made (a prepared VM, never started), which Molecule must neither take over nor destroy.

Each run has its own HOME (Molecule's ephemeral directory, ansible-compat's cache and its link to the role live
there) and a copy of the role, so a test's molecule.yml can be changed and nothing is written in the checkout.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from support.vm_ssh_helpers import new_control_dir, remove_control_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, "tests", "molecule", "hello_web")
MOLECULE = os.path.join(os.path.dirname(sys.executable), "molecule")
SEQUENCE = ["destroy", "syntax", "create", "converge", "idempotence", "verify", "destroy"]

pytestmark = [pytest.mark.slow]


class Scenario:
    """A copy of the example role with its default scenario, and the environment molecule runs in."""

    def __init__(self, tmp_path, image_url):
        self.role = tmp_path / "hello_web"
        shutil.copytree(ROLE, self.role)
        self.molecule_yml = self.role / "molecule" / "default" / "molecule.yml"
        self.control = new_control_dir()
        home = tmp_path / "home"
        home.mkdir()
        self.env = dict(os.environ, HOME=str(home), NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        ANSIBLE_VMCTL_CONTROL_PATH_DIR=self.control, MOLECULE_VMCTL_IMAGE_URL=image_url)

    def edit(self, change):
        """Rewrite molecule.yml through ``change(data)``."""
        data = yaml.safe_load(self.molecule_yml.read_text())
        change(data)
        self.molecule_yml.write_text(yaml.safe_dump(data))

    def run(self, *args, timeout=1700):
        proc = subprocess.run([MOLECULE] + list(args), cwd=str(self.role), capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    def close(self):
        remove_control_dir(self.control)


@pytest.fixture
def scenario(tmp_path, test_images, http_files):
    # a link, not a copy of the 280 MB image: nginx follows it
    os.symlink(test_images["debian"]["path"], http_files.path("debian-12.qcow2"))
    s = Scenario(tmp_path, http_files.url("debian-12.qcow2"))
    yield s
    s.close()


def vms():
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    return sorted(VmManager().list())


@pytest.mark.guest
@pytest.mark.timeout(1800)  # about 3 min on an idle machine (one TCG boot, converge twice, verify); far more when loaded
def test_molecule_test(scenario, vmctl_data_home):
    """`molecule test` in a real VM passes every step; converge and verify went through vm_ssh's session (which checks the
    host key vmctl pinned); afterwards no VM, no work directory and no session daemon is left."""
    # the readiness wait's limits (platform ssh: boot_timeout, stall_timeout) raised for a machine loaded by
    # other guests; on an idle one the VM answers in about a minute
    scenario.edit(lambda data: data["platforms"][0].update(ssh={"boot_timeout": 1500, "stall_timeout": 600}))
    rc, out = scenario.run("test")
    assert rc == 0, out
    steps = re.findall(r"\[default > (\w+)\] Executed: (\w+)", out)
    assert steps == [(step, "Successful") for step in SEQUENCE], (steps, out)
    assert "Molecule executed 1 scenario (1 successful)" in out, out
    assert re.search(r"ok=4 +changed=0 ", out), out  # the idempotence run changed nothing
    assert "Fetch the page" in out and "All assertions passed" in out, out
    # every task on the instance went through vm_ssh: one session daemon, one login to the VM (its host key matched
    # the pin) for converge, idempotence and verify, and the session ended when destroy took the VM away
    logs = [open(os.path.join(scenario.control, f)).read() for f in os.listdir(scenario.control) if f.endswith(".log")]
    assert len(logs) == 1, logs
    opened = re.findall(r"VM molecule-hello: SSH session at 127\.0\.0\.1:\d+ as vm open", logs[0])
    assert len(opened) == 1, logs[0]
    assert "VM molecule-hello: session closed" in logs[0], logs[0]
    assert vms() == []
    assert not os.path.exists(vmctl_data_home / "vms" / "molecule-hello")


@pytest.mark.parametrize("change", [lambda platform: platform.pop("image_url"),
                                    lambda platform: platform.update(image="disk.qcow2")], ids=["neither", "both"])
def test_a_platform_needs_one_image(scenario, change):
    """Bad input: a platform with neither image nor image_url, or with both. It gets: create fails before
    anything is made, naming the platform and the two keys, and no VM exists."""
    scenario.edit(lambda data: change(data["platforms"][0]))
    rc, out = scenario.run("create")
    assert rc != 0, out
    assert "molecule.yml platform molecule-hello: give image (a local disk image) or image_url" in out, out
    assert vms() == []


def test_an_unknown_platform_key_is_refused(scenario):
    """Bad input: a misspelt platform key (memroy). It gets: create fails naming the key and the keys a
    platform has, and no VM exists."""
    scenario.edit(lambda data: data["platforms"][0].update(memroy=512))
    rc, out = scenario.run("create")
    assert rc != 0, out
    assert "molecule.yml platform molecule-hello: unknown key(s) memroy; a platform has name, image" in out, out
    assert vms() == []


@pytest.mark.parametrize("maker", ["vmctl create", "another scenario"])
def test_a_vm_the_scenario_did_not_make_is_neither_destroyed_nor_taken_over(scenario, test_images, tmp_path, maker):
    """Bad input: a platform named like a VM made without this scenario (prepared with the engine, never started):
    by vmctl create (no VMFile), or by another scenario. It gets: destroy and create both fail naming the VM,
    where it came from and this scenario's molecule.yml, with the hint to rename the platform; the VM and its
    disk are still there."""
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec
    other = str(tmp_path / "other_role" / "molecule" / "default" / "molecule.yml") if maker == "another scenario" else None
    handle = VmManager().create(VmSpec(name="molecule-hello", image_path=test_images["debian"]["path"], vnc=False,
                                       vmfile=other))[0]
    made = "made from %s" % other if other else "made without a VMFile (vmctl create, the vm module)"
    for command in ("destroy", "create"):
        rc, out = scenario.run(command)
        assert rc != 0, (command, out)
        assert "VM molecule-hello already exists, %s, not by the Molecule scenario %s" % (
            made, os.path.realpath(scenario.molecule_yml)) in out, out
        assert "rename the platform in molecule.yml" in out, out
    assert vms() == ["molecule-hello"]
    assert os.path.exists(os.path.join(handle.work_dir, "overlay.qcow2"))
