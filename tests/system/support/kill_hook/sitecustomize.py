"""Test-only fault injection: SIGKILL this process at an exact step of the engine, with no hook in
the engine itself. On PYTHONPATH (tests/system/support/kill_hook), Python imports this file at start-up; it
does nothing unless VMCTL_TEST_KILL_AT is set and this process is the one named by VMCTL_TEST_KILL_WHO:

    VMCTL_TEST_KILL_AT="module_utils/store.py:VmStore._write:return:2"
        file suffix : function qualname : call|return : which occurrence (1 = the first)
    VMCTL_TEST_KILL_WHO=cli      the `vmctl` executable
    VMCTL_TEST_KILL_WHO=module   an Ansible module run (the AnsiballZ process on the managed host)

A profile function (sys.setprofile, also for new threads) watches every Python call and return and
SIGKILLs the process at the named one, so the engine sees a kill -9 exactly there. When the kill
point is reached, the file named by VMCTL_TEST_KILL_MARK (if set) is created first, so the test
knows the kill happened at that step (and not earlier, or not at all).

With VMCTL_TEST_KILL_PIDFILE set, the process named in that pidfile (a VM's QEMU) is SIGKILLed at the
point instead, and this process carries on: a QEMU that dies at that exact step of the command."""

import os
import signal
import sys
import threading


def _who():
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 == "vmctl":
        return "cli"
    if argv0.startswith("AnsiballZ_"):
        return "module"
    return None


def _arm(spec):
    suffix, qualname, event, nth = spec.split(":")
    remaining = [int(nth)]
    mark = os.environ.get("VMCTL_TEST_KILL_MARK")

    def watch(frame, what, arg):
        if what != event:
            return
        code = frame.f_code
        if code.co_qualname != qualname or not code.co_filename.endswith(suffix):
            return
        remaining[0] -= 1
        if remaining[0] == 0:
            if mark:
                with open(mark, "w") as f:
                    f.write("%s %s\n" % (spec, os.getpid()))
            pidfile = os.environ.get("VMCTL_TEST_KILL_PIDFILE")
            if pidfile:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip()), signal.SIGKILL)
                sys.setprofile(None)
                threading.setprofile(None)
                return
            os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(watch)
    threading.setprofile(watch)


if os.environ.get("VMCTL_TEST_KILL_AT") and _who() == os.environ.get("VMCTL_TEST_KILL_WHO"):
    _arm(os.environ["VMCTL_TEST_KILL_AT"])
