"""The KVM probe decides by QEMU's answer, not by the clock: on a loaded host (the demo with two busy
loops) a QEMU that takes seconds to reach its vCPU setup and then aborts ("failed to set MSR", as under
nested virtualization here) must mean TCG, and a slow QEMU that does answer must mean KVM."""

import os

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu import backend as qemu

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="the probe runs only with /dev/kvm")

SLOW_ABORT = """#!/bin/sh
cat >/dev/null
sleep 2
echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
exit 134
"""

SLOW_ANSWER = """#!/bin/sh
sleep 2
echo '{"QMP": {"version": {}, "capabilities": ["oob"]}}'
echo '{"return": {}}'
echo '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}'
cat >/dev/null
"""


@pytest.mark.parametrize("script, expected", [(SLOW_ABORT, False), (SLOW_ANSWER, True)], ids=["slow-abort", "slow-answer"])
def test_a_slow_qemu_is_judged_by_its_answer(tmp_path, monkeypatch, script, expected):
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text(script)
    binary.chmod(0o755)
    monkeypatch.setattr(qemu, "_KVM_PROBE", {})
    assert qemu.kvm_usable(str(binary)) is expected
