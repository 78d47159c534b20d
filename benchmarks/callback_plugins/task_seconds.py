# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only stdout callback: prints one JSON line mapping each task name to its seconds (start of the
task to its last host result), the failures, and the timeline: [task, start, end] in epoch seconds per task
started (end: its last host result, skipped ones included), so a benchmark can see the time between tasks."""

from __future__ import annotations

import json
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_seconds
type: stdout
short_description: seconds per task as JSON (benchmarks only)
description: Prints a JSON object of task name to seconds at the end of the run.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "task_seconds"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = {}
        self.current = None
        self.started = None
        self.failures = []
        self.timeline = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.current, self.started = task.get_name(), time.monotonic()
        now = time.time()
        self.timeline.append([self.current, now, now])

    def _done(self, result):
        self.seconds[self.current] = time.monotonic() - self.started
        self.timeline[-1][2] = time.time()

    def v2_runner_on_ok(self, result):
        self._done(result)

    def v2_runner_on_skipped(self, result):
        self.timeline[-1][2] = time.time()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result)
        self.failures.append("%s: %s" % (self.current, result._result.get("msg")))

    def v2_runner_on_unreachable(self, result):
        self._done(result)
        self.failures.append("%s: %s" % (self.current, result._result.get("msg")))

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"seconds": self.seconds, "failures": self.failures,
                                          "timeline": self.timeline}))
