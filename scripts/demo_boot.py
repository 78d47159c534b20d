"""Boot the test image through the engine, run a command over SSH, destroy the VM."""

import json
import subprocess
import sys
import time

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import resolve_accel
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.types import CloudInitConfig, SshConfig, VmSpec


def ssh(handle, command):
    argv = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + handle.known_hosts,
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes", "-i", handle.private_key_path,
            "-p", str(handle.ssh_host_port), "%s@127.0.0.1" % handle.ssh_user, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def main(manifest):
    with open(manifest) as f:
        image = json.load(f)["debian"]["path"]
    manager = VmManager()
    spec = VmSpec(name="demo", image_path=image, vcpus=2, memory_mb=1024,
                  cloud_init=CloudInitConfig(hostname="vmctl-demo", generate_key=True), ssh=SshConfig(user="vm"))
    print("demo: creating VM 'demo' from %s (accel %s)" % (image, resolve_accel(spec.accel)))
    manager.create(spec)
    try:
        begin = time.monotonic()
        handle = manager.start("demo")[0]
        print("demo: QEMU pid %d, SSH on 127.0.0.1:%d, waiting for the guest..." % (handle.pid, handle.ssh_host_port))
        while True:
            result = ssh(handle, "echo hostname: $(hostname); echo kernel: $(uname -sr)")
            if result.returncode == 0:
                break
            if time.monotonic() - begin > 300:
                raise SystemExit("demo: no SSH after 300s; see %s" % handle.console_log)
            time.sleep(2)
        print("demo: SSH up after %.1fs (host key pinned, StrictHostKeyChecking=yes)" % (time.monotonic() - begin))
        sys.stdout.write(result.stdout)
        handle = manager.stop("demo", timeout=60)[0]
        print("demo: stopped (%s)" % handle.extra.get("last_stop"))
    finally:
        manager.destroy("demo")
        print("demo: destroyed; store now holds %d VMs" % len(manager.list()))


if __name__ == "__main__":
    main(sys.argv[1])
