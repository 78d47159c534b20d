#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_console
short_description: Automate a vmctl virtual machine's serial console
version_added: 0.2.0
description:
  - Waits for a pattern on the serial console, sends keys, logs in on a getty and runs commands on the serial
    shell, for images without SSH and for watching a boot.
  - The console log is never consumed - every wait searches it from the VM's latest start, or from the offset
    O(since) that an earlier call returned - so two waits can match the same boot.
  - One task does, in this order, O(login), O(send), O(command) and O(wait_for) (each one optional).
author:
  - vmctl.core developers (@vmctl)
options:
  name:
    description: VM name.
    type: str
    required: true
  wait_for:
    description:
      - A Python regular expression to wait for in the console output (C(^) and C($) match at each line).
      - Searched from O(since); when O(send) is given and O(since) is not, from just before the keys were sent.
    type: str
  timeout:
    description: Seconds each wait (O(wait_for), the prompts of O(login), the end of O(command)) may take.
    type: int
    default: 60
  since:
    description:
      - Byte offset in the console log to search from (the RV(offset) of an earlier call).
      - Defaults to where the VM's latest start began.
    type: int
  send:
    description:
      - Text to type on the serial console. Escapes - C(\r) Enter, C(\n), C(\t), C(\e) Escape, C(\\), C(\xHH) a byte,
        C(\cX) Ctrl+X (C(\cc) is Ctrl+C) - and real control characters are sent as keys.
    type: str
  login:
    description: Log in on the console's getty as C(user) with C(password) (a shell already at its prompt is left as it is).
    type: dict
    suboptions:
      user:
        description: User name.
        type: str
        required: true
      password:
        description: Password.
        type: str
        required: true
  prompt:
    description:
      - A regular expression that matches the shell's prompt at the end of a line of output (for O(login)).
      - The default matches C(#) or C($), a space, and terminal queries a shell may print after its prompt.
    type: str
    default: '[#$] ?(?:\x1b\[[0-9;?]*[A-Za-z])*$'
  command:
    description:
      - One shell command line to run on the serial shell (logged in already, or with O(login)). Its output is
        framed by unique markers; RV(stdout), RV(rc) and RV(seconds) are returned.
    type: str
notes:
  - Keys are sent through the VM's console socket; while C(vmctl console) is attached to the same VM, they wait
    until it detaches.
seealso:
  - module: vmctl.core.vm_state
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
attributes:
  check_mode:
    description: O(wait_for) runs in check mode (it only reads).
    support: partial
    details: O(send), O(login) and O(command) are skipped in check mode and reported as changes.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Wait until the guest has booted
  vmctl.core.vm_console:
    name: tiny
    wait_for: 'login:'
    timeout: 120
  register: boot

- name: Log in and run a command on the serial shell
  vmctl.core.vm_console:
    name: tiny
    login: {user: root, password: "{{ console_password }}"}
    command: uname -r
  register: uname

- name: Interrupt what runs, then wait for the prompt after the last match
  vmctl.core.vm_console:
    name: tiny
    send: '\cc'
    wait_for: '# $'
    since: "{{ uname.offset }}"
"""

RETURN = r"""
matched:
  description: Whether O(wait_for) (or the command's end marker) matched.
  returned: always
  type: bool
groups:
  description: The groups of the match (null for a group that did not take part).
  returned: always
  type: list
  elements: str
offset:
  description: Byte offset in the console log just past the match (or the end of the log); pass it as O(since).
  returned: always
  type: int
lines:
  description: The console lines from the search's start to RV(offset).
  returned: always
  type: list
  elements: str
stdout:
  description: The output of O(command) (carriage returns of the serial line removed).
  returned: when O(command) is given
  type: str
rc:
  description: The exit status of O(command).
  returned: when O(command) is given
  type: int
seconds:
  description: Seconds O(command) took (sent to its end marker), or the wait took.
  returned: always
  type: float
logged_in:
  description: Whether O(login) logged in (false when a shell was at its prompt already).
  returned: when O(login) is given
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils.console import DEFAULT_PROMPT, Console, decode_keys
from ansible_collections.vmctl.core.plugins.module_utils.errors import ConsoleTimeout
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import fail_from_error, run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            wait_for=dict(type="str"),
            timeout=dict(type="int", default=60),
            since=dict(type="int"),
            send=dict(type="str"),
            login=dict(type="dict", options=dict(user=dict(type="str", required=True),
                                                 password=dict(type="str", required=True, no_log=True))),
            prompt=dict(type="str", default=DEFAULT_PROMPT),
            command=dict(type="str"),
        ),
        required_one_of=[("wait_for", "send", "login", "command")],
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    p = module.params
    console = Console(VmManager(), p["name"])
    acts = [key for key in ("login", "send", "command") if p[key] is not None]
    keys = decode_keys(p["send"]) if p["send"] is not None else None  # a bad escape fails in check mode too
    result = dict(changed=bool(acts), matched=False, groups=[], offset=console.start_offset(p["since"]), lines=[], seconds=0.0)
    try:
        if acts and module.check_mode:
            acts = []
        since = p["since"]
        if "login" in acts:
            result.update(console.login(p["login"]["user"], p["login"]["password"], p["timeout"], p["prompt"]))
        if "send" in acts:
            sent_at = console.send(keys)
            since = sent_at if since is None else since
        if "command" in acts:
            result.update(console.command(p["command"], p["timeout"]))
        if p["wait_for"] is not None:
            result.update(console.wait_for(p["wait_for"], p["timeout"], since))
    except ConsoleTimeout as err:
        fail_from_error(module, err, **dict(result, **err.details.get("result", {})))
    return result


if __name__ == "__main__":
    main()
