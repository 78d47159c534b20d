# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress lines of long work (a download, the readiness wait) for whoever shows them.

A module cannot print while it runs; it appends each line to a ``progress_file`` that its action
plugin (``plugin_utils.module_progress``) reads and shows as the task runs.
"""

from __future__ import annotations

__metaclass__ = type

import os
import time


class ProgressFile:
    """``with ProgressFile(path) as report: report("line")``: appends lines (a no-op without a path)."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def __enter__(self):
        if self.path:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        return self

    def __call__(self, line):
        if self._fd is not None:
            os.write(self._fd, (" ".join(str(line).splitlines()) + "\n").encode("utf-8", "replace"))

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return False


def download_text(done, total, seconds):
    """``37% (180.0 MB of 486.0 MB) at 95.0 MB/s`` (or without the share when the size is unknown)."""
    from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
    rate = human_size(done / max(seconds, 1e-3))
    if total:
        return "%d%% (%s of %s) at %s/s" % (100 * done // total, human_size(done), human_size(total), rate)
    return "%s at %s/s" % (human_size(done), rate)


class DownloadProgress:
    """A ``progress(done, total)`` callback for a pull that reports ``label: <download_text>`` about every
    ``every`` seconds, and once at the end of the body."""

    def __init__(self, label, report, every=5.0, clock=time.monotonic):
        self.label, self.report, self.every, self.clock = label, report, every, clock
        self.begin = self.shown = clock()

    def __call__(self, done, total):
        now = self.clock()
        if now - self.shown < self.every and not (total and done >= total):
            return
        self.shown = now
        self.report("%s: %s" % (self.label, download_text(done, total, now - self.begin)))


__all__ = ["ProgressFile", "DownloadProgress", "download_text"]
