# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress for modules whose work is long (a download, the readiness wait).

A module cannot print while it runs. Its action plugin gives it a ``progress_file``, runs it in a
thread and shows each line the module appends, as it comes, at default verbosity. Progress is shown
when the module runs on the controller (the local connection: the ``vm*`` tasks are delegated to
localhost); elsewhere the module runs as usual and its result carries the lines.
"""

from __future__ import annotations

__metaclass__ = type

import os
import shutil
import tempfile
import threading

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError

display = Display()

POLL_INTERVAL = 1.0


class ProgressAction(ActionBase):
    """Runs the task's own module; lines it appends to ``progress_file`` are displayed while it runs."""

    def prepare(self, args):
        """The module's arguments, checked or completed on the controller first (a subclass may refuse them)."""
        return args

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            args = self.prepare(dict(self._task.args))
        except VmctlError as err:
            result.update(failed=True, msg=err.message, hint=err.hint, error=err.to_dict())
            return result
        if getattr(self._connection, "transport", None) not in ("local", "ansible.builtin.local"):
            args.pop("progress_file", None)
            result.update(self._execute_module(module_args=args, task_vars=task_vars))
            return result
        directory = tempfile.mkdtemp(prefix="vmctl-progress-")
        path = args["progress_file"] = os.path.join(directory, "progress")
        outcome = {}

        def work():
            try:
                outcome["result"] = self._execute_module(module_args=args, task_vars=task_vars)
            except BaseException as err:  # shown as the task's failure below
                outcome["error"] = err

        worker = threading.Thread(target=work, name="vmctl-module", daemon=True)
        worker.start()
        offset = 0
        try:
            while worker.is_alive():
                worker.join(POLL_INTERVAL)
                offset = _show_new_lines(path, offset)
            _show_new_lines(path, offset)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if "error" in outcome:
            raise outcome["error"]
        result.update(outcome["result"])
        return result


def _show_new_lines(path, offset):
    """Display the whole lines appended to ``path`` since ``offset``; return the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode("utf-8", "replace").splitlines():
        display.display(line)
    return offset + end


__all__ = ["ProgressAction"]
