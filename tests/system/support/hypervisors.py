"""Hypervisors for the tests: network namespaces, each with its own sshd, Unix user, home and data directory.

``NetnsHypervisor(index).start()`` makes namespace ``vmctl-hv<index>-<pid>`` joined to the host by a veth pair
on a /30 that no route of the host uses (the host end .1, the namespace end .2: these addresses exist only
on the pair), a system user ``vmhv<index>-<pid>`` whose home is a fresh directory under /tmp (pytest's own
tmp is root's 0700), and a real OpenSSH sshd inside the namespace on the namespace end, port 22, with its own
host key. The controller logs in with ``user_key`` and checks the host key with ``known_hosts``. ``stop()``
removes the namespace, the user and the home. ``run(argv)`` runs a command in the namespace as the user.
``NetnsHypervisor(index, name="hvp", env={...})`` names it otherwise and gives every SSH session of its user those
environment variables (sshd ``SetEnv``); ``in_netns(function)`` binds sockets inside it from this process.
``with running(count) as hvs:`` starts hv1 .. hv<count> and stops every one that started.
"""

import contextlib
import ctypes
import ipaddress
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from support.sshd_server import SFTP_SERVER, SSHD, keygen, logins, stop_process, wait_listening

BASE = ipaddress.ip_network("10.216.0.0/16")
CLONE_NEWNET = 0x40000000
STORE_PUT = """
import json, sys
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
VmStore().put(VmHandle(**json.loads(sys.argv[1])))
"""


def _run(argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _used_networks():
    out = _run(["ip", "-4", "route", "show", "table", "all"]).stdout
    networks = []
    for line in out.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "broadcast", "local", "unreachable"):
            continue
        try:
            networks.append(ipaddress.ip_network(first, strict=False))
        except ValueError:
            continue
    return networks


def free_subnet(start=0):
    used = _used_networks()
    for index, subnet in enumerate(BASE.subnets(new_prefix=30)):
        if index >= start and not any(subnet.overlaps(net) for net in used):
            return subnet
    raise RuntimeError("no free /30 in %s" % BASE)


@contextlib.contextmanager
def running(count):
    """``count`` started hypervisors (indexes 1 .. count), each one that started stopped at the end."""
    started = []
    try:
        for index in range(1, count + 1):
            started.append(NetnsHypervisor(index).start())
        yield started
    finally:
        for hv in started:
            hv.stop()


class NetnsHypervisor:
    def __init__(self, index, name=None, env=None):
        self.index = index
        self.name = name or "hv%d" % index
        self.env = dict(env or {})  # sshd's SetEnv: what every session of the user gets, as an admin would set it
        tag = "%d-%d" % (index, os.getpid())
        self.netns = "vmctl-hv" + tag
        self.user = "vmhv" + tag
        self.veth_host, self.veth_ns = "vhv%sa" % tag, "vhv%sb" % tag
        self.veth_host, self.veth_ns = self.veth_host[:15], self.veth_ns[:15]
        self.root = tempfile.mkdtemp(prefix="vmctl-%s-" % self.netns)
        os.chmod(self.root, 0o755)
        self.home = os.path.join(self.root, "home")
        self.sshd_dir = os.path.join(self.root, "sshd")  # root's: host key, config, log
        os.makedirs(self.sshd_dir, mode=0o700)
        self.controller_dir = os.path.join(self.root, "controller")  # the controller's key and known_hosts
        os.makedirs(self.controller_dir, mode=0o700)
        self.host_key = keygen(os.path.join(self.sshd_dir, "ssh_host_ed25519_key"), "hv-host")
        self.user_key = keygen(os.path.join(self.controller_dir, "id_ed25519"), "controller")
        self.known_hosts = os.path.join(self.controller_dir, "known_hosts")
        self.log = os.path.join(self.sshd_dir, "sshd.log")
        self.address = None
        self.proc = None
        self.fakes = []

    # --- life ---------------------------------------------------------------------------------
    def start(self, subnet=None):
        subnet = subnet or free_subnet()
        hosts = list(subnet.hosts())
        self.host_address, self.address = str(hosts[0]), str(hosts[1])
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns])
        _run(["ip", "link", "set", self.veth_ns, "netns", self.netns])
        _run(["ip", "addr", "add", "%s/30" % self.host_address, "dev", self.veth_host])
        _run(["ip", "link", "set", self.veth_host, "up"])
        for argv in (["ip", "addr", "add", "%s/30" % self.address, "dev", self.veth_ns],
                     ["ip", "link", "set", self.veth_ns, "up"], ["ip", "link", "set", "lo", "up"]):
            _run(["ip", "netns", "exec", self.netns] + argv)
        if _run(["id", "-u", self.user], check=False).returncode == 0:
            _run(["userdel", "-f", self.user], check=False)
        _run(["useradd", "--system", "--home-dir", self.home, "--create-home", "--shell", "/bin/sh", self.user])
        _run(["usermod", "-p", "*", self.user])  # no password, not locked ('!' would refuse the key login)
        ssh_dir = os.path.join(self.home, ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        with open(self.user_key + ".pub") as src, open(os.path.join(ssh_dir, "authorized_keys"), "w") as dst:
            dst.write(src.read())
        self.own(self.home)
        with open(self.known_hosts, "w") as f, open(self.host_key + ".pub") as pub:
            key_type, blob = pub.read().split()[:2]
            f.write("%s %s %s\n" % (self.address, key_type, blob))
        self.config = os.path.join(self.sshd_dir, "sshd_config")
        with open(self.config, "w") as f:
            f.write("\n".join([
                "Port 22", "ListenAddress %s" % self.address, "HostKey %s" % self.host_key,
                "AuthorizedKeysFile .ssh/authorized_keys", "PermitRootLogin no", "AllowUsers %s" % self.user,
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "PidFile none",
                "Subsystem sftp %s" % SFTP_SERVER, "LogLevel VERBOSE", "MaxStartups 100:30:200", "MaxSessions 100"]
                + ['SetEnv "%s=%s"' % item for item in sorted(self.env.items())] + [""]))
        return self.start_sshd()

    def start_sshd(self):
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f", self.config],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_listening(self.proc, self.address, 22, self.log, timeout=15)
        return self

    def stop_sshd(self):
        stop_process(self.proc)

    def stop(self):
        self.stop_sshd()
        for proc in self.fakes:
            stop_process(proc)
        for pid in _run(["ip", "netns", "pids", self.netns], check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _run(["ip", "link", "del", self.veth_host], check=False)
        _run(["ip", "netns", "del", self.netns], check=False)
        _run(["pkill", "-KILL", "-u", self.user], check=False)
        _run(["userdel", "-f", self.user], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- use ----------------------------------------------------------------------------------
    def run(self, argv, **kwargs):
        """``argv`` in the namespace as the hypervisor's user, in its home (a login-like environment)."""
        env = "env -i HOME=%s USER=%s PATH=/usr/sbin:/usr/bin:/sbin:/bin" % (self.home, self.user)
        return subprocess.run(["ip", "netns", "exec", self.netns, "runuser", "-u", self.user, "--"] + env.split()
                              + list(argv), capture_output=True, text=True, cwd=self.home, check=False, **kwargs)

    def mapping(self, **extra):
        """The ``vms`` inventory's ``hypervisors:`` entry for this host."""
        entry = {"name": self.name, "host": self.address, "user": self.user, "private_key_file": self.user_key,
                 "known_hosts_file": self.known_hosts, "python": "/usr/bin/python3"}
        entry.update(extra)
        return entry

    def logins(self):
        return logins(self.log)

    def in_netns(self, function):
        """``function()`` run by a thread that joined the namespace's network stack: a socket it binds listens
        inside the namespace (threads it starts inherit the namespace), while this process stays outside."""
        outcome = {}

        def body():
            fd = os.open("/run/netns/" + self.netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into %s" % self.netns)
                outcome["value"] = function()
            except BaseException as err:  # noqa: B902 - handed to the calling thread
                outcome["error"] = err
            finally:
                os.close(fd)
        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def fake_vm(self, name, port=2222):
        """A stand-in VM on this hypervisor: an sshd inside the namespace on its 127.0.0.1:``port`` only, with the
        files vmctl keeps for a VM (its key and a known_hosts in the QEMU backend's format) in the user's home.
        Returns ``(host vars' VM paths, sshd)``; the sshd logs in the hypervisor's own user."""
        base = os.path.join(self.data_dir, "vms", name)  # where vmctl keeps a VM's files
        os.makedirs(base, exist_ok=True)
        host_key = keygen(os.path.join(base, "ssh_host_ed25519_key"), "vm-host")
        user_key = keygen(os.path.join(base, "id_ed25519_generated"), "vm-user")
        authorized = os.path.join(base, "authorized_keys")
        shutil.copy(user_key + ".pub", authorized)
        known_hosts = os.path.join(base, "known_hosts")
        key_type, blob = open(host_key + ".pub").read().split()[:2]
        with open(known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s %s\n* %s %s\n" % (port, key_type, blob, key_type, blob))
        config = os.path.join(base, "sshd_config")
        log = os.path.join(base, "sshd.log")
        with open(config, "w") as f:
            f.write("\n".join([
                "Port %d" % port, "ListenAddress 127.0.0.1", "HostKey %s" % host_key, "AuthorizedKeysFile %s" % authorized,
                "AllowUsers %s" % self.user, "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UsePAM no", "PidFile none", "Subsystem sftp %s" % SFTP_SERVER, "LogLevel VERBOSE", ""]))
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f", config],
                                stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
        self.fakes.append(proc)
        vm = {"host": "127.0.0.1", "port": port, "user": self.user, "private_key": user_key, "known_hosts": known_hosts,
              "log": log, "host_key": host_key}
        # listening is checked from inside the namespace: the controller cannot reach it, which is the point
        # its record in the hypervisor's store (the noop backend: the record's state is the VM's state)
        subprocess.run([sys.executable, "-c", STORE_PUT, json.dumps(dict(
            id="fake-" + name, name=name, backend="noop", state="running", ssh_host_port=port, ssh_user=self.user,
            private_key_path=user_key, known_hosts=known_hosts))], check=True,
            env=dict(os.environ, XDG_DATA_HOME=os.path.dirname(self.data_dir)))
        self.own(self.data_dir)
        for _attempt in range(150):
            if "Server listening on 127.0.0.1 port %d" % port in open(log).read():
                return vm
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the stand-in VM's sshd did not listen: %s" % open(log).read()[-2000:])

    @property
    def data_dir(self):
        return os.path.join(self.home, ".local", "share", "vmctl")

    def own(self, top):
        """Give ``top`` and everything under it to the hypervisor's user."""
        entry = pwd.getpwnam(self.user)
        for root, dirs, files in os.walk(top):
            for path in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def jump(self):
        """The ``jump`` of an SshTarget (and the connection's hypervisor_* settings) for this host."""
        return {"name": self.name, "host": self.address, "port": 22, "user": self.user,
                "private_key_file": self.user_key, "known_hosts_file": self.known_hosts}
