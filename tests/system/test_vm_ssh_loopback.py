"""vmctl.core.vm_ssh against a real OpenSSH sshd on loopback, through real ``ansible`` runs.

The sshd runs as root with its own host key; a store entry (noop backend, running) points at it with a
known_hosts file in the QEMU backend's format. Every test has its own control directory, so its session
daemons are its own; sshd's log counts the SSH logins.
"""

import hashlib
import glob
import os
import signal
import threading
import time

import pytest
from support.sshd_server import LoopbackSshd, fingerprint, free_port, keygen
from support.guests import alive
from support.vm_ssh_helpers import adhoc, daemons, playbook, sessions

from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import client as ssh_mux
from ansible_collections.vmctl.core.plugins.module_utils.errors import SshWaitTimeout
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget, resolve_target
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.readiness import login

PYTHON = "/usr/bin/python3"  # the guest-side interpreter (root's login shell here has a pyenv shim first in PATH)


@pytest.fixture
def loop_vm(sshd, tmp_path, vmctl_data_home, control_dir):
    return sshd.store_vm("loop", tmp_path / "vm-loop")


@pytest.fixture
def inventory(tmp_path, loop_vm):
    path = tmp_path / "hosts.vmctl.yml"
    path.write_text("plugin: vmctl.core.vms\ncompose:\n  ansible_python_interpreter: \"'%s'\"\n" % PYTHON)
    return path


def ini_inventory(tmp_path, lines):
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n[all:vars]\nansible_connection=vmctl.core.vm_ssh\nansible_python_interpreter=%s\n" % PYTHON)
    return path


def test_command_and_shell_over_the_inventory(inventory):
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "id -un")
    assert hosts["loop"]["stdout"] == "root" and hosts["loop"]["rc"] == 0
    hosts, _proc = adhoc(inventory, "ansible.builtin.shell", "echo out; echo err >&2; exit 3")
    result = hosts["loop"]
    assert result["failed"] and result["rc"] == 3
    assert result["stdout"] == "out" and result["stderr"] == "err"


def test_command_killed_by_a_signal_is_not_a_success(inventory, loop_vm, control_dir):
    hosts, _proc = adhoc(inventory, "ansible.builtin.raw", "kill -9 $$")
    assert hosts["loop"]["rc"] == 128 + signal.SIGKILL and hosts["loop"]["failed"]
    # and the engine reports the signal by name (the provision runner shows it)
    client = ssh_mux.MuxClient(resolve_target("loop")[0], control_dir=control_dir)
    stream = client.exec_command("echo before; kill -TERM $$")
    stream.close_stdin()
    status, sig, out, _err = stream.wait()
    assert (status, sig, out) == (-1, "TERM", b"before\n")


@pytest.mark.parametrize("pipelining", ["true", "false"])
def test_become_with_sudo(inventory, pipelining):
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "id -un",
                         extra=["--become", "--become-user", "nobody", "-e", "ansible_pipelining=%s" % pipelining])
    result = hosts["loop"]
    assert result["rc"] == 0, result
    assert result["stdout"] == "nobody"
    assert "BECOME-SUCCESS" not in result["stdout"] + result.get("stderr", "")


FAKE_SUDO = r"""#!/bin/bash
# Asks for a password the way sudo -S -p does, checks it, then runs the real sudo (root needs none).
prompt=""; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prompt="$2"; shift 2;;
    -S) shift;;
    *) args+=("$1"); shift;;
  esac
done
printf '%s' "$prompt" >&2
IFS= read -rs password
if [ "$password" != "letmein" ]; then echo "Sorry, try again." >&2; exit 1; fi
exec /usr/bin/sudo -n "${args[@]}"
"""


@pytest.mark.parametrize("pipelining", ["true", "false"])
def test_become_password_prompt_is_answered(inventory, tmp_path, pipelining):
    # root needs no password for sudo, so a become_exe stands in for sudo's password prompt
    fake = tmp_path / "sudo-with-password"
    fake.write_text(FAKE_SUDO)
    fake.chmod(0o755)
    extra = ["--become", "--become-user", "nobody", "-e", "ansible_become_exe=%s" % fake, "-e", "ansible_pipelining=%s" % pipelining]
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "id -un", extra=extra + ["-e", "ansible_become_password=letmein"])
    result = hosts["loop"]
    assert result.get("rc") == 0 and result["stdout"] == "nobody", result
    assert "password" not in result["stdout"] + result.get("stderr", "")
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "id -un", extra=extra + ["-e", "ansible_become_password=wrong"])
    assert hosts["loop"]["failed"] and "Incorrect sudo password" in hosts["loop"]["msg"], hosts["loop"]


def test_raw_with_become_runs_through_sudo(inventory):
    hosts, _proc = adhoc(inventory, "ansible.builtin.raw", "echo $SUDO_USER:$(id -un)", extra=["--become", "--become-user", "nobody"])
    assert hosts["loop"]["stdout"].strip() == "root:nobody"  # no BECOME-SUCCESS marker left in the output


def test_copy_and_fetch_20_mb(inventory, tmp_path):
    source = tmp_path / "payload.bin"
    with open(source, "wb") as f:
        f.write(os.urandom(20 * 1024 * 1024))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    remote = remote_dir / "payload.bin"
    hosts, _proc = adhoc(inventory, "ansible.builtin.copy", "src=%s dest=%s mode=0640" % (source, remote))
    assert hosts["loop"]["changed"], hosts["loop"]
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "sha256sum %s" % remote)
    assert hosts["loop"]["stdout"].split()[0] == digest
    fetched = tmp_path / "fetched"
    hosts, _proc = adhoc(inventory, "ansible.builtin.fetch", "src=%s dest=%s/ flat=true" % (remote, fetched))
    assert hosts["loop"]["changed"], hosts["loop"]
    assert hashlib.sha256((fetched / "payload.bin").read_bytes()).hexdigest() == digest


def test_missing_remote_file_fails_the_task_naming_the_path(inventory, tmp_path, loop_vm, control_dir):
    client = ssh_mux.MuxClient(resolve_target("loop")[0], control_dir=control_dir)
    from ansible_collections.vmctl.core.plugins.module_utils.errors import SshTransferFailed
    with pytest.raises(SshTransferFailed) as err:
        client.get(str(tmp_path / "nope"), str(tmp_path / "local"))
    assert "VM loop" in str(err.value) and str(tmp_path / "nope") in str(err.value)
    assert client.exec_command("true").wait()[0] == 0  # the session survives


def test_host_key_mismatch_names_the_vm_and_both_keys(sshd, inventory, loop_vm, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    with open(other + ".pub") as f:
        sshd.known_hosts_file(loop_vm.known_hosts, f.read().strip())
    before = sshd.logins()
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "true")
    result = hosts["loop"]
    assert result["unreachable"], result
    message = result["msg"]
    assert "VM loop" in message and "HOST KEY MISMATCH" in message
    assert fingerprint(sshd.host_key + ".pub") in message      # what the guest offered
    assert fingerprint(other + ".pub") in message              # what we pinned
    assert loop_vm.known_hosts in message
    assert sshd.logins() == before                             # never authenticated


def test_unknown_address_in_known_hosts_is_refused(sshd, inventory, loop_vm):
    # a known_hosts that pins the right key but for another address only
    with open(loop_vm.known_hosts, "w") as f:
        f.write("[127.0.0.1]:%d %s\n" % (sshd.port + 1, " ".join(sshd.host_public.split()[:2])))
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "true")
    assert hosts["loop"]["unreachable"] and "pins no host key for [127.0.0.1]:%d" % sshd.port in hosts["loop"]["msg"]


def test_wait_timeout_names_the_vm_and_its_console_log(sshd, tmp_path, vmctl_data_home, control_dir):
    vm = sshd.store_vm("late", tmp_path / "vm-late", ssh_host_port=free_port())
    path = ini_inventory(tmp_path, ["late"])
    begin = time.monotonic()
    hosts, _proc = adhoc(path, "ansible.builtin.command", "true", extra=["-e", "ansible_vmctl_wait_timeout=3"])
    message = hosts["late"]["msg"]
    assert hosts["late"]["unreachable"]
    assert "VM late" in message and "not ready within the deadline of 3 s" in message and "connection refused" in message
    assert vm.console_log in message and "ansible_vmctl_wait_timeout=6" in message
    assert time.monotonic() - begin < 60


def test_waits_for_a_guest_whose_sshd_is_not_up_yet(tmp_path, vmctl_data_home, control_dir):
    late = LoopbackSshd(tmp_path / "late-sshd")  # keys exist now; the daemon starts later
    late.store_vm("booting", tmp_path / "vm-booting")
    path = ini_inventory(tmp_path, ["booting"])
    starter = threading.Timer(4.0, late.start)
    starter.start()
    try:
        hosts, _proc = adhoc(path, "ansible.builtin.command", "echo up", extra=["-e", "ansible_vmctl_wait_timeout=60"])
    finally:
        starter.join()
        late.stop()
    assert hosts["booting"]["stdout"] == "up", hosts["booting"]


def test_one_session_shared_by_runs_and_forks(sshd, inventory, tmp_path, control_dir):
    before = sshd.logins()
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "echo first")
    assert hosts["loop"]["stdout"] == "first"
    first = sessions(control_dir)
    assert len(daemons(control_dir)) == 1 and [s["vm"] for s in first] == ["loop"]
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "echo second")
    assert hosts["loop"]["stdout"] == "second"
    # four inventory hosts that are the same VM, four forks at once
    aliases = ini_inventory(tmp_path, ["alias%d vmctl_vm_name=loop" % i for i in range(4)])  # the old name still works
    hosts, _proc = adhoc(aliases, "ansible.builtin.shell", "sleep 1; echo {{ inventory_hostname }}", extra=["-f", "4"])
    assert sorted(h["stdout"] for h in hosts.values()) == ["alias%d" % i for i in range(4)]
    second = sessions(control_dir)
    assert len(daemons(control_dir)) == 1
    # the same daemon and the same session (logged in once), which served the later tasks
    assert [(s["pid"], s["identity"], s["started"]) for s in second] == [(first[0]["pid"], first[0]["identity"], first[0]["started"])]
    assert second[0]["requests"] > first[0]["requests"]
    assert sshd.logins() - before == 1


def test_reset_connection_logs_in_again(sshd, inventory, tmp_path, control_dir):
    play = tmp_path / "reset.yml"
    play.write_text("""
- hosts: all
  gather_facts: false
  tasks:
    - name: before
      ansible.builtin.command: echo before
    - name: reset
      ansible.builtin.meta: reset_connection
    - name: after
      ansible.builtin.command: echo after
""")
    before = sshd.logins()
    tasks, proc = playbook(play, inventory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sshd.logins() - before == 2
    logs = "".join(open(path).read() for path in glob.glob(os.path.join(control_dir, "*.log")))
    assert len(daemons(control_dir)) == 1, (os.listdir(control_dir), logs)
    assert [s["vm"] for s in sessions(control_dir)] == ["loop"], logs  # the reset one ended, the new one is open
    assert "VM loop: session closed: stop requested" in logs


def test_a_killed_daemon_is_replaced(inventory, control_dir):
    adhoc(inventory, "ansible.builtin.command", "true")
    (old,) = daemons(control_dir)
    os.kill(old["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(old["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(old["socket"])  # stale socket left behind
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "echo again")
    assert hosts["loop"]["stdout"] == "again"
    (new,) = daemons(control_dir)
    assert new["pid"] != old["pid"]


def test_daemon_exits_when_idle(inventory, control_dir):
    adhoc(inventory, "ansible.builtin.command", "true", env={"ANSIBLE_VMCTL_IDLE_TIMEOUT": "2"})
    (daemon,) = daemons(control_dir)
    assert alive(daemon["pid"])
    deadline = time.monotonic() + 60
    while (alive(daemon["pid"]) or os.path.exists(daemon["socket"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(daemon["pid"]) and not os.path.exists(daemon["socket"])
    log = open(daemon["socket"][:-len(".sock")] + ".log").read()
    assert "VM loop: session closed: idle for 2 s" in log and "exiting: idle for 2 s" in log


def test_changed_known_hosts_never_reuses_a_session(sshd, inventory, loop_vm, tmp_path, control_dir):
    adhoc(inventory, "ansible.builtin.command", "true")
    assert len(daemons(control_dir)) == 1
    other = keygen(tmp_path / "other_host_key")
    with open(other + ".pub") as f:
        sshd.known_hosts_file(loop_vm.known_hosts, f.read().strip())
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "true")
    assert hosts["loop"]["unreachable"] and "HOST KEY MISMATCH" in hosts["loop"]["msg"]


def test_without_persistence_each_task_logs_in(sshd, inventory, tmp_path, control_dir):
    play = tmp_path / "three.yml"
    play.write_text("""
- hosts: all
  gather_facts: false
  tasks:
    - {name: one, ansible.builtin.command: echo one}
    - {name: two, ansible.builtin.command: echo two}
    - {name: three, ansible.builtin.command: echo three}
""")
    before = sshd.logins()
    tasks, proc = playbook(play, inventory, extra=["-e", "ansible_vmctl_persistent=false"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [hosts["loop"]["stdout"] for _name, hosts in tasks] == ["one", "two", "three"]
    assert sshd.logins() - before == 3
    assert daemons(control_dir) == []


def test_hosts_added_in_the_play(loop_vm, tmp_path):
    play = tmp_path / "add_host.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: add
      ansible.builtin.add_host:
        name: web
        groups: vms
        ansible_vmctl_vm_name: loop
        ansible_connection: vmctl.core.vm_ssh
        ansible_python_interpreter: %s

- hosts: vms
  gather_facts: false
  tasks:
    - name: who
      ansible.builtin.command: id -un
""" % PYTHON)
    tasks, proc = playbook(play, "localhost,", extra=["-c", "local"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dict(tasks)["who"]["web"]["stdout"] == "root"


def test_a_stopped_vm_fails_at_once(sshd, tmp_path, vmctl_data_home, control_dir):
    sshd.store_vm("down", tmp_path / "vm-down", state="stopped")
    hosts, _proc = adhoc(ini_inventory(tmp_path, ["down"]), "ansible.builtin.command", "true")
    assert hosts["down"]["unreachable"] and "VM down is stopped" in hosts["down"]["msg"]


def test_a_host_that_is_no_vm(tmp_path, vmctl_data_home, control_dir):
    hosts, _proc = adhoc(ini_inventory(tmp_path, ["ghost"]), "ansible.builtin.command", "true")
    assert hosts["ghost"]["unreachable"] and "VM 'ghost' is not in the vmctl store" in hosts["ghost"]["msg"]


def test_explicit_user_overrides_the_store(sshd, inventory, tmp_path):
    hosts, _proc = adhoc(inventory, "ansible.builtin.command", "true",
                         extra=["-e", "ansible_user=nobody", "-e", "ansible_vmctl_wait_timeout=2"])
    message = hosts["loop"]["msg"]
    assert hosts["loop"]["unreachable"] and "authentication as nobody" in message


def test_provision_steps_stream_over_the_connection(inventory, loop_vm, tmp_path):
    script = tmp_path / "step.sh"
    script.write_text("#!/bin/sh\necho from-script $(id -un)\n")
    play = tmp_path / "provision.yml"
    play.write_text("""
- hosts: loop
  gather_facts: false
  tasks:
    - name: inline
      vmctl.core.vm_provision:
        vm: loop
        step: {step: 1, type: shell, inline: "echo hello; echo oops >&2"}
        total: 3
    - name: script
      vmctl.core.vm_provision:
        vm: loop
        step: {step: 2, type: shell, script: %s}
        total: 3
    - name: killed
      vmctl.core.vm_provision:
        vm: loop
        step: {step: 3, type: shell, inline: "kill -TERM $$"}
        total: 3
""" % script)
    tasks, proc = playbook(play, inventory)
    results = dict(tasks)
    assert results["inline"]["loop"]["rc"] == 0 and results["script"]["loop"]["rc"] == 0, proc.stdout
    killed = results["killed"]["loop"]
    assert killed["failed"] and "signal TERM" in killed["msg"], killed
    log = open(os.path.join(loop_vm.work_dir, "provision.log")).read()
    assert "hello" in log and "oops" in log and "from-script root" in log and "signal TERM" in log


def test_a_cloud_init_wait_that_runs_out_says_so(tmp_path, vmctl_data_home):
    """After the login, a VM seeded by vmctl is ready only when cloud-init has finished; when that
    wait runs out the error says it was cloud-init, not SSH, and how long the login took."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ran = tmp_path / "cloud-init-ran"
    fake = bindir / "cloud-init"  # this host has no /run/cloud-init/result.json, so the wait runs it
    fake.write_text("#!/bin/sh\necho \"$*\" > %s\nexec sleep 60\n" % ran)
    fake.chmod(0o755)
    slow = LoopbackSshd(tmp_path / "sshd", extra_config=["SetEnv PATH=%s:/usr/bin:/bin" % bindir]).start()
    try:
        vm = slow.store_vm("seeded", tmp_path / "vm-seeded")
        target = SshTarget(vm="seeded", host="127.0.0.1", port=slow.port, user="root", private_key_path=slow.user_key,
                           known_hosts=vm.known_hosts, console_log=vm.console_log, cloud_init=True)
        begin = time.monotonic()
        with pytest.raises(SshWaitTimeout) as failed:
            login(target, 6)
        assert 5 <= time.monotonic() - begin < 30
        assert ran.read_text().split() == ["status", "--wait"]
        message = str(failed.value)
        assert message.startswith("VM seeded: ") and "waiting for cloud-init (SSH: logged in)" in message, message
        assert "6 s" in message
        assert "raise the deadline" in failed.value.hint and "ansible_vmctl_wait_timeout=12" in failed.value.hint
        # without cloud-init (an image vmctl did not seed) nothing waits
        target.cloud_init = False
        login(target, 6).close()
    finally:
        slow.stop()
