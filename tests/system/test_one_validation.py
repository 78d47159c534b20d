"""Issue 10 item 6 and issue 11 items 9/10: one validation for every front-end.

Each bad value goes through the VMFile (the engine's reader), the ``vm`` / ``vm_state`` modules (real
``ansible``) and the real ``vmctl`` executable; each gets the same message and hint (the VMFile's), and
nothing is created. ``vmctl ssh --user=-oProxyCommand=…`` gets the user error and runs nothing.
"""

import os
import types

import pytest
from support.ansible_run import module
from support.disk_images import make_qcow2
from test_cli import vmctl

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("img") / "base.qcow2")
    make_qcow2(path)
    return path


def _bad_key(tmp_path):
    path = tmp_path / "not-a-key.pub"
    path.write_text("this is just text, not a key\n")
    return str(path)


# (label, VMFile body line, vm module options, vmctl create options)
CASES = [
    ("vcpus 0", "vcpus 0", {"vcpus": 0}, ["--vcpus", "0"]),
    ("memory 0", "memory 0", {"memory": 0}, ["--memory", "0"]),
    ("bridge of 21 characters", 'network "tap" { bridge "br-abcdefghijklmnop"; }',
     {"network": {"type": "tap", "bridge": "br-abcdefghijklmnop"}}, ["--bridge", "br-abcdefghijklmnop"]),
    ("ssh-key that is text", 'cloud-init { ssh-key "KEY"; }', {"cloud_init": {"ssh_key": "KEY"}}, ["--ssh-key", "KEY"]),
    ("hostname with a newline", 'cloud-init { hostname "web\\n"; }', {"cloud_init": {"hostname": "web\n"}}, None),
    ("user that is an ssh option", 'cloud-init { }\n  ssh { user "-oProxyCommand=x"; }',
     {"cloud_init": {}, "ssh": {"user": "-oProxyCommand=x"}}, ["--user=-oProxyCommand=x"]),
]


def _vmfile_problem(tmp_path, image, line, name="v1"):
    text = 'vm "%s" {\n  image "%s"\n  %s\n}\n' % (name, image, line)
    with pytest.raises(vmfile.VmfileError) as exc:
        vmfile.parse_text(text, str(tmp_path / "VMFile.kdl"))
    assert len(exc.value.problems) == 1, exc.value.message
    return exc.value.problems[0]


@pytest.mark.slow
@pytest.mark.parametrize("label,line,options,cli", CASES, ids=[c[0] for c in CASES])
def test_each_front_end_gives_the_vmfiles_error(tmp_path, image, label, line, options, cli):
    """Bad value → the VMFile's message (prefixed by the VM's name elsewhere) and the same hint, everywhere."""
    key = _bad_key(tmp_path)
    line = line.replace("KEY", key)
    options = {k: ({kk: (key if vv == "KEY" else vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
               for k, v in options.items()}
    problem = _vmfile_problem(tmp_path, image, line)

    result = module("vm", dict(name="v1", image=image, backend="noop", **options))
    assert result["failed"], result
    assert problem.message in result["msg"] and result["msg"].startswith("VM v1: "), (problem.message, result["msg"])
    assert result["error"]["hint"] == problem.hint

    if cli is not None:
        proc = vmctl("create", "--name", "v1", "--image", image, *[key if a == "KEY" else a for a in cli])
        assert proc.returncode != 0
        assert "error: VM v1: %s\nhint: %s\n" % (problem.message, problem.hint) in proc.stderr, proc.stderr
    assert vmctl("list").stdout.count("\n") == 1  # header only: nothing was created
    assert not os.path.exists(os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "vms", "v1"))


@pytest.mark.slow
def test_a_name_with_a_trailing_newline_is_refused_everywhere(tmp_path, image):
    """``abc\\n`` (the regex ended in ``$``) → "invalid VM name" with the same hint; no ``vms/abc\\n``."""
    problem = _vmfile_problem(tmp_path, image, "vcpus 1", name="abc\\n")
    assert problem.message == "invalid VM name 'abc\\n'"
    for name, args in (("vm", {"name": "abc\n", "image": image, "backend": "noop"}), ("vm_state", {"name": "abc\n", "state": "running"})):
        result = module(name, args)
        assert result["failed"] and result["msg"].startswith(problem.message) and result["error"]["hint"] == problem.hint, result
    proc = vmctl("create", "--name", "abc\n", "--image", image)
    assert proc.returncode != 0 and "error: %s\nhint: %s\n" % (problem.message, problem.hint) in proc.stderr, proc.stderr
    vms = os.path.join(os.environ["XDG_DATA_HOME"], "vmctl", "vms")
    assert not os.path.isdir(vms) or os.listdir(vms) == []


def test_ssh_user_cannot_become_an_ssh_option(tmp_path, image):
    """``vmctl ssh --user=-oProxyCommand=touch DECOY`` → "invalid SSH user name", and the decoy never appears."""
    assert vmctl("create", "--name", "sshvm", "--image", image).returncode == 0
    decoy = tmp_path / "proxycommand-ran"
    proc = vmctl("ssh", "sshvm", "--user=-oProxyCommand=touch %s" % decoy)
    assert proc.returncode != 0
    assert "invalid SSH user name" in proc.stderr and "not starting with '-'" in proc.stderr, proc.stderr
    assert not decoy.exists()


def test_ssh_argv_puts_the_destination_after_double_dash(monkeypatch, tmp_path):
    """Whatever the host or user, ssh sees ``-l USER -- HOST``: neither can be read as an option."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.cli import main as cli, ssh as ssh_cli
    seen = {}
    monkeypatch.setattr(os, "execv", lambda path, argv: seen.setdefault("argv", argv))

    (tmp_path / "k").write_text("")
    (tmp_path / "kh").write_text("")

    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
    target = SshTarget("x", "-oProxyCommand=x", 10022, "vm", str(tmp_path / "k"), str(tmp_path / "kh"))
    monkeypatch.setattr(SshTarget, "check", lambda self: None)

    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    monkeypatch.setattr(ssh, "require_running", lambda handle: None)
    monkeypatch.setattr(ssh, "target_for", lambda *args, **kwargs: target)

    class FakeManager:
        def get(self, name):
            return types.SimpleNamespace(private_key_path=str(tmp_path / "k"), name=name)

    monkeypatch.setattr(ssh_cli, "vm_manager", FakeManager)
    monkeypatch.setattr(ssh_cli, "_host_key_checking", lambda target: "yes")
    assert cli.main(["ssh", "x", "--wait", "0", "--", "uname", "-a"]) is not None
    argv = seen["argv"]
    assert argv[argv.index("--") - 2:argv.index("--")] == ["-l", "vm"]
    assert argv[argv.index("--") + 1:] == ["-oProxyCommand=x", "uname", "-a"]
