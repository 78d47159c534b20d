"""Error codes come only from classes: one code, one class, one CLI exit code.

Bad input: an error raised with a ``code=`` argument, or two classes that share a code. It gets: a
TypeError at the raise, and a failure here naming the classes or the call.
"""

import ast
import importlib
import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import errors
from ansible_collections.vmctl.core.plugins.plugin_utils.cli import common as cli

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))), "plugins")


def import_all():
    """Import every engine and controller module, so every error class is defined."""
    for sub in ("module_utils", "plugin_utils"):
        for directory, _dirs, files in os.walk(os.path.join(PLUGINS, sub)):
            for name in files:
                if name.endswith(".py") and name != "__init__.py":
                    rel = os.path.relpath(os.path.join(directory, name[:-3]), PLUGINS).replace(os.sep, ".")
                    importlib.import_module("ansible_collections.vmctl.core.plugins." + rel)


def test_every_code_belongs_to_exactly_one_class():
    import_all()
    owners = {}
    for cls in errors.error_classes():
        owners.setdefault(cls.code, []).append(cls.__module__.rsplit(".", 1)[1] + "." + cls.__name__)
    shared = {code: names for code, names in owners.items() if len(names) > 1}
    assert not shared, shared
    assert len(owners) > 60  # the walk saw the whole family, not only the base


def test_a_code_cannot_be_passed_in():
    with pytest.raises(TypeError, match="comes from its class"):
        raise errors.VmctlError("x", code="vmctl.vm.invalid_spec")


def test_no_raise_in_plugins_passes_a_code():
    """Read with ast: no call anywhere under plugins/ gives ``code=`` to an error class."""
    import_all()
    names = {cls.__name__ for cls in errors.error_classes()}
    calls = []
    for directory, _dirs, files in os.walk(PLUGINS):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Call) and any(k.arg == "code" for k in node.keywords):
                        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                        if func in names or func in ("cls", "error"):
                            calls.append("%s:%d %s" % (os.path.relpath(path, PLUGINS), node.lineno, func))
    assert not calls, calls


def test_the_same_code_gives_the_same_exit_code():
    """Each class maps to one exit code; a subclass with its own code keeps its family's (InvalidSpec's kin exit 2)."""
    import_all()
    by_code = {}
    for cls in errors.error_classes():
        if cls.__init__ is errors.VmctlError.__init__:
            by_code.setdefault(cls.code, set()).add(cli.exit_code_of(cls("x")))
    assert all(len(exits) == 1 for exits in by_code.values()), by_code
    assert by_code["vmctl.vm.invalid_spec"] == {cli.EXIT_USAGE}
    assert by_code["vmctl.ssh.invalid_public_key"] == {cli.EXIT_USAGE}
    assert by_code["vmctl.vmfile.unknown_vm"] == by_code["vmctl.image.not_cached"] == {cli.EXIT_NOT_FOUND}


def test_a_disk_smaller_than_the_image_is_an_invalid_spec(tmp_path):
    """The qemu backend's disk-size check raised a bare VmctlError with the invalid_spec code (exit 1, where
    InvalidSpec exits 2); it is an InvalidSpec now."""
    from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
    from ansible_collections.vmctl.core.plugins.module_utils.proc import run
    image = str(tmp_path / "base.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "3G"])
    with pytest.raises(errors.InvalidSpec) as exc:
        QemuBackend().check_disk_size("web", image, 2)
    assert "smaller than the image's 3.0 GB" in exc.value.message and cli.exit_code_of(exc.value) == cli.EXIT_USAGE


def test_with_message_keeps_class_hint_and_details():
    err = errors.InvalidHostname("invalid hostname x", name="web").with_message("VM web: invalid hostname x")
    assert err.__class__ is errors.InvalidHostname and err.code == "vmctl.cloudinit.invalid_hostname"
    assert err.hint == errors.InvalidHostname.default_hint and err.details == {"name": "web"}


def test_the_session_daemons_errors_keep_their_class_and_code():
    """An error sent over the daemon's socket comes back as its class; a class name this side does not know
    (a newer daemon's) is rebuilt from its code, and an unknown code as a plain SSH error."""
    import json
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.protocol import error_from_payload, error_payload
    back = error_from_payload(error_payload(errors.SshDisconnected("VM web: gone", name="web")))
    assert back.__class__ is errors.SshDisconnected and back.details["name"] == "web" and back.message == "VM web: gone"
    renamed = json.dumps({"class": "Renamed", "code": "vmctl.qemu.port_in_use", "message": "m", "hint": "h"}).encode()
    assert error_from_payload(renamed).__class__ is errors.PortInUse
    unknown = json.dumps({"class": "Renamed", "code": "vmctl.new.thing", "message": "m", "hint": "h"}).encode()
    assert error_from_payload(unknown).__class__ is errors.SshError
