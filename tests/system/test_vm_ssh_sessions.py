"""Many VMs' SSH sessions in the one session daemon of a control directory, against real OpenSSH sshds on loopback.

Each VM is a store entry (noop backend, running) with its own known_hosts file; sshd's log counts the logins.
What is proven: the VMs share one daemon but not a session; one VM's dead or hung target never holds up another
VM's requests; a stop request (reset_connection) for one VM ends only that VM's session; a VM whose sshd died
and came back is logged in to again by the same daemon; concurrent starters start one daemon.
"""

import os
import signal
import stat
import threading
import time

import pytest
from support.guests import alive
from support.sshd_server import LoopbackSshd, keygen
from support.vm_ssh_helpers import adhoc, daemons, sessions

from ansible_collections.vmctl.core.plugins.module_utils.errors import SshError, SshWaitTimeout, VmctlError
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.client import MuxClient
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.protocol import ControlPaths
from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import resolve_target

pytestmark = pytest.mark.slow


def client(name, control_dir, **options):
    return MuxClient(resolve_target(name)[0], control_dir=control_dir, **options)


def run(mux, command):
    stream = mux.exec_command(command)
    stream.close_stdin()
    return stream.wait()


def descendants(pid):
    """Pids of every process below ``pid`` (sshd's per-connection processes and what they run)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_two_vms_through_one_daemon(sshd, tmp_path, vmctl_data_home, control_dir):
    """Two VMs, one daemon, a session (and a login) each; a tampered pin refuses only its own VM (bad input:
    a known_hosts pinning another key gets HOST KEY MISMATCH for that VM, the other one goes on)."""
    for name in ("one", "two"):
        sshd.store_vm(name, None)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("one\ntwo\n[all:vars]\nansible_connection=vmctl.core.vm_ssh\n")
    before = sshd.logins()
    hosts, _proc = adhoc(inventory, "ansible.builtin.raw", "echo {{ inventory_hostname }}", extra=["-f", "2"])
    assert {name: hosts[name]["stdout"].strip() for name in hosts} == {"one": "one", "two": "two"}, hosts
    (daemon,) = daemons(control_dir)
    held = {s["vm"]: s for s in daemon["sessions"]}
    assert sorted(held) == ["one", "two"] and held["one"]["identity"] != held["two"]["identity"]
    assert sshd.logins() - before == 2
    # the daemon's files: a 0600 socket in a 0700 directory; its argv names no VM, key or address
    assert stat.S_IMODE(os.stat(control_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon["socket"]).st_mode) == 0o600
    with open("/proc/%d/cmdline" % daemon["pid"], "rb") as f:
        argv = f.read().decode()
    assert sshd.user_key not in argv and str(sshd.port) not in argv and resolve_target("one")[0].known_hosts not in argv
    # again: the same sessions, no new login
    hosts, _proc = adhoc(inventory, "ansible.builtin.raw", "echo again", extra=["-f", "2"])
    assert all(h["stdout"].strip() == "again" for h in hosts.values())
    assert sshd.logins() - before == 2 and [d["pid"] for d in daemons(control_dir)] == [daemon["pid"]]
    # VM two's pin changes: two is refused, one still runs on its session
    other = keygen(tmp_path / "other_host_key")
    with open(other + ".pub") as f:
        sshd.known_hosts_file(resolve_target("two")[0].known_hosts, f.read().strip())
    hosts, _proc = adhoc(inventory, "ansible.builtin.raw", "echo third", extra=["-f", "2"])
    assert hosts["two"]["unreachable"] and "VM two" in hosts["two"]["msg"] and "HOST KEY MISMATCH" in hosts["two"]["msg"]
    assert hosts["one"]["stdout"].strip() == "third"
    assert sshd.logins() - before == 2


def test_a_dead_target_does_not_block_another_vm(sshd, tmp_path, vmctl_data_home, control_dir):
    """A VM whose port accepts TCP but never speaks SSH (bad input: a dead guest) keeps its login waiting until its
    wait_timeout, then fails naming the VM; meanwhile another VM's commands, and a third VM's login, run through the
    same daemon."""
    import socket
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(8)  # the kernel completes the TCP handshake; nobody ever reads or writes
    try:
        sshd.store_vm("dead", None, ssh_host_port=tarpit.getsockname()[1])
        sshd.store_vm("live", None)
        live = client("live", control_dir)
        assert run(live, "echo before")[2] == b"before\n"
        failures = []

        def dead_command():
            try:
                run(client("dead", control_dir, wait_timeout=8, attempt_timeout=3), "true")
            except VmctlError as err:
                failures.append(err)

        waiting = threading.Thread(target=dead_command)
        waiting.start()
        deadline = time.monotonic() + 20
        while "dead" not in [s["vm"] for s in sessions(control_dir)] and time.monotonic() < deadline:
            time.sleep(0.1)  # the dead VM's login has begun in the daemon
        assert run(live, "echo during")[2] == b"during\n"
        sshd.store_vm("fresh", None)  # and a VM's first login is not queued behind the dead VM's
        assert run(client("fresh", control_dir), "echo fresh")[2] == b"fresh\n"
        assert waiting.is_alive()  # both ended while the dead VM's login still waited
        waiting.join(60)
        assert len(failures) == 1 and isinstance(failures[0], SshWaitTimeout), failures
        assert "VM dead" in str(failures[0])
        assert len(daemons(control_dir)) == 1
    finally:
        tarpit.close()


def test_a_hung_then_restarted_sshd(sshd, tmp_path, vmctl_data_home, control_dir):
    """VM a's sshd hangs (SIGSTOP) while a command runs: VM b's commands still run. Killed, a's command fails
    naming the VM; once a's sshd is back, a's next command logs in again, in the same daemon."""
    flaky = LoopbackSshd(tmp_path / "flaky").start()
    try:
        flaky.store_vm("a", None)
        sshd.store_vm("b", None)
        a, b = client("a", control_dir), client("b", control_dir)
        assert run(a, "echo a")[2] == b"a\n" and run(b, "echo b")[2] == b"b\n"
        (daemon,) = daemons(control_dir)
        logins_a, logins_b = flaky.logins(), sshd.logins()
        stream = a.exec_command("sleep 1; echo late")
        stream.close_stdin()
        hung = descendants(flaky.proc.pid)  # a's session processes and its command
        for pid in hung:
            os.kill(pid, signal.SIGSTOP)
        assert run(b, "echo b-during")[2] == b"b-during\n"
        assert not stream.poll(0.5) and not stream.finished  # a's command is still hung
        for pid in [flaky.proc.pid] + hung:
            os.kill(pid, signal.SIGKILL)
        flaky.proc.wait(10)
        with pytest.raises(SshError) as lost:
            stream.wait()
        assert "VM a" in str(lost.value)
        flaky = LoopbackSshd(tmp_path / "flaky", port=flaky.port).start()  # the same keys and port
        assert run(a, "echo a-again")[2] == b"a-again\n"
        assert flaky.logins() - logins_a == 1 and sshd.logins() == logins_b
        assert [d["pid"] for d in daemons(control_dir)] == [daemon["pid"]]
        assert sorted(s["vm"] for s in sessions(control_dir)) == ["a", "b"]
    finally:
        flaky.stop()


def test_stop_for_one_vm_leaves_the_others(sshd, vmctl_data_home, control_dir):
    """reset_connection's stop request for VM x ends x's session only; x's next command logs in again."""
    names = ("x", "y", "z")
    for name in names:
        sshd.store_vm(name, None)
    clients = {name: client(name, control_dir) for name in names}
    for name in names:
        assert run(clients[name], "echo %s" % name)[2] == name.encode() + b"\n"
    held = {s["vm"]: s for s in sessions(control_dir)}
    before = sshd.logins()
    clients["x"].stop()
    after = {s["vm"]: s for s in sessions(control_dir)}
    assert sorted(after) == ["y", "z"]
    for name in ("y", "z"):
        assert (after[name]["pid"], after[name]["started"]) == (held[name]["pid"], held[name]["started"])
    assert run(clients["y"], "true")[0] == 0 and sshd.logins() == before
    assert run(clients["x"], "echo x-again")[2] == b"x-again\n"
    assert sshd.logins() - before == 1
    assert len(daemons(control_dir)) == 1


def test_concurrent_starters_start_one_daemon(sshd, vmctl_data_home, control_dir):
    """Eight VMs' first commands at once, with no daemon running: one daemon starts, eight sessions, eight logins."""
    names = ["c%d" % i for i in range(8)]
    for name in names:
        sshd.store_vm(name, None)
    before = sshd.logins()
    gate = threading.Barrier(len(names))
    outputs = {}

    def first(name):
        mux = client(name, control_dir)
        gate.wait()
        outputs[name] = run(mux, "echo %s" % name)[2]

    threads = [threading.Thread(target=first, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outputs == {name: name.encode() + b"\n" for name in names}
    (daemon,) = daemons(control_dir)
    assert sorted(s["vm"] for s in daemon["sessions"]) == names
    assert sshd.logins() - before == len(names)
    with open(ControlPaths(control_dir).log) as f:
        assert f.read().count("session daemon listening") == 1
    assert alive(daemon["pid"])


def test_one_daemon_serves_a_second_data_dir(sshd, tmp_path, vmctl_data_home, control_dir, monkeypatch):
    """Bad input: a daemon started from one data dir (another $XDG_DATA_HOME: two runs side by side, or a user who
    switches) is asked to wait for a VM of another. It gets: the wait reads the asking side's store and logs in to
    that VM (it once read the daemon's own store and failed with 'VM two not found in <first>/vms.json')."""
    sshd.store_vm("one", None)
    assert client("one", control_dir).wait_ready(deadline=60) >= 0
    other = tmp_path / "other-data"
    other.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(other))
    sshd.store_vm("two", None)
    mux = client("two", control_dir)
    assert mux.wait_ready(deadline=60) >= 0
    assert run(mux, "echo two")[2] == b"two\n"
    (daemon,) = daemons(control_dir)
    assert sorted(s["vm"] for s in daemon["sessions"]) == ["one", "two"]
