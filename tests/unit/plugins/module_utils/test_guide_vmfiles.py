"""Every VMFile of the vmctl user guide (tests/unit/plugins/module_utils/guide_vmfiles/, copied verbatim) parses as the guide says.

The local files they name are made in a temporary project (and $HOME, for ``~/...``): keys are real key
pairs, images and scripts are placeholder files. The guide's two skeletons (``vm "name" { // ... }``)
are not meant to run: they get exactly the problem the guide's validation rules promise.
"""

import glob
import os
import re

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.guest import keys
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile

HERE = os.path.join(os.path.dirname(__file__), "guide_vmfiles")
FILES = sorted(glob.glob(os.path.join(HERE, "*.kdl")))
PATH_NODE = re.compile(r'^\s*(image|ssh-key|private-key|user-data|script|source)\s+"([^"]+)"', re.M)


def make_files(text, project, home):
    for node, value in PATH_NODE.findall(text):
        path = os.path.expanduser(value) if value.startswith("~") else os.path.join(project, value)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if node == "private-key":
            keys.write_keypair(keys.generate_ed25519("guide"), path)
        elif node == "ssh-key" and not os.path.exists(path):
            keys.write_keypair(keys.generate_ed25519("guide"), path[:-len(".pub")] if path.endswith(".pub") else path + ".key")
        elif node == "user-data":
            with open(path, "w") as f:
                f.write("#cloud-config\nusers:\n  - name: deploy\n")
        elif not os.path.exists(path):
            with open(path, "w") as f:
                f.write("placeholder\n")


def test_the_guide_has_its_examples_here():
    names = [os.path.basename(p) for p in FILES]
    assert len(names) == 13 and "line1272-full-example+tap-example+minimal.kdl" in names


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(p)[:-4] for p in FILES])
def test_guide_vmfile(path, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    project = tmp_path / "project"
    project.mkdir()
    with open(path) as f:
        text = f.read()
    make_files(text, str(project), str(home))
    target = project / "VMFile.kdl"
    target.write_text(text)
    names = re.findall(r'^vm "([^"]+)"', text, re.M)
    if names == ["name"]:  # a skeleton: comments where the settings go
        with pytest.raises(vmfile.VmfileError) as caught:
            vmfile.load(str(target))
        assert [p["message"] for p in caught.value.details["problems"]] == ['vm "name" has no image source']
        return
    records = vmfile.load(str(target))
    assert [r["name"] for r in records] == names
    for record in records:
        assert bool(record["image"]) != bool(record["image_url"])
        assert record["provision_digest"].startswith("sha256:")
        if record["ssh"] is not None:
            assert record["ssh"]["user"] and (record["cloud_init"] is not None or record["ssh"]["private_key"])
