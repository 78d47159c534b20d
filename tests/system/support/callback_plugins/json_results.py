# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: prints every task's per-host results as one JSON document at the end
(the json callback is not part of ansible-core any more)."""

from __future__ import annotations

import json
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: json_results
type: stdout
short_description: task results as JSON (tests only)
description:
  - Prints every task result per host as one JSON document at the end. Each host's result also has
    the task's name as templated for that host (C(_task)) and when that host's run of the task began
    and ended (C(_started), C(_ended), seconds since the epoch).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_results"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays = []
        self.started = {}
        self.entries = {}

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        if not self.plays:
            self.plays.append({"play": {"name": ""}, "tasks": []})
        self._entry(task)  # the free strategy starts a task once per host: one entry

    def _entry(self, task):
        if task._uuid not in self.entries:
            self.entries[task._uuid] = {"task": {"name": task.get_name()}, "hosts": {}}
            self.plays[-1]["tasks"].append(self.entries[task._uuid])
        return self.entries[task._uuid]

    def v2_runner_on_start(self, host, task):
        self.started[(host.get_name(), task._uuid)] = time.time()

    def _record(self, result, **flags):
        data = dict(result._result)
        data.update(flags)
        host, uuid = result._host.get_name(), result._task._uuid
        # the task's name as templated for this host, and when this host's run of it began and ended
        data.update(_task=result._task.get_name(), _started=self.started.get((host, uuid)), _ended=time.time())
        self._entry(result._task)["hosts"][host] = data

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"plays": self.plays}, default=str))
