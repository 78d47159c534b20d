"""proc.run, the one runner of host tools.

Bad input: a tool that is not installed, a tool that fails, a tool that hangs. They get: ToolMissing with the
package to install (or the caller's hint); the caller's error class with the tool's stderr, argv and exit code;
the caller's error naming the timeout.
"""

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import proc
from ansible_collections.vmctl.core.plugins.module_utils.errors import OverlayFailed, ToolMissing, VmctlError


def test_a_missing_tool_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as err:
        proc.run(["qemu-img", "info", "x"])
    assert "apt install qemu-utils" in err.value.hint and err.value.details["tool"] == "qemu-img"
    with pytest.raises(ToolMissing) as err:
        proc.run(["zoneadm", "list"], missing_hint="This command exists on illumos hosts only")
    assert err.value.hint == "This command exists on illumos hosts only"


def test_a_failure_carries_the_tools_stderr_in_the_callers_class():
    with pytest.raises(OverlayFailed) as err:
        proc.run(["sh", "-c", "echo 'no space left' >&2; exit 3"], error=OverlayFailed, what="qemu-img create x")
    assert err.value.message == "qemu-img create x failed (exit 3): no space left"
    assert err.value.details == {"argv": ["sh", "-c", "echo 'no space left' >&2; exit 3"], "rc": 3}


def test_unchecked_runs_return_the_result_and_input_reaches_the_tool():
    result = proc.run(["sh", "-c", "cat; echo err >&2; exit 2"], check=False, input=b"in\n", text=False)
    assert result == proc.Result(2, b"in\n", b"err\n")
    assert proc.run(["sh", "-c", "cat"]).stdout == ""  # without input, stdin is empty (never the caller's)


def test_a_hung_tool_is_a_timeout_of_the_callers_class():
    with pytest.raises(VmctlError, match="sleep 5 timed out after 0.2s"):
        proc.run(["sleep", "5"], timeout=0.2)
