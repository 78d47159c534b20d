"""A create killed (SIGKILL) or interrupted (Ctrl-C) half-way leaves the store consistent, and the next
create of the same spec converges. The crash is made at a precise point by replacing the seed ISO
writer in a child process; everything else (store, qemu-img, keys) is real."""

import json
import os
import signal
import subprocess
import sys

import pytest
from support.guests import debian_spec

from ansible_collections.vmctl.core.plugins.module_utils.images import qemu_img
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.model import VmState

CHILD = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[3])
from support.guests import debian_spec
from ansible_collections.vmctl.core.plugins.module_utils.guest import cloudinit
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager

def crash(*args, **kwargs):  # after the overlay, keys and store entry exist, before the seed ISO
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt

cloudinit.write_seed_iso = crash
with open(sys.argv[2]) as f:
    VmManager().create(debian_spec(json.load(f), name="half"))
"""


def create_in_child(how):
    tests = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, "-c", CHILD, how, os.environ["VMCTL_TEST_IMAGES"], tests],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_an_interrupted_create_converges_on_the_next_run(test_images, vmctl_data_home, how):
    proc = create_in_child(how)
    manager = VmManager()
    work_dir = os.path.join(str(vmctl_data_home), "vms", "half")
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
        # the entry says the VM is half made, the files made so far are whole
        assert manager.get("half").state == VmState.PREPARING
        assert os.path.exists(os.path.join(work_dir, "overlay.qcow2")) and not os.path.exists(os.path.join(work_dir, "seed.iso"))
        assert [f for f in os.listdir(work_dir) if f.endswith(".tmp")] == []
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
        # Ctrl-C: nothing is left behind
        assert "half" not in manager.list() and not os.path.exists(work_dir)
    json.load(open(os.path.join(str(vmctl_data_home), "vms.json")))  # the store is whole JSON

    handle, created = manager.create(debian_spec(test_images, name="half"))
    assert created and handle.state == VmState.PREPARED and manager.live_state("half") == VmState.PREPARED
    assert os.path.getsize(handle.seed_iso_path) > 0 and os.path.exists(handle.known_hosts)
    assert qemu_img.info(handle.overlay_path)["format"] == "qcow2"
    assert manager.create(debian_spec(test_images, name="half")) == (manager.get("half"), False)
    manager.destroy("half")
    assert "half" not in manager.list() and not os.path.exists(work_dir)
