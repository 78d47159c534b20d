"""The vmctl command's pure parts: arguments to ansible-playbook, errors to exit codes."""

import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import errors
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import common, main as cli, playbook
from ansible_collections.vmctl.core.plugins.module_utils.vmfile.reader import Problem, VmfileError


def parse(*argv):
    argv, after = cli._split_extra(list(argv))
    args = cli.build_parser().parse_args(argv)
    args.extra = after or []
    args.verbose = args.verbose or 0
    return args


@pytest.fixture
def project(tmp_path):
    (tmp_path / "disk.qcow2").write_text("")
    (tmp_path / "VMFile.kdl").write_text('vm "web" { image "disk.qcow2"; }\nvm "db" { image "disk.qcow2"; }\n')
    return tmp_path


def test_up_passes_the_options_as_extra_vars(project):
    argv = playbook.playbook_argv(parse("up", "--file", str(project / "VMFile.kdl"), "--name", "web", "--no-provision",
                                        "-vv", "--", "--forks", "10"))
    assert os.path.basename(argv[0]) == "ansible-playbook"
    assert argv[1:] == ["vmctl.core.up", "-e", "vmfile=%s" % (project / "VMFile.kdl"), "-e", "name=web",
                        "-e", "no_provision=true", "-vv", "--forks", "10"]


def test_down_destroy_finds_the_vmfile_in_the_current_directory(project, monkeypatch):
    monkeypatch.chdir(project)
    argv = playbook.playbook_argv(parse("down", "--destroy"))
    assert argv[1:] == ["vmctl.core.down", "-e", "vmfile=%s" % (project / "VMFile.kdl"), "-e", "destroy=true"]


def test_an_unknown_vm_of_the_vmfile_is_not_found(project):
    with pytest.raises(errors.VmctlError) as exc:
        playbook.playbook_argv(parse("provision", "--file", str(project / "VMFile.kdl"), "--name", "nope"))
    assert common.exit_code_of(exc.value) == common.EXIT_NOT_FOUND and "Defined there: web, db" in exc.value.hint


@pytest.mark.parametrize("error, code", [
    (errors.VmNotFound("x"), common.EXIT_NOT_FOUND),
    (errors.ImageNotFound("x"), common.EXIT_NOT_FOUND),
    (errors.InvalidName("x"), common.EXIT_USAGE),
    (VmfileError([Problem("VMFile.kdl", 1, 1, "x")]), common.EXIT_USAGE),
    (errors.InvalidState("x"), common.EXIT_STATE),
    (errors.VmExists("x"), common.EXIT_STATE),
    (errors.SshWaitTimeout("x"), common.EXIT_TIMEOUT),
    (errors.SpawnFailed("x"), common.EXIT_FAILED),
    (errors.DownloadFailed("x"), common.EXIT_FAILED),
    (errors.UsageError("x"), common.EXIT_USAGE),
])
def test_exit_codes(error, code):
    assert common.exit_code_of(error) == code


def test_main_prints_error_and_hint(capsys):
    assert cli.main(["status", "a/b"]) == common.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: invalid VM name 'a/b'\nhint: Use 1-63 characters")


def test_every_registered_command_is_in_the_help_once():
    """A command group that registers a command not in main.ORDER (or twice) would be missing from vmctl --help."""
    names = [entry[0] for entry in common.COMMANDS]
    assert sorted(names) == sorted(cli.ORDER) and len(set(names)) == len(names)
    help_text = cli.build_parser().format_help()
    assert all(" %s " % name in help_text for name in cli.ORDER)
