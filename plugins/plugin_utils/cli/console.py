# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attach a terminal (or any pair of file descriptors) to a VM's serial console.

The stream comes from the VM's backend (``VmManager.open_console``): QEMU's console is a unix
socket (``backends.base.connect_unix``), propolis-server's a websocket. Bytes from the input go to the guest
unchanged, except the escape byte (Ctrl+], 0x1d) that detaches.
A terminal input is put in raw mode while attached (so Ctrl+C reaches the guest) and restored after.
"""

from __future__ import annotations

__metaclass__ = type

import contextlib
import os
import select
import sys

from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import EXIT_OK, command, name_arg, note, out, vm_manager


ESCAPE = b"\x1d"  # Ctrl+]

DETACHED = "detached"        # the escape byte was typed
CLOSED = "closed"            # the guest side went away (the VM stopped)


@contextlib.contextmanager
def _raw(fd):
    """Raw mode on a terminal ``fd`` for the duration; nothing for pipes and files."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(sock, in_fd, out_fd, escape=ESCAPE):
    """Copy ``in_fd`` -> ``sock`` and ``sock`` -> ``out_fd`` until the escape byte or the stream closes.

    ``sock`` is a socket or a stream like it (``recv`` may return ``None``: nothing to show yet).
    Returns DETACHED or CLOSED. At the end of the input the output keeps flowing (like ``tail -f``).
    """
    reading_input = True
    with _raw(in_fd):
        while True:
            watch = [sock] + ([in_fd] if reading_input else [])
            ready = select.select(watch, [], [])[0]
            if sock in ready:
                data = sock.recv(65536)
                if data == b"":
                    return CLOSED
                if data:
                    _write_all(out_fd, data)
            if reading_input and in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    reading_input = False
                    continue
                head, found, _rest = data.partition(escape)
                if head:
                    sock.sendall(head)
                if found:
                    return DETACHED


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


# --- vmctl console ----------------------------------------------------------------------------------

def cmd_console(args):
    if args.wait_for is not None or args.send is not None:
        return _automate(args)
    manager = vm_manager()
    sock = manager.open_console(args.name)
    note("Connected to the serial console of %s. Press Ctrl+] to detach." % args.name)
    try:
        outcome = relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    finally:
        sock.close()
    # \r: the terminal was in raw mode, the cursor may be anywhere on the line
    note("\r\n[detached from %s]" % args.name if outcome == DETACHED else "\r\n[console of %s closed: the VM stopped]" % args.name)
    return EXIT_OK


def _automate(args):
    """--send, then --wait-for (from before the keys were sent, or --since): the matched lines on stdout, the
    offset to pass as --since next on stderr (``offset N``)."""
    from ansible_collections.vmctl.core.plugins.module_utils.console import Console, decode_keys
    console = Console(vm_manager(), args.name)
    since = console.start_offset(args.since)
    if args.send is not None:
        sent_at = console.send(decode_keys(args.send))
        since = sent_at if args.since is None else since
    if args.wait_for is None:
        note("offset %d" % console.size())
        return EXIT_OK
    found = console.wait_for(args.wait_for, args.timeout, since)
    for line in found["lines"]:
        out(line)
    note("offset %d" % found["offset"])
    return EXIT_OK


@command("console", "Attach to a VM's serial console", """\
Shows what the guest prints on its serial port and sends what you type. Press Ctrl+] to detach.
The console log (vmctl log NAME --console) has what was printed before you attached.

For scripts: --send types keys (escapes: \\r Enter, \\n, \\t, \\e Escape, \\xHH, \\cX Ctrl+X), --wait-for
waits until a regular expression appears in the console output since the VM's latest start (or since
--send, or --since); it prints the lines up to the match, and 'offset N' on stderr for the next --since.
Nothing is consumed: two waits can match the same boot. A wait that times out exits with 5.

examples:
  vmctl console myvm
  vmctl console myvm --wait-for 'login:' --timeout 120
  vmctl console myvm --send 'root\\r' --wait-for 'Password:'
""")
def _console_args(p):
    name_arg(p)
    p.add_argument("--wait-for", metavar="REGEX", help="wait until REGEX appears on the console, then exit")
    p.add_argument("--timeout", type=int, default=60, metavar="S", help="seconds --wait-for may take (default 60)")
    p.add_argument("--since", type=int, metavar="OFFSET", help="search from this console log offset (from an earlier call)")
    p.add_argument("--send", metavar="TEXT", help="type TEXT on the console (escapes as above)")
    return cmd_console
