# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse and validate a 200-VM VMFile; prints the median time beside the target (< 0.5 s).

Run: . scripts/env.sh && python benchmarks/vmfile_parse.py [--vms 200] [--runs 7]
"""

import argparse
import os
import statistics
import tempfile
import time

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile

VM = '''
vm "vm-{i:04d}" {{
    image-url "https://cloud.example.org/images/debian-12-{i}.qcow2"
    image-checksum "sha256:{digest}"
    vcpus {vcpus}
    memory {memory}
    disk 20
    network "tap" {{
        bridge "br0"
    }}
    cloud-init {{
        hostname "vm-{i:04d}"
        ssh-key "key.pub"
    }}
    ssh {{
        user "admin"
        private-key "key"
    }}
    provision "shell" {{
        inline "sudo apt-get update && sudo apt-get install -y nginx"
    }}
    provision "file" {{
        source "files/app.conf"
        destination "/etc/app/app.conf"
    }}
    provision "shell" {{
        script "setup.sh"
    }}
}}
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for rel in ("key.pub", "key", "files/app.conf", "setup.sh"):
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w") as f:
                f.write("x")
        path = os.path.join(d, "VMFile.kdl")
        with open(path, "w") as f:
            f.write("".join(VM.format(i=i, digest="%064x" % i, vcpus=1 + i % 8, memory=512 * (1 + i % 8))
                            for i in range(args.vms)))
        times = []
        for _run in range(args.runs):
            begin = time.perf_counter()
            records = vmfile.load(path)
            times.append(time.perf_counter() - begin)
        assert len(records) == args.vms
    print("vmfile parse+validate: %d VMs, %d lines: median %.3f s (min %.3f s, %d runs)   target < 0.5 s   %s"
          % (args.vms, args.vms * VM.count("\n"), statistics.median(times), min(times), args.runs,
             "OK" if statistics.median(times) < 0.5 else "MISSED"))


if __name__ == "__main__":
    main()
