# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every vmctl.core module shares: turning engine errors into ``fail_json``."""

from __future__ import annotations

__metaclass__ = type

import traceback

from ansible_collections.vmctl.core.plugins.module_utils import paths
from ansible_collections.vmctl.core.plugins.module_utils.errors import VmctlError, no_space


def fail_from_error(module, err, **result):
    """``fail_json`` with the error's message, code and hint (``error`` key) and any partial result."""
    if "problems" in err.details:  # a VMFile's problems, one per mistake, for playbooks to show
        result.setdefault("problems", err.details["problems"])
    module.fail_json(msg=str(err), error=err.to_dict(), **result)


def run_module(module, body):
    """Call ``body(module)`` (returns the result dict) and exit; engine errors become clean failures."""
    try:
        result = body(module)
    except VmctlError as err:
        fail_from_error(module, err)
    except Exception as err:  # an engine bug: show it with its traceback (a full disk is not one)
        full = no_space(err, paths.data_dir())
        if full is not None:
            fail_from_error(module, full)
        module.fail_json(msg="internal error: %s" % err, exception=traceback.format_exc())
    module.exit_json(**result)
