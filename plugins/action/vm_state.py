# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vm_state with live progress lines while it waits for SSH (see plugin_utils.module_progress)."""

from __future__ import annotations

__metaclass__ = type

from ansible_collections.vmctl.core.plugins.plugin_utils.module_progress import ProgressAction


class ActionModule(ProgressAction):
    pass
