"""Hypervisors for the tests: network namespaces, each with its own sshd, Unix user, home and data directory.

``NetnsHypervisor(index).start()`` makes namespace ``vmctl-hv<index>-<pid>`` joined to the host by a veth pair
on a /30 that no route of the host uses (the host end .1, the namespace end .2: these addresses exist only
on the pair), a system user ``vmhv<index>-<pid>`` whose home is a fresh directory under /tmp (pytest's own
tmp is root's 0700), and a real OpenSSH sshd inside the namespace on the namespace end, port 22, with its own
host key. The controller logs in with ``user_key`` and checks the host key with ``known_hosts``. ``stop()``
removes the namespace, the user and the home. ``run(argv)`` runs a command in the namespace as the user.
"""

import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile

from support.sshd_server import SFTP_SERVER, SSHD, keygen, logins, stop_process, wait_listening

BASE = ipaddress.ip_network("10.216.0.0/16")


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


class NetnsHypervisor:
    def __init__(self, index):
        self.index = index
        self.name = "hv%d" % index
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
        entry = pwd.getpwnam(self.user)
        for root, dirs, files in os.walk(self.home):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, entry.pw_uid, entry.pw_gid)
        with open(self.known_hosts, "w") as f, open(self.host_key + ".pub") as pub:
            key_type, blob = pub.read().split()[:2]
            f.write("%s %s %s\n" % (self.address, key_type, blob))
        self.config = os.path.join(self.sshd_dir, "sshd_config")
        with open(self.config, "w") as f:
            f.write("\n".join([
                "Port 22", "ListenAddress %s" % self.address, "HostKey %s" % self.host_key,
                "AuthorizedKeysFile .ssh/authorized_keys", "PermitRootLogin no", "AllowUsers %s" % self.user,
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "PidFile none",
                "Subsystem sftp %s" % SFTP_SERVER, "LogLevel VERBOSE", "MaxStartups 100:30:200", "MaxSessions 100", ""]))
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
