"""A real OpenSSH sshd on loopback for the connection tests and benchmarks (importable: ``from sshd_server import ...``).

``LoopbackSshd(directory).start()`` generates an Ed25519 host key and a user key, writes an sshd_config
(port on 127.0.0.1, ``AuthorizedKeysFile`` pointing at a file here, ``PermitRootLogin prohibit-password``,
``StrictModes no``, sftp-server as the SFTP subsystem, then ``extra_config`` lines) and runs ``/usr/sbin/sshd -D -e`` with its log
in ``sshd.log``. ``store_vm(name)`` records a VM pointing at it in the vmctl store (noop backend, running),
with a known_hosts file in the format the QEMU backend writes.
"""

import os
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path, comment="vmctl-test"):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return str(path)


def fingerprint(public_key_path):
    """``SHA256:…`` as ssh-keygen prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def wait_listening(proc, host, port, log, timeout=10):
    """Until ``proc`` (an sshd) accepts on ``host:port``; its log's tail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("sshd exited: %s" % open(log).read()[-2000:])
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sshd did not listen on %s:%d" % (host, port))


def stop_process(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def logins(log):
    """Number of successful public key logins in an sshd log (one per SSH handshake)."""
    try:
        with open(log) as f:
            return sum(1 for line in f if "Accepted publickey" in line)
    except FileNotFoundError:
        return 0


class LoopbackSshd:
    def __init__(self, directory, port=None, user="root", extra_config=()):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.user = user
        self.host_key = os.path.join(self.dir, "ssh_host_ed25519_key")
        self.user_key = os.path.join(self.dir, "id_ed25519")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self.config = os.path.join(self.dir, "sshd_config")
        self.log = os.path.join(self.dir, "sshd.log")
        self.proc = None
        if not os.path.exists(self.host_key):
            keygen(self.host_key, "vmctl-test-host")
            keygen(self.user_key, "vmctl-test-user")
            with open(self.user_key + ".pub") as src, open(self.authorized_keys, "w") as dst:
                dst.write(src.read())
        with open(self.config, "w") as f:
            f.write("\n".join([
                "Port %d" % self.port, "ListenAddress 127.0.0.1", "HostKey %s" % self.host_key,
                "AuthorizedKeysFile %s" % self.authorized_keys, "PermitRootLogin prohibit-password",
                "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "PidFile none", "Subsystem sftp %s" % SFTP_SERVER, "LogLevel VERBOSE", "MaxStartups 100:30:200",
                "MaxSessions 100",
            ] + list(extra_config) + [""]))

    @property
    def host_public(self):
        with open(self.host_key + ".pub") as f:
            return f.read().strip()

    def start(self, timeout=10):
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        wait_listening(self.proc, "127.0.0.1", self.port, self.log, timeout)
        return self

    def stop(self):
        stop_process(self.proc)

    def logins(self):
        """Number of successful public key logins so far (one per SSH handshake)."""
        return logins(self.log)

    def known_hosts_file(self, path, host_public=None):
        """A known_hosts in the QEMU backend's format (``[127.0.0.1]:PORT`` and ``*`` lines)."""
        from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.backend import QemuBackend
        from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
        handle = VmHandle(id="kh", name="kh", ssh_host_port=self.port)
        QemuBackend._write_known_hosts(handle, str(path), host_public or self.host_public)
        return str(path)

    def store_vm(self, name, work_dir, **changes):
        """Record a running (noop backend) VM that points at this sshd; returns the handle."""
        from ansible_collections.vmctl.core.plugins.module_utils import paths
        from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
        from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
        # a VM's files are derived from its name under the data dir (the store's paths are only cross-checks)
        del work_dir
        work_dir = paths.make_vm_dir(paths.vm_dir(name))
        os.makedirs(work_dir, exist_ok=True)
        values = dict(id="loop-" + name, name=name, backend="noop", state="running", work_dir=work_dir,
                      ssh_host_port=self.port, ssh_user=self.user, private_key_path=self.user_key,
                      known_hosts=self.known_hosts_file(os.path.join(work_dir, "known_hosts")),
                      console_log=os.path.join(work_dir, "console.log"))
        values.update(changes)
        return VmStore().put(VmHandle(**values))
