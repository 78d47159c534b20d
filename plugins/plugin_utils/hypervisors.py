# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hypervisors other than the controller, as the ``vms`` inventory reads them: one SSH command per host.

``read_views(hypervisors)`` logs in to each hypervisor (in parallel) with its host key checked against its
known_hosts file, and runs ``module_utils/hypervisor_view.py`` there with this collection's module_utils sent
as a zip on stdin, as AnsiballZ sends a module: the hypervisor needs its Python and nothing of vmctl or
Ansible. ``localhost`` is the controller's own store, read in this process. Each answer is checked here
as a store is (``store.record_handle``): nothing that comes over the wire is trusted.
"""

from __future__ import annotations

__metaclass__ = type

import concurrent.futures
import io
import json
import os
import shlex
import zipfile

from ansible_collections.vmctl.core.plugins.module_utils import hypervisor_view
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, VmctlError
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore, record_handle
from ansible_collections.vmctl.core.plugins.module_utils.checks import validate_name

LOCAL = "localhost"
MAX_ANSWER = 64 * 1024 * 1024  # a hypervisor's answer larger than this is refused, not parsed
MODULE_UTILS = os.path.dirname(os.path.abspath(hypervisor_view.__file__))
PACKAGE = "ansible_collections/vmctl/core/plugins/module_utils"

# Runs on the hypervisor: the zip on stdin goes to a private temporary file that is put on sys.path.
BOOTSTRAP = """\
import os, shutil, sys, tempfile
d = tempfile.mkdtemp(prefix="vmctl-view-")
try:
    p = os.path.join(d, "vmctl.zip")
    with open(p, "wb") as f:
        f.write(sys.stdin.buffer.read())
    sys.path.insert(0, p)
    from ansible_collections.vmctl.core.plugins.module_utils import hypervisor_view
    code = hypervisor_view.main(sys.argv[1:])
finally:
    shutil.rmtree(d, ignore_errors=True)
sys.exit(code)
"""


class HypervisorError(VmctlError):
    code = "vmctl.hypervisor.unreachable"


HYPERVISOR_KEYS = ("name", "host", "port", "user", "private_key_file", "known_hosts_file", "data_dir", "python")


class Hypervisor:
    """Where a store lives: ``name`` (an inventory hostname), and for another host how to log in to it."""

    def __init__(self, name, host=None, port=22, user=None, private_key_file=None, known_hosts_file=None,
                 data_dir=None, python="python3"):
        self.name = name
        self.host = host or name
        self.port = int(port or 22)
        self.user = user
        self.private_key_file = os.path.expanduser(private_key_file) if private_key_file else None
        self.known_hosts_file = os.path.expanduser(known_hosts_file or "~/.ssh/known_hosts")
        self.data_dir = data_dir
        self.python = python or "python3"

    @property
    def local(self):
        return self.name == LOCAL

    def hostvars(self):
        """What a VM on this hypervisor carries in the inventory, for the connection to go through it."""
        if self.local:
            return {"vmctl_hypervisor": self.name}
        return {"vmctl_hypervisor": self.name, "ansible_vmctl_hypervisor": self.name,
                "ansible_vmctl_hypervisor_host": self.host, "ansible_vmctl_hypervisor_port": self.port,
                "ansible_vmctl_hypervisor_user": self.user,
                "ansible_vmctl_hypervisor_private_key_file": self.private_key_file,
                "ansible_vmctl_hypervisor_known_hosts_file": self.known_hosts_file}


def from_entry(entry, data_dir=None):
    """The Hypervisor of one element of the ``vms`` inventory's ``hypervisors`` option that is ``localhost`` (this
    host's store, under ``data_dir``) or a mapping; ``None`` for a name of another inventory source (the plugin looks
    those up in the inventory read so far). InvalidSpec for anything else."""
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - set(HYPERVISOR_KEYS))
        if unknown or not isinstance(entry.get("name"), str):
            raise InvalidSpec("a hypervisor mapping needs a name and knows only %s; got %s"
                              % (", ".join(HYPERVISOR_KEYS), ", ".join(unknown) or "no name"))
        return Hypervisor(**entry)
    if entry == LOCAL:
        return Hypervisor(LOCAL, data_dir=data_dir)
    if isinstance(entry, str):
        return None
    raise InvalidSpec("a hypervisor is a name or a mapping, not %r" % (entry,))


def payload():
    """The zip of this collection's module_utils that the bootstrap imports (built once per process)."""
    global _PAYLOAD
    if _PAYLOAD is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for package in ("ansible_collections", "ansible_collections/vmctl", "ansible_collections/vmctl/core",
                            "ansible_collections/vmctl/core/plugins"):
                archive.writestr(package + "/__init__.py", "")
            for root, dirs, files in os.walk(MODULE_UTILS):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for name in sorted(files):
                    if name.endswith(".py"):
                        path = os.path.join(root, name)
                        archive.write(path, PACKAGE + "/" + os.path.relpath(path, MODULE_UTILS))
        _PAYLOAD = buffer.getvalue()
    return _PAYLOAD


_PAYLOAD = None


def command(hypervisor, live_state=True):
    argv = [hypervisor.python, "-c", BOOTSTRAP]
    if hypervisor.data_dir:
        argv += ["--data-dir", hypervisor.data_dir]
    if not live_state:
        argv.append("--no-live-state")
    return " ".join(shlex.quote(arg) for arg in argv)


def _unreachable(hypervisor, err):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import without_vm_prefix
    message = without_vm_prefix(getattr(err, "message", None) or str(err), hypervisor.name)  # the SSH layer names its peer a VM
    where = "%s@%s:%d" % (hypervisor.user, hypervisor.host, hypervisor.port)
    hint = getattr(err, "hint", None) or "Check that the hypervisor is up and reachable over SSH with this user, key and known_hosts file"
    return HypervisorError("hypervisor %s (%s): %s" % (hypervisor.name, where, message), hint=hint, name=hypervisor.name)


def _run_remote(hypervisor, live_state, timeout):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.session import SshSession
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh.target import SshTarget
    if not hypervisor.user or not hypervisor.private_key_file:
        raise HypervisorError("hypervisor %s: no %s to log in with" % (
            hypervisor.name, "user" if not hypervisor.user else "private key file"),
            hint="Give the hypervisor's user and private_key_file (or ansible_user and ansible_ssh_private_key_file)",
            name=hypervisor.name)
    target = SshTarget(hypervisor.name, hypervisor.host, hypervisor.port, hypervisor.user,
                       hypervisor.private_key_file, hypervisor.known_hosts_file)
    try:
        session = SshSession.attempt(target, SshSession.credentials(target), timeout)
    except VmctlError as err:
        raise _unreachable(hypervisor, err)
    except Exception as err:  # the login's retryable failures: refused, reset, no route
        raise _unreachable(hypervisor, err)
    try:
        status, out, err, _signal = session.run(command(hypervisor, live_state), stdin=payload(), timeout=timeout)
    except VmctlError as error:
        raise _unreachable(hypervisor, error)
    finally:
        session.close()
    if len(out) > MAX_ANSWER:
        raise HypervisorError("hypervisor %s: its answer is %d bytes, more than %d" % (hypervisor.name, len(out), MAX_ANSWER),
                              name=hypervisor.name)
    try:
        answer = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode("utf-8", "replace").strip()[-500:]
        raise HypervisorError("hypervisor %s: %s exited %s without an answer%s" % (
            hypervisor.name, hypervisor.python, status, ": " + tail if tail else ""),
            hint="The hypervisor needs Python 3.8 or later as %r (set python, or ansible_python_interpreter)"
                 % hypervisor.python, name=hypervisor.name)
    if not isinstance(answer, dict):
        raise HypervisorError("hypervisor %s: its answer is not an object" % hypervisor.name, name=hypervisor.name)
    if "error" in answer:
        raise HypervisorError("hypervisor %s: %s" % (hypervisor.name, answer["error"]), hint=answer.get("hint") or None,
                              name=hypervisor.name)
    return answer


def _checked(hypervisor, answer):
    """``(views, bad)``: each VM re-checked here, with its handle rebuilt from its record."""
    vms, bad = answer.get("vms"), answer.get("bad") or {}
    store_path = answer.get("store")
    if not isinstance(vms, list) or not isinstance(bad, dict) or not isinstance(store_path, str) \
            or not os.path.isabs(store_path):
        raise HypervisorError("hypervisor %s: its answer does not have the form of a store view" % hypervisor.name,
                              name=hypervisor.name)
    views = []
    for view in vms:
        if not isinstance(view, dict):
            continue
        try:
            name = validate_name(view.get("name"))
            handle = record_handle(store_path, name, view.get("record"))
        except VmctlError as err:
            bad[str(view.get("name"))[:100]] = str(err)
            continue
        port = view.get("port")
        views.append({"name": name, "handle": handle, "state": str(view.get("state")),
                      "state_error": view.get("state_error") if isinstance(view.get("state_error"), str) else None,
                      "host": view.get("host") if isinstance(view.get("host"), str) else None,
                      "port": port if isinstance(port, int) and 0 < port < 65536 else None})
    return views, {str(k): str(v) for k, v in bad.items()}


def read_view(hypervisor, live_state=True, timeout=30):
    """``(views, bad)`` for one hypervisor; raises HypervisorError if it cannot be read."""
    if hypervisor.local:
        store = VmStore(os.path.join(os.path.expanduser(hypervisor.data_dir), "vms.json") if hypervisor.data_dir else None)
        answer = json.loads(json.dumps(VmManager(store).views(live_state=live_state)))
    else:
        answer = _run_remote(hypervisor, live_state, timeout)
    return _checked(hypervisor, answer)


def vm_login(hypervisor, name, timeout=30):
    """``{host, port, user, private_key, known_hosts, cloud_init}`` to reach VM ``name`` through ``hypervisor`` (paths
    on the hypervisor), read from its store with one command, re-checked as the inventory checks it."""
    from ansible_collections.vmctl.core.plugins.module_utils.errors import VmNotFound
    views, bad = read_view(hypervisor, live_state=False, timeout=timeout)
    for view in views:
        if view["name"] == name:
            handle = view["handle"]
            return {"host": view["host"], "port": view["port"], "user": handle.ssh_user,
                    "private_key": handle.private_key_path, "known_hosts": handle.known_hosts,
                    "cloud_init": bool(handle.cloud_init)}
    if name in bad:
        raise HypervisorError("VM %s on hypervisor %s: %s" % (name, hypervisor.name, bad[name]), name=name)
    raise VmNotFound("VM %s is not in the store of hypervisor %s" % (name, hypervisor.name),
                     hint="Create it there first (vmctl.core.up with hypervisor \"%s\")" % hypervisor.name, name=name)


def read_views(hypervisors, live_state=True, timeout=30):
    """``[(hypervisor, views, bad, error)]`` in the given order, every hypervisor read at once."""
    if not hypervisors:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hypervisors))) as pool:
        futures = [pool.submit(read_view, hv, live_state, timeout) for hv in hypervisors]
        results = []
        for hypervisor, future in zip(hypervisors, futures):
            try:
                views, bad = future.result()
                results.append((hypervisor, views, bad, None))
            except VmctlError as err:
                results.append((hypervisor, [], {}, err))
        return results
