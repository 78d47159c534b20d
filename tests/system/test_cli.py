"""The ``vmctl`` command, run as a real executable: help, errors and exit codes, list/status, the
lifecycle and console of the busybox guest, images against a real nginx, and up/ssh/log/down on the
Debian guest."""

import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest
from support.disk_images import compress, make_qcow2
from support.guests import alive
from support.vm_ssh_helpers import new_control_dir, remove_control_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(ROOT, "bin", "vmctl")
COMMANDS = ["create", "start", "stop", "destroy", "list", "status", "console", "ssh", "ssh-config", "cp", "suspend", "resume",
            "image", "up", "down", "reload", "provision", "log"]


def vmctl(*args, cwd=None, env=None, timeout=300, stdin=subprocess.DEVNULL):
    """Run ``bin/vmctl args``; returns the CompletedProcess (text)."""
    return subprocess.run([VMCTL] + [str(a) for a in args], cwd=cwd, env=dict(os.environ, **(env or {})),
                          stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def ok(*args, **kwargs):
    proc = vmctl(*args, **kwargs)
    assert proc.returncode == 0, "vmctl %s: %s%s" % (" ".join(map(str, args)), proc.stdout, proc.stderr)
    return proc


def fails(code, *args, **kwargs):
    """vmctl exits with ``code`` and an ``error:`` line plus a ``hint:`` line; returns stderr."""
    proc = vmctl(*args, **kwargs)
    assert proc.returncode == code, "vmctl %s -> %d: %s%s" % (" ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr)
    # a hint line of its own, or (a VMFile's problems) one under each problem: never the same hint twice
    assert proc.stderr.startswith("error: ") and re.search(r"^ *hint: ", proc.stderr, re.M), proc.stderr
    return proc.stderr


def table(stdout):
    """Rows of a ``list`` output as dicts keyed by the header's columns."""
    lines = stdout.splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:]]


# --- no VMs needed ----------------------------------------------------------------------------------

def test_help_of_every_command():
    top = ok("--help").stdout
    for command in COMMANDS:
        assert "\n    %s " % command in top, command
    assert "exit codes:" in top
    for command in COMMANDS:
        out = ok(command, "--help").stdout
        assert out.startswith("usage: vmctl %s" % command) and "examples:\n  vmctl %s" % command in out, out
    for sub in ("pull", "list", "inspect", "rm", "prune"):
        out = ok("image", sub, "--help").stdout
        assert "examples:\n  vmctl image %s" % sub in out, out
    assert "--no-provision" in ok("up", "--help").stdout and "--destroy" in ok("down", "--help").stdout
    assert "--timeout" in ok("stop", "--help").stdout


def test_version_and_the_vmctl_on_path_use_this_checkout():
    out = ok("--version").stdout
    assert out.startswith("vmctl 0.") and "ansible_collections/vmctl/core" in out
    on_path = shutil.which("vmctl")
    assert on_path, "scripts/setup puts vmctl in the virtual environment"
    proc = subprocess.run([on_path, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and os.path.realpath(proc.stdout.split(" at ")[1].strip(" )\n")) == os.path.realpath(ROOT)


def test_bad_input_is_explained_with_distinct_exit_codes(tmp_path):
    assert "VM 'ghost' not found" in fails(3, "status", "ghost")
    assert "vmctl list" in fails(3, "start", "ghost")
    assert "no VM named 'ghost'" in fails(3, "destroy", "ghost")
    assert "invalid VM name 'a/b'" in fails(2, "start", "a/b")
    assert "invalid VM name 'a/b'" in fails(2, "create", "--name", "a/b", "--image", tmp_path / "nothing.qcow2")
    assert "image %s does not exist" % (tmp_path / "missing.qcow2") in fails(
        3, "create", "--name", "x", "--image", tmp_path / "missing.qcow2")
    usage = vmctl("create", "--name", "x")  # argparse: no image source
    assert usage.returncode == 2 and "one of the arguments --image --image-url is required" in usage.stderr
    assert vmctl("frobnicate").returncode == 2
    assert "no VMFile at %s" % (tmp_path / "VMFile.kdl") in fails(3, "up", cwd=tmp_path)
    assert "no VMFile" in fails(3, "ssh", cwd=tmp_path)
    assert "arguments after -- are only for" in vmctl("list", "--", "x").stderr


def test_a_vmfile_mistake_is_reported_with_its_position(tmp_path):
    (tmp_path / "VMFile.kdl").write_text('vm "web" {\n    image "disk.qcow2"\n    memroy 512\n}\n')
    (tmp_path / "disk.qcow2").write_text("")
    err = fails(2, "up", "--file", tmp_path / "VMFile.kdl")
    assert "%s:3:5: error: unknown node memroy" % (tmp_path / "VMFile.kdl") in err
    assert "did you mean `memory`?" in err
    err = fails(2, "ssh", cwd=tmp_path)  # the same check when ssh reads the VMFile for the name
    assert "unknown node memroy" in err


def test_ssh_without_a_name_needs_a_vmfile_with_one_vm(tmp_path):
    (tmp_path / "disk.qcow2").write_text("")
    (tmp_path / "VMFile.kdl").write_text('vm "a" { image "disk.qcow2"; }\nvm "b" { image "disk.qcow2"; }\n')
    err = fails(2, "ssh", cwd=tmp_path)
    assert "defines 2 VMs (a, b); say which one" in err and "vmctl ssh NAME" in err
    (tmp_path / "VMFile.kdl").write_text('vm "a" { image "disk.qcow2"; }\n')
    assert "VM 'a' not found" in fails(3, "ssh", cwd=tmp_path)  # inferred, then looked up
    assert "no VM named nope" in fails(3, "down", "--name", "nope", cwd=tmp_path)


def test_list_with_no_vms_prints_the_header():
    out = ok("list").stdout
    assert out.split() == ["NAME", "BACKEND", "VCPUS", "MEM", "NETWORK", "PID", "SSH", "SNAPS", "STATE", "FORWARDS"]
    assert ok("list", "--json").stdout.strip() == "[]"


# --- the busybox guest ------------------------------------------------------------------------------

def tiny_create_args(test_images, tmp_path, name="tiny"):
    disk = tmp_path / ("%s.qcow2" % name)
    if not disk.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    tiny = test_images["tiny"]
    return ["create", "--name", name, "--image", disk, "--memory", 256, "--kernel", tiny["kernel"],
            "--initrd", tiny["initrd"], "--kernel-append", "console=ttyS0", "--no-vnc", "--no-cloud-init"]


def wait_for_marker(name, marker, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = vmctl("log", name, "--console")
        if marker in proc.stdout:
            return
        time.sleep(0.5)
    raise AssertionError("%r not in the console log of %s" % (marker, name))


def read_until(proc, marker, timeout=60):
    """Read ``proc``'s stdout (bytes) until ``marker``; returns everything read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, "%r not seen; got %r" % (marker, seen[-2000:])
        if select.select([proc.stdout], [], [], min(left, 1))[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "output ended before %r; got %r" % (marker, seen[-2000:])
            seen += chunk
    return seen


@pytest.mark.slow
def test_tiny_guest_lifecycle_and_console(test_images, tmp_path):
    out = ok(*tiny_create_args(test_images, tmp_path)).stdout
    assert out.startswith("created VM tiny")
    assert "VM 'tiny' already exists" in fails(4, *tiny_create_args(test_images, tmp_path))
    (row,) = table(ok("list").stdout)
    assert row["NAME"] == "tiny" and row["STATE"] == "prepared" and row["PID"] == "-" and row["MEM"] == "256"

    assert "VM tiny is prepared: no SSH to it" in fails(4, "ssh", "tiny")
    assert ok("start", "tiny").stdout.startswith("started VM tiny (pid ")
    assert "no private key to log in with" in fails(1, "ssh", "tiny")  # no cloud-init: no key was generated
    assert "already running" in ok("start", "tiny").stdout
    status = ok("status", "tiny").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["State"] == "running" and fields["Backend"] == "qemu" and fields["vCPUs"] == "1"
    assert fields["Memory"] == "256 MiB" and fields["Network"] == "user" and fields["MAC"].startswith("52:54:00:")
    pid = int(fields["PID"])
    assert alive(pid) and fields["Work dir"].endswith("/vmctl/vms/tiny") and fields["Console log"].endswith("console.log")
    wait_for_marker("tiny", test_images["tiny"]["ready_marker"])

    ok("suspend", "tiny")
    assert table(ok("list").stdout)[0]["STATE"] == "suspended"
    assert ok("suspend", "tiny").stdout == "VM tiny is already suspended\n"
    ok("resume", "tiny")
    assert table(ok("list").stdout)[0]["STATE"] == "running"

    # console: attach, send bytes, detach with Ctrl+]
    console = subprocess.Popen([VMCTL, "console", "tiny"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        note = b""
        while b"Ctrl+]" not in note and time.monotonic() < deadline:
            note += os.read(console.stderr.fileno(), 4096)
        assert b"Connected to the serial console of tiny" in note
        console.stdin.write(b"echo hi\r\x1d")
        console.stdin.flush()
        assert console.wait(timeout=30) == 0
        assert b"[detached from tiny]" in console.stderr.read()
    finally:
        if console.poll() is None:
            console.kill()
    # console: what the guest prints while attached shows up; the console ends when the VM stops
    console = subprocess.Popen([VMCTL, "console", "tiny"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        time.sleep(1)  # attached before the guest prints its power-off line
        stop = ok("stop", "tiny", "--timeout", "30").stdout
        assert stop.startswith("stopped VM tiny (ACPI power-off"), stop
        assert b"VMCTL-TINY-POWEROFF" in read_until(console, "VMCTL-TINY-POWEROFF")
        assert console.wait(timeout=30) == 0
        assert b"the VM stopped" in console.stderr.read()
    finally:
        if console.poll() is None:
            console.kill()
    assert not alive(pid)
    assert "is not running (stopped)" in ok("stop", "tiny").stdout
    assert "has no serial console" in fails(4, "console", "tiny")
    assert "only a running VM can be suspended" in fails(4, "suspend", "tiny")
    assert table(ok("list").stdout)[0]["STATE"] == "stopped"
    assert "VMCTL-TINY-READY" in ok("log", "tiny", "--console", "--tail", "50").stdout
    assert "no provision log yet" in fails(3, "log", "tiny", "--provision")

    assert ok("destroy", "tiny").stdout == "destroyed VM tiny\n"
    assert table(ok("list").stdout) == []


# --- images -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_image_pull_list_inspect_rm(test_images, tmp_path, http_files):
    qcow2 = make_qcow2(tmp_path / "disk.qcow2", size_mb=16, data_mb=2, seed=5)
    url = http_files.url("disk.qcow2.zst")
    http_files.put("disk.qcow2.zst", compress(qcow2, "zst"))

    pulled = ok("image", "pull", url, "--name", "tinydisk")
    path = pulled.stdout.strip()
    assert os.path.basename(path).startswith("tinydisk-") and os.path.isfile(path)
    assert "pulling %s: 100%%" % url in pulled.stderr and "downloaded %s (qcow2, " % url in pulled.stderr
    again = ok("image", "pull", url)
    assert again.stdout.strip() == path and "already cached" in again.stderr
    assert len(http_files.body_gets("disk.qcow2.zst")) == 1

    header, row = ok("image", "list").stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "FORMAT", "PATH", "USED", "BY"]
    assert row.startswith(os.path.basename(path) + " ") and " qcow2 " in row and row.endswith(" %s -" % path)

    info = ok("image", "inspect", path).stdout
    assert "format:              qcow2" in info and "cached:              yes" in info and url in info
    assert "virtual size:        16.0 MiB (16777216 bytes)" in info
    assert "cached:              no" in ok("image", "inspect", qcow2).stdout  # any local image

    # a VM from the URL (no download: cached), which keeps the image from being removed
    tiny = test_images["tiny"]
    ok("create", "--name", "fromurl", "--image-url", url, "--memory", 256, "--kernel", tiny["kernel"],
       "--initrd", tiny["initrd"], "--kernel-append", "console=ttyS0", "--no-vnc")
    assert "is the base of VM(s) fromurl" in fails(4, "image", "rm", url)
    assert ok("image", "list").stdout.splitlines()[1].endswith(" %s fromurl" % path)  # the USED BY column
    ok("destroy", "fromurl")

    assert "would remove %s (unused" % path in ok("image", "prune", "--dry-run").stdout
    assert os.path.exists(path)
    assert ok("image", "rm", url).stdout.startswith("removed %s" % path)
    assert "not in the image cache" in fails(3, "image", "inspect", url)
    assert "not in the image cache" in fails(3, "image", "rm", url)
    assert "404" in fails(1, "image", "pull", http_files.url("missing.qcow2"))
    assert "checksum" in fails(2, "image", "pull", url, "--checksum", "sha256:abc").lower()


# --- the Debian guest: up, ssh, log, down -----------------------------------------------------------

VMFILE = """\
vm "clidemo" {
    image "%s"
    vcpus 1
    memory 768

    cloud-init {
        hostname "clidemo"
    }

    ssh {
        user "demo"
    }

    provision "shell" {
        inline "echo provisioned on $(hostname)"
    }
}
"""


@pytest.mark.slow
@pytest.mark.guest
def test_up_ssh_log_down_on_the_debian_guest(test_images, tmp_path):
    (tmp_path / "VMFile.kdl").write_text(VMFILE % test_images["debian"]["path"])
    control = new_control_dir()
    env = {"ANSIBLE_VMCTL_CONTROL_PATH_DIR": control, "ANSIBLE_VMCTL_WAIT_TIMEOUT": "600", "ANSIBLE_NOCOLOR": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        up = ok("up", "--file", tmp_path / "VMFile.kdl", "--", "-e", "ssh_timeout=600", cwd=elsewhere, env=env, timeout=1200)
        assert "[clidemo] provisioned on clidemo" in up.stdout and "clidemo: ok" in up.stdout, up.stdout

        (row,) = table(ok("list").stdout)
        assert row["NAME"] == "clidemo" and row["STATE"] == "running" and row["SSH"].isdigit()

        proc = ok("ssh", "clidemo", "--", "hostname", env=env, timeout=120)
        assert proc.stdout == "clidemo\n", proc.stderr
        # the name from the VMFile in the current directory; the command's exit status comes back
        proc = vmctl("ssh", "--", "id -un; exit 7", cwd=tmp_path, timeout=120)
        assert proc.returncode == 7 and proc.stdout == "demo\n", proc.stderr

        # the host key is pinned: with another key in the VM's known_hosts, no login
        known_hosts = json.loads(ok("status", "clidemo", "--json").stdout)["ssh"]["known_hosts"]
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
        pinned = open(known_hosts).read()
        try:
            with open(known_hosts, "w") as f:
                f.write("* " + " ".join((tmp_path / "other.pub").read_text().split()[:2]) + "\n")
            assert "host key" in fails(1, "ssh", "clidemo", "--", "true", timeout=120)  # the engine's check
            proc = vmctl("ssh", "clidemo", "--wait", "0", "--", "true", timeout=120)  # OpenSSH's own check
            assert proc.returncode == 255 and "Host key verification failed" in proc.stderr, proc.stderr
        finally:
            with open(known_hosts, "w") as f:
                f.write(pinned)

        log = ok("log", "clidemo", "--provision").stdout
        assert "clidemo step 1/1 shell: echo provisioned" in log and "provisioned on clidemo" in log

        down = ok("down", "--destroy", cwd=tmp_path, env=env, timeout=600)
        assert "clidemo: ok" in down.stdout, down.stdout
        assert table(ok("list").stdout) == []
    finally:
        remove_control_dir(control)
