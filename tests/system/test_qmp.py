"""The QMP client against a real QEMU process."""

import os
import signal
import time

import pytest
from support.guests import tiny_spec

from ansible_collections.vmctl.core.plugins.module_utils.errors import QmpConnectFailed, QmpError, QmpTimeout
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.backends.qemu.qmp import QmpClient

pytestmark = pytest.mark.slow


@pytest.fixture
def running(test_images, tmp_path):
    manager = VmManager()
    manager.create(tiny_spec(test_images, tmp_path))
    handle = manager.start("tiny")[0]
    yield handle
    if handle.pid:
        os.kill(handle.pid, signal.SIGCONT)
    manager.destroy("tiny")


def test_greeting_capabilities_and_ids(running):
    with QmpClient(running.qmp_socket, timeout=5) as qmp:
        assert "QMP" in qmp.greeting and "version" in qmp.greeting["QMP"]
        assert qmp.query_status()["status"] == "running"
        qmp.stop()
        assert qmp.query_status()["status"] == "paused"
        assert any(e["event"] == "STOP" for e in qmp.events)  # events set aside, not mistaken for replies
        qmp.cont()
        assert qmp.query_status()["status"] == "running"


def test_error_reply_is_an_error(running):
    with QmpClient(running.qmp_socket, timeout=5) as qmp:
        with pytest.raises(QmpError) as exc:
            qmp.execute("no-such-command")
        assert "no-such-command" in str(exc.value) and exc.value.details["qmp_class"] == "CommandNotFound"
        assert qmp.query_status()["status"] == "running"  # the session is still usable


def test_monitor_that_does_not_answer_times_out(running):
    qmp = QmpClient(running.qmp_socket, timeout=2).connect()
    try:
        os.kill(running.pid, signal.SIGSTOP)  # the real QEMU, frozen: its monitor can't answer
        begin = time.monotonic()
        with pytest.raises(QmpTimeout) as exc:
            qmp.query_status()
        assert 1.5 < time.monotonic() - begin < 5
        assert running.qmp_socket in str(exc.value) and "did not answer" in str(exc.value)
        assert exc.value.code == "vmctl.qemu.qmp_timeout"
    finally:
        os.kill(running.pid, signal.SIGCONT)
        qmp.close()


def test_connect_to_missing_socket(tmp_path):
    with pytest.raises(QmpConnectFailed) as exc:
        QmpClient(str(tmp_path / "nope.sock"), timeout=1).connect()
    assert "nope.sock" in str(exc.value) and "console.log" in exc.value.hint
