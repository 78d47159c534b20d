# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vm with live progress lines while it downloads its image, and ``cloud_init: false`` / ``ssh: false`` understood.

ansible-core's argument check fails with "argument of type 'bool' is not iterable" on a boolean given for an
option with suboptions, before the module can say anything; the settings blocks are read here first
(``specs.switch_blocks``): ``false`` means none, ``true`` the block's defaults, anything else a clear error.
"""

from __future__ import annotations

__metaclass__ = type

from ansible_collections.vmctl.core.plugins.module_utils.specs import switch_blocks
from ansible_collections.vmctl.core.plugins.plugin_utils.module_progress import ProgressAction


class ActionModule(ProgressAction):
    def prepare(self, args):
        return switch_blocks(args)
