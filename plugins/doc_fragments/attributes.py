# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type


class ModuleDocFragment:
    """The standard attributes of vmctl.core's modules; each module says its own C(support) of check and diff mode."""

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/vmctl.core.vm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - vmctl.core.vm
"""
