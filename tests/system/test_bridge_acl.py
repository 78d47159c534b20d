"""qemu-bridge-helper's ACL, checked before a TAP VM starts: every ACL file below gets the verdict of
the engine (bridge_acl.check) and, as the oracle, of the real qemu-bridge-helper run in a private
mount and network namespace where a decoy /etc/qemu/bridge.conf is overlaid (the real /etc is never
written). A missing, broken or refusing ACL is an error naming the file and the line to add."""

import os
import shutil
import subprocess

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import net as bridge_acl
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
from ansible_collections.vmctl.core.plugins.module_utils.errors import BridgeNotAllowed
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import NetworkConfig, VmSpec

HELPER = "/usr/lib/qemu/qemu-bridge-helper"
BR = "vmctlacl0"  # no such bridge exists: the helper, once allowed, fails later at "failed to get mtu"

# (id, files: {name: text} (bridge.conf is the ACL; {d} is the decoy directory), verdict, message fragment, hint fragment)
# verdict: allowed | missing (no ACL file) | broken (the helper cannot parse it) | denied
CASES = [
    ("allow", {"bridge.conf": "allow %s\n" % BR}, "allowed", None, None),
    ("allow-tab", {"bridge.conf": "  allow\t%s\n" % BR}, "allowed", None, None),
    # A space anywhere ends the command before a tab does: "allow\tname " is the command "allow\tname".
    ("tab-then-space", {"bridge.conf": "allow\t%s \n" % BR}, "broken", "unknown command 'allow\\t", "Fix or remove"),
    ("allow-all", {"bridge.conf": "# all bridges\n\nallow all\n"}, "allowed", None, None),
    ("no-file", {}, "missing", "which does not exist", "allow %s" % BR),
    ("empty", {"bridge.conf": ""}, "denied", "no `allow %s`" % BR, "Add the line `allow %s`" % BR),
    ("other-bridge", {"bridge.conf": "allow br0\n"}, "denied", "is not allowed by", "allow %s" % BR),
    ("deny-wins-after", {"bridge.conf": "allow %s\ndeny %s\n" % (BR, BR)}, "denied", "`deny %s` at" % BR, "deny wins"),
    ("deny-wins-before", {"bridge.conf": "deny all\nallow %s\n" % BR}, "denied", "`deny all` at", "Remove that line"),
    ("deny-other", {"bridge.conf": "deny br0\nallow %s\n" % BR}, "allowed", None, None),
    ("trailing-comment", {"bridge.conf": "allow %s # lab\n" % BR}, "denied", "is not allowed", "on a line of its own"),
    ("unknown-command", {"bridge.conf": "allow %s\npermit br0\n" % BR}, "broken", "unknown command 'permit'", "Fix or remove"),
    ("no-argument", {"bridge.conf": "allow %s\nallow\n" % BR}, "broken", "without an argument", "Fix or remove"),
    ("name-too-long", {"bridge.conf": "allow abcdefghijklmnop\nallow %s\n" % BR}, "broken", "16 characters", "Fix or remove"),
    ("include", {"bridge.conf": "include {d}/more.conf\n", "more.conf": "allow %s\n" % BR}, "allowed", None, None),
    ("include-missing", {"bridge.conf": "include {d}/nope.conf\nallow %s\n" % BR}, "allowed", None, None),
    ("include-broken-keeps-rules-before",
     {"bridge.conf": "include {d}/more.conf\n", "more.conf": "allow %s\nnonsense here\ndeny %s\n" % (BR, BR)},
     "allowed", None, None),
    ("include-deny", {"bridge.conf": "allow all\ninclude {d}/more.conf\n", "more.conf": "deny %s\n" % BR},
     "denied", "more.conf:1", "deny wins"),
    # The helper recurses without end: it crashes (or, with few open files allowed, stops and decides).
    ("include-itself", {"bridge.conf": "allow %s\ninclude {d}/bridge.conf\n" % BR}, "broken", "included again", "Fix or remove"),
    ("include-cycle", {"bridge.conf": "include {d}/a.conf\nallow %s\n" % BR, "a.conf": "include {d}/bridge.conf\n"},
     "broken", "included again", "Fix or remove"),
    ("include-directory", {"bridge.conf": "include {d}\nallow %s\n" % BR}, "allowed", None, None),
]


def write_decoy(tmp_path, files):
    decoy = tmp_path / "qemu"
    decoy.mkdir()
    for name, text in files.items():
        (decoy / name).write_text(text.replace("{d}", str(decoy)))
    return decoy


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_engine_reads_the_acl_by_the_helpers_rules(tmp_path, case):
    """Each ACL gets its verdict; a refusal names the file (and line) and the line to add."""
    _id, files, verdict, message, hint = case
    acl = str(write_decoy(tmp_path, files) / "bridge.conf")
    if verdict == "allowed":
        bridge_acl.check(BR, "tapvm", acl)
        return
    with pytest.raises(BridgeNotAllowed) as err:
        bridge_acl.check(BR, "tapvm", acl)
    assert err.value.code == "vmctl.qemu.bridge_not_allowed"
    assert "VM tapvm" in err.value.message and message in err.value.message, err.value.message
    assert hint in err.value.hint, err.value.hint
    assert str(tmp_path) in err.value.message + err.value.hint  # the file is named


def helper_verdict(tmp_path, decoy):
    """What the real qemu-bridge-helper says with ``decoy`` as its /etc/qemu (private namespaces)."""
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    if decoy.exists() and any(decoy.iterdir()):
        shutil.copytree(decoy, upper / "qemu", symlinks=True)
    else:
        (upper / "qemu").mkdir()
    script = ('ulimit -n 20000 && mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc && '
              'exec %s --br=%s --fd=1' % (upper, work, HELPER, BR))
    result = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)
    err = result.stderr
    if result.returncode < 0 or result.returncode > 128:
        return "crashed"
    if "failed to get mtu of bridge" in err:
        return "allowed"
    if "access denied by acl file" in err:
        return "denied"
    if "failed to parse default acl file" in err:
        return "unparsable"
    pytest.fail("unexpected helper output: %r" % err)


def _can_run_helper():
    if os.geteuid() != 0 or not os.path.exists(HELPER) or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_run_helper(), reason="needs root, unshare and qemu-bridge-helper")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_real_helper_agrees(tmp_path, case):
    """The oracle: the helper's own verdict on the same files (a missing file and a broken one are both
    "failed to parse default acl file" to it)."""
    _id, files, verdict, _message, _hint = case
    decoy = write_decoy(tmp_path, files)
    expected = {"allowed": "allowed", "denied": "denied", "missing": "unparsable", "broken": "unparsable"}[verdict]
    if "included again" in (case[3] or ""):
        expected = "crashed"
    assert helper_verdict(tmp_path, decoy) == expected


def test_a_tap_vm_on_a_refused_bridge_is_not_created_nor_started(tmp_path, monkeypatch):
    """`create` of a TAP VM whose bridge the ACL (a decoy, through VMCTL_BRIDGE_CONF) does not allow fails before
    anything is made; allowed, it is created; refused again later, `start` fails before QEMU runs."""
    acl = tmp_path / "bridge.conf"
    monkeypatch.setenv(bridge_acl.ACL_FILE_ENV, str(acl))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    spec = VmSpec(name="tapacl", image_path=str(disk), memory_mb=64, network=NetworkConfig(type="tap", bridge=BR), vnc=False)
    manager = VmManager()
    with pytest.raises(BridgeNotAllowed) as err:
        manager.create(spec)
    assert str(acl) in err.value.message and "allow %s" % BR in err.value.hint
    assert manager.find("tapacl") is None
    acl.write_text("allow %s\n" % BR)
    handle, created = manager.create(spec)
    assert created and handle.network.bridge == BR
    try:
        acl.write_text("deny all\nallow %s\n" % BR)
        with pytest.raises(BridgeNotAllowed) as err:
            manager.start("tapacl")
        assert "`deny all` at %s:1" % acl in err.value.message
        assert QemuBackend().state(manager.get("tapacl")) == "prepared"
    finally:
        manager.destroy("tapacl")


def test_the_parameter_overrides_the_environment(tmp_path, monkeypatch):
    """QemuBackend(bridge_acl_file=...) is checked rather than $VMCTL_BRIDGE_CONF."""
    monkeypatch.setenv(bridge_acl.ACL_FILE_ENV, str(tmp_path / "absent.conf"))
    allowed = tmp_path / "ok.conf"
    allowed.write_text("allow all\n")
    QemuBackend(bridge_acl_file=str(allowed))._check_bridge("x", NetworkConfig(type="tap", bridge=BR))
    with pytest.raises(BridgeNotAllowed):
        QemuBackend()._check_bridge("x", NetworkConfig(type="tap", bridge=BR))
