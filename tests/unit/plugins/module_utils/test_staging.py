"""Staging a VM's controller files on its hypervisor (vmfile/staging.py, the vmctl.core.staged filter), and their
removal with the VM (paths.remove_staged_dir, VmManager.destroy, reconcile.ensure_absent).

Bad inputs and what they get: a relative or missing data directory and an invalid VM name are refused (InvalidSpec,
InvalidName; the filter turns them into an AnsibleFilterError with the hint); a record that is not a dict is refused; a
staged folder that is a symlink is refused and left alone, with what it points at untouched."""

import os
import textwrap

import pytest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible.errors import AnsibleFilterError

from ansible_collections.vmctl.core.plugins.filter.staged import FilterModule
from ansible_collections.vmctl.core.plugins.module_utils import paths, reconcile
from ansible_collections.vmctl.core.plugins.module_utils.backends.noop import NoopBackend
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidName, InvalidSpec, UnsafePath
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader, staging

DATA = "/srv/hv/.local/share/vmctl"


def key_pair(folder, name):
    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / name
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    (folder / (name + ".pub")).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" me@controller\n")
    return private


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "proj"
    for rel in ("disk.qcow2", "boot/vmlinuz", "boot/initrd.img", "cloud.yaml", "setup.sh", "payload.txt",
                "other/disk.qcow2"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(rel)
    (proj / "src").mkdir()
    key_pair(proj, "id_vm")
    return proj


def load(project, text):
    path = project / "VMFile.kdl"
    path.write_text(textwrap.dedent(text))
    return {vm["name"]: vm for vm in reader.load(str(path))}


def test_each_controller_file_of_a_vmfile_record_is_staged_and_nothing_else(project):
    """The image, kernel, initrd, user-data and private-key of a VMFile record are listed in that order, each in a
    folder of its own under <data_dir>/staged/<vm>/ with its own name, mode 0600; the returned record names the copies.
    For a VM that exists, only the image's copy is kept as it is (force false).
    The share (a hypervisor folder), the provision script and file (read on the controller), the VMFile's own path
    and the input record are left as they were."""
    vms = load(project, '''
        vm "web" {
            image "disk.qcow2"
            kernel "boot/vmlinuz" { initrd "boot/initrd.img"; append "console=ttyS0" }
            share "src" guest="/mnt/src"
            cloud-init { user-data "cloud.yaml" }
            ssh { private-key "id_vm" }
            provision "shell" { script "setup.sh" }
            provision "file" { source "payload.txt"; destination "/tmp/p" }
        }
    ''')
    record = vms["web"]
    before = repr(record)
    plan = staging.staged(record, DATA)
    folder = DATA + "/staged/web"
    assert plan["folder"] == folder
    assert all(f["force"] for f in plan["files"])  # a VM to make: every copy is brought up to date
    assert {f["folder_mode"] for f in plan["files"]} == {"0700"}  # the folders that hold the copies
    assert [(f["node"], f["src"], f["folder"], f["path"], f["mode"]) for f in plan["files"]] == [
        ("image", str(project / "disk.qcow2"), folder + "/image", folder + "/image/disk.qcow2", "0600"),
        ("kernel", str(project / "boot/vmlinuz"), folder + "/kernel", folder + "/kernel/vmlinuz", "0600"),
        ("initrd", str(project / "boot/initrd.img"), folder + "/initrd", folder + "/initrd/initrd.img", "0600"),
        ("user-data", str(project / "cloud.yaml"), folder + "/user-data", folder + "/user-data/cloud.yaml", "0600"),
        ("private-key", str(project / "id_vm"), folder + "/private-key", folder + "/private-key/id_vm", "0600"),
    ]
    out = plan["record"]
    assert (out["image"], out["kernel"], out["initrd"]) == (
        folder + "/image/disk.qcow2", folder + "/kernel/vmlinuz", folder + "/initrd/initrd.img")
    assert out["cloud_init"]["user_data"] == folder + "/user-data/cloud.yaml"
    assert out["ssh"]["private_key"] == folder + "/private-key/id_vm"
    assert out["shares"] == record["shares"] and out["shares"][0]["source"] == str(project / "src")
    assert out["provisions"] == record["provisions"] and out["vmfile"] == record["vmfile"]
    assert out["kernel_append"] == "console=ttyS0"
    assert repr(record) == before  # the input is not changed
    # a VM that exists: its disk is an overlay on the staged image, which is never replaced; the rest still is
    made = staging.staged(record, DATA, made=True)
    assert [f["node"] for f in made["files"] if not f["force"]] == ["image"] and made["record"] == out
    # the rest of the record is untouched: only the staged fields differ
    changed = {key for key in record if record[key] != out[key]}
    assert changed == {"image", "kernel", "initrd", "cloud_init", "ssh"}


def test_the_ssh_key_is_staged_and_two_files_of_one_name_never_meet(project):
    """ssh-key (with its private-key pair) is staged; an image and a private key both named disk.qcow2 land in their own
    folders."""
    key_pair(project / "other", "key")
    vms = load(project, '''
        vm "k" {
            image "other/disk.qcow2"
            cloud-init { ssh-key "other/key.pub" }
            ssh { private-key "other/key" }
        }
    ''')
    plan = staging.staged(vms["k"], DATA)
    assert [f["node"] for f in plan["files"]] == ["image", "ssh-key", "private-key"]
    assert plan["record"]["cloud_init"]["ssh_key"] == DATA + "/staged/k/ssh-key/key.pub"
    record = dict(vms["k"], kernel=str(project / "disk.qcow2"))  # a kernel of the image's name, from another folder
    paths_ = [f["path"] for f in staging.staged(record, DATA)["files"]]
    assert len(set(paths_)) == len(paths_) == 4


def test_a_record_naming_no_controller_file_gets_no_files_and_itself(project):
    """An image-url VM with a generated key: nothing to stage (the image is downloaded on the hypervisor), and the
    record comes back equal. The vm module's shapes (cloud_init false, ssh true, empty fields) name no file either."""
    vms = load(project, 'vm "u" { image-url "https://example.org/u.qcow2"; cloud-init { }; ssh { }; share "src" guest="/s" }')
    plan = staging.staged(vms["u"], DATA)
    assert plan["files"] == [] and plan["record"] == vms["u"] and plan["folder"] == DATA + "/staged/u"
    assert staging.local_files({"name": "m", "image": "", "cloud_init": False, "ssh": True, "kernel": None}) == []


def test_bad_inputs_are_refused_with_what_was_given():
    """A relative data dir, none, a bad VM name, a record that is not a dict: errors naming what was given; the filter
    says the same as an AnsibleFilterError (with the hint)."""
    record = {"name": "web", "image": "/x/disk.qcow2"}
    with pytest.raises(InvalidSpec, match="absolute path, got 'relative/dir'"):
        staging.staged(record, "relative/dir")
    with pytest.raises(InvalidSpec, match="absolute path, got None"):
        staging.staged(record, None)
    with pytest.raises(InvalidName, match="invalid VM name '../web'"):
        staging.staged(dict(record, name="../web"), DATA)
    with pytest.raises(InvalidSpec, match="a VM record is a dict"):
        staging.local_files(["web"])
    staged = FilterModule().filters()["staged"]
    assert staged(record, DATA)["record"]["image"] == DATA + "/staged/web/image/disk.qcow2"
    assert staged(record, DATA, made=True)["files"][0]["force"] is False
    with pytest.raises(AnsibleFilterError, match=r"absolute path, got 'rel' \(Give the data_dir that vmctl.core.vm_info"):
        staged(record, "rel")


def noop_manager():
    return VmManager(backend_factory=lambda tag: NoopBackend())


def stage(data_dir, name):
    """A staged folder as the vm_up role's copy leaves it."""
    folder = paths.staged_dir_in(str(data_dir), name)
    os.makedirs(os.path.join(folder, "image"), mode=0o700)
    (open(os.path.join(folder, "image", "disk.qcow2"), "w")).close()
    return folder


def test_destroy_removes_the_staged_folder_and_recreate_keeps_it(vmctl_data_home, tmp_path):
    """state=absent of a made VM removes its staged folder with it; a VM recreated in place (recreate: true) keeps the
    files it is made from; another VM's staged folder is never touched."""
    manager = noop_manager()
    spec = VmSpec(name="web", image_path=str(tmp_path / "disk"), backend="noop")
    reconcile.ensure_present(manager, spec)
    web, other = stage(vmctl_data_home, "web"), stage(vmctl_data_home, "other")
    moved = VmSpec(name="web", image_path=str(tmp_path / "disk2"), backend="noop")
    assert reconcile.ensure_present(manager, moved, recreate=True).actions == ["destroy", "create"]
    assert os.path.isdir(web)
    check = reconcile.ensure_absent(manager, "web", check_mode=True)
    assert check.changed and os.path.isdir(web)  # check mode touches nothing
    gone = reconcile.ensure_absent(manager, "web")
    assert gone.changed and not os.path.exists(web) and os.path.isdir(other)
    assert not reconcile.ensure_absent(manager, "web").changed  # nothing left: no change


def test_staged_files_of_a_vm_never_made_are_removed_as_a_change(vmctl_data_home):
    """An up that failed after the copy leaves a staged folder and no VM: state=absent reports it (in check mode too)
    and removes it; the next one reports nothing."""
    manager = noop_manager()
    folder = stage(vmctl_data_home, "half")
    check = reconcile.ensure_absent(manager, "half", check_mode=True)
    assert check.changed and check.actions == ["remove staged files"] and os.path.isdir(folder)
    outcome = reconcile.ensure_absent(manager, "half")
    assert outcome.changed and not os.path.exists(folder)
    assert not reconcile.ensure_absent(manager, "half").changed


def test_a_staged_folder_that_is_a_symlink_is_refused_and_left_alone(vmctl_data_home, tmp_path):
    """Bad input: <data_dir>/staged/web is a symlink to a decoy folder. The removal is refused naming it; the decoy and
    its file stay."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("keep")
    staged = vmctl_data_home / "staged"
    staged.mkdir(parents=True)
    (staged / "web").symlink_to(decoy)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        paths.remove_staged_dir(str(vmctl_data_home), "web")
    assert (decoy / "keep").read_text() == "keep"
    with pytest.raises(UnsafePath, match="is not the staged directory of VM web"):
        paths._remove_own_dir(str(tmp_path / "web"), "staged", "web")
