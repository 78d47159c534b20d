"""Console automation (vm_console, vmctl console --wait-for/--send) on the busybox guest with a getty.

One boot for the module: the tiny guest's initramfs gets an extra archive (the kernel unpacks concatenated
archives in order) with a password file and ``/console-init``, which starts a getty on ttyS0 and then runs the
guest's own ``/init`` (a /dev/null first: a background job's input is /dev/null, which exists only once /init mounts /dev).
"""

import gzip
import json
import subprocess

import pytest
from support.ansible_run import module
from support.guests import data_home, tiny_spec

from ansible_collections.vmctl.core.plugins.module_utils.console import Console, decode_keys
from ansible_collections.vmctl.core.plugins.module_utils.errors import ConsoleFailed, ConsoleTimeout, InvalidSpec
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

pytestmark = pytest.mark.slow

PASSWORD = "tiny-secret"
CONSOLE_INIT = """#!/bin/busybox sh
/bin/busybox mknod /dev/null c 1 3
( until [ -e /dev/ttyS0 ] && [ -e /bin/getty ]; do /bin/busybox sleep 0.1; done
  while true; do /bin/setsid /bin/getty -L 115200 ttyS0 vt100; done ) &
exec /init
"""


def _overlay_initrd(images, tmp):
    """The tiny guest's initrd plus an archive with /console-init, /etc/passwd (root's password) and /etc/profile."""
    root = tmp / "overlay"
    (root / "etc").mkdir(parents=True)
    (root / "root").mkdir()
    crypted = subprocess.run(["busybox", "mkpasswd", "-m", "sha512", PASSWORD], capture_output=True, text=True,
                             check=True).stdout.strip()
    (root / "etc" / "passwd").write_text("root:%s:0:0:root:/root:/bin/sh\n" % crypted)
    (root / "etc" / "profile").write_text("PS1='tiny# '\nexport PS1\n")
    init = root / "console-init"
    init.write_text(CONSOLE_INIT)
    init.chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=files, capture_output=True,
                             check=True).stdout
    combined = tmp / "console-initrd"
    with open(images["tiny"]["initrd"], "rb") as f:
        combined.write_bytes(f.read() + gzip.compress(archive))
    return str(combined)


@pytest.fixture(scope="module")
def guest(test_images, tmp_path_factory):
    """The running console guest, in a store of its own (each test points XDG_DATA_HOME at it)."""
    tmp = tmp_path_factory.mktemp("console-guest")
    home = tmp / "xdg"
    home.mkdir()
    with data_home(home):
        manager = VmManager()
        try:
            manager.create(tiny_spec(test_images, tmp, name="cons", initrd=_overlay_initrd(test_images, tmp),
                                     kernel_append="console=ttyS0 rdinit=/console-init"))
            manager.start("cons")
            Console(manager, "cons").wait_for("login:", 180)
            yield home
        finally:
            manager.destroy("cons")


@pytest.fixture
def console(guest, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(guest))
    return Console(VmManager(), "cons")


def vmctl(*args, timeout=120):
    return subprocess.run(["vmctl"] + list(args), capture_output=True, text=True, timeout=timeout, check=False)


def test_waits_search_from_the_latest_start_and_never_consume_it(console):
    first = console.wait_for(r"VMCTL-(TINY)-READY", 10)
    again = console.wait_for(r"VMCTL-(TINY)-READY", 10)
    assert first["matched"] and first["groups"] == ["TINY"] and first == dict(again, seconds=first["seconds"])
    assert first["offset"] > console.handle.console_offset and any("VMCTL-TINY-READY" in line for line in first["lines"])
    # from past the marker it is not there any more: a timeout, with what was read (bad input: none, just no match)
    with pytest.raises(ConsoleTimeout) as caught:
        console.wait_for(r"VMCTL-TINY-READY", 1, since=first["offset"])
    assert caught.value.details["result"]["matched"] is False


def test_bad_patterns_offsets_and_keys_are_refused(console):
    """Bad input: a broken regex, an offset beyond the log, an unknown key escape, a multi-line command."""
    with pytest.raises(InvalidSpec, match="bad regular expression"):
        console.wait_for("(unclosed", 1)
    with pytest.raises(InvalidSpec, match="not an offset"):
        console.wait_for("x", 1, since=console.size() + 10)
    with pytest.raises(InvalidSpec, match="unknown key escape"):
        decode_keys("root\\q")
    with pytest.raises(InvalidSpec, match="one line"):
        console.command("true\nfalse", 5)
    assert decode_keys("a\\r\\cc\\x1b\\\\") == b"a\r\x03\x1b\\"


def test_a_wrong_password_is_refused(console):
    """Bad input: the wrong password gets a clear ConsoleFailed, and the getty asks again."""
    with pytest.raises(ConsoleFailed, match="refused"):
        console.login("root", "wrong", 30)


def test_login_command_and_control_keys(console):
    logged = console.login("root", PASSWORD, 30)
    assert logged["logged_in"] is True
    assert console.login("root", PASSWORD, 30)["logged_in"] is False  # at the prompt already: left alone
    done = console.command("echo hello; echo $((6*7)) world", 20)
    assert done["stdout"] == "hello\n42 world\n" and done["rc"] == 0 and done["seconds"] > 0
    failed = console.command("printf no-newline; (exit 3)", 20)
    assert failed["stdout"] == "no-newline" and failed["rc"] == 3
    # Ctrl+C interrupts what runs on the serial shell; the next command works
    # (a loop: ^C ends it whether it lands in the shell or in its sleep; the output, not the typed echo, shows it runs)
    since = console.send(decode_keys("while :; do echo tick-$((0+1)); sleep 1; done\r"))
    console.wait_for(r"^tick-1", 20, since)
    interrupted = console.send(decode_keys("\\cc"))
    # the shell's fresh prompt, then the command (on a loaded host, keys typed while ash still ends the loop
    # and sets up its line editor can be lost, which is the shell's doing, not the console's)
    console.wait_for(r"tiny# ", 60, interrupted)
    assert console.command("echo after", 60)["stdout"] == "after\n"


def test_the_module_logs_in_runs_and_waits(guest, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(guest))
    ran = module("vm_console", {"name": "cons", "login": {"user": "root", "password": PASSWORD}, "command": "id -u"})
    assert not ran["failed"], ran
    assert ran["stdout"] == "0\n" and ran["rc"] == 0 and ran["changed"] and PASSWORD not in json.dumps(ran)
    waited = module("vm_console", {"name": "cons", "wait_for": r"VMCTL-TINY-(\w+)"})
    assert waited["matched"] and waited["groups"] == ["READY"] and not waited["changed"]
    # since the command's end: its markers are behind us, so the wait times out with matched false
    late = module("vm_console", {"name": "cons", "wait_for": "VMCTL-TINY-READY", "since": ran["offset"], "timeout": 1})
    assert late["failed"] and late["matched"] is False and late["error"]["code"] == "vmctl.console.timeout"
    checked = module("vm_console", {"name": "cons", "send": "reboot\\r"}, check=True)
    assert checked["changed"] and not checked["failed"]
    assert module("vm_console", {"name": "cons", "command": "echo still-up"})["stdout"] == "still-up\n"


def test_the_cli_sends_and_waits(guest, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(guest))
    proc = vmctl("console", "cons", "--send", "echo cli-$((40+2))\\r", "--wait-for", r"^cli-42", "--timeout", "20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("cli-42") and proc.stderr.startswith("offset ")
    offset = proc.stderr.split()[1]
    late = vmctl("console", "cons", "--wait-for", r"^cli-42", "--since", offset, "--timeout", "1")
    assert late.returncode == 5 and "did not appear" in late.stderr  # bad input: a pattern that is not coming
    bad = vmctl("console", "cons", "--wait-for", "(", "--timeout", "1")
    assert bad.returncode == 2 and "bad regular expression" in bad.stderr
