# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl ssh-config`` (OpenSSH ``Host`` stanzas for VMs, host keys pinned) and ``vmctl cp`` (files both ways
over the engine's pinned paramiko connection). main.py registers both.
"""

from __future__ import annotations

__metaclass__ = type

import ipaddress
import os
import re
import sys
import time

from ansible_collections.vmctl.core.plugins.module_utils import checks
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, VmNotFound

# ssh_config expands %-tokens (%% is a literal %) and ${VAR} in paths, and ends a quoted value at '"':
# a path is quoted, its % doubled, and one with '"', '\', '$' or a control character is refused.
_UNSAFE_PATH = re.compile(r'["\\$\x00-\x1f\x7f]')


def config_path(path, what, vm):
    """``path`` as an ssh_config value: absolute, quoted, nothing that could end the value or expand."""
    if not isinstance(path, str) or not os.path.isabs(path) or _UNSAFE_PATH.search(path):
        raise InvalidSpec("VM %s: its %s path %r cannot go into an ssh_config file" % (vm, what, path),
                          hint="It must be absolute, without '\"', '\\', '$' or control characters; "
                               "check the VM's record (vmctl status %s)" % vm, name=vm, path=path)
    return '"%s"' % path.replace("%", "%%")


def stanza(name, host, port, user, identity_file, known_hosts):
    """The ``Host`` stanza of one VM, as text; every value is validated or quoted."""
    checks.validate_name(name)
    checks.validate_login_user(user)
    host = str(ipaddress.ip_address(host))  # an address from the store or a lease, never an option
    port = checks.whole_number("SSH port of VM %s" % name, port, 1, 65535)
    lines = ["Host %s" % name, "  HostName %s" % host, "  Port %d" % port, "  User %s" % user]
    if identity_file:
        lines.append("  IdentityFile %s" % config_path(identity_file, "private key", name))
    lines += ["  UserKnownHostsFile %s" % config_path(known_hosts, "known_hosts", name),
              "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  IdentitiesOnly yes",
              "  LogLevel ERROR"]
    return "\n".join(lines) + "\n"


def _stanza_of(manager, handle):
    """A VM's stanza, or a comment line saying why it has none."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    if not handle.ssh_user or handle.network.type not in ("user", "tap"):
        return "# %s: no SSH settings (created without cloud-init or networking)\n" % handle.name
    host, port = manager.endpoint(handle)
    if host is None:
        return "# %s: no address yet (a TAP guest without a DHCP lease); run vmctl ssh-config again once it has booted\n" % handle.name
    if not handle.known_hosts:
        return "# %s: no known_hosts file pinned for it; use vmctl ssh %s\n" % (handle.name, handle.name)
    target = ssh.target_for(handle, host=host)
    target.pin_console_keys()  # what its console printed since it started (as vmctl ssh does)
    return stanza(handle.name, host, port, target.user, target.private_key_path, target.known_hosts)


def cmd_ssh_config(args):
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    manager = VmManager()
    if args.names:
        found = manager.find_all(args.names)
        missing = [name for name, handle in found.items() if handle is None]
        if missing:
            raise VmNotFound("no VM called %s in the vmctl store" % ", ".join(missing),
                             hint="vmctl list shows the VMs", name=missing[0])
        handles = [found[name] for name in args.names]
    else:
        handles = [h for _name, h in sorted(manager.list().items()) if h.ssh_user]
    sys.stdout.write("\n".join(_stanza_of(manager, h) for h in handles))
    sys.stdout.flush()
    return 0


SSH_CONFIG_HELP = """\
Prints an OpenSSH Host stanza per VM (default: every VM with SSH settings): its address and port, user,
key, and its own known_hosts with StrictHostKeyChecking yes, so host keys stay pinned. With it the
system ssh, scp, rsync and editors' remote plugins reach the VM by name.

examples:
  vmctl ssh-config web > ~/.ssh/vmctl.conf && ssh -F ~/.ssh/vmctl.conf web hostname
  ssh -F <(vmctl ssh-config) web
  rsync -e "ssh -F $HOME/.ssh/vmctl.conf" -a ./src/ web:src/
"""


def ssh_config_args(p):
    p.add_argument("names", metavar="NAME", nargs="*", help="VMs (default: every VM with SSH settings)")
    return cmd_ssh_config


# --- cp -----------------------------------------------------------------------------------------------

_REMOTE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*):(.*)", re.S)


def split_remote(arg):
    """``(vm, path)`` for ``NAME:PATH``, else ``(None, arg)`` (a local path with ':' can be written ./a:b)."""
    match = _REMOTE.fullmatch(arg)
    if match is None:
        return None, arg
    return match.group(1), match.group(2) or "."


def cmd_cp(args):
    from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import copy, readiness, target as ssh
    (src_vm, src), (dst_vm, dst) = split_remote(args.source), split_remote(args.destination)
    if (src_vm is None) == (dst_vm is None):
        raise InvalidSpec("%s: exactly one of SRC and DST is NAME:PATH (in the VM)"
                          % ("both are in a VM" if src_vm else "neither is in a VM"),
                          hint="vmctl cp ./file NAME:/tmp/ uploads, vmctl cp NAME:/etc/hostname . downloads; "
                               "write a local path with ':' as ./a:b")
    name = src_vm or dst_vm
    if src_vm is None:
        copy.check_local_source(src, args.recursive)  # before any connection
    handle = VmManager().get(name)
    ssh.require_running(handle)
    target = ssh.target_for(handle, guest_ip_timeout=args.wait)
    session = readiness.login(target, max(1, args.wait))
    begin = time.monotonic()
    try:
        if src_vm is None:
            files, size = copy.upload(session, src, dst, args.recursive)
        else:
            files, size = copy.download(session, src, dst, args.recursive)
    finally:
        session.close()
    seconds = time.monotonic() - begin
    sys.stderr.write("copied %d file%s, %d bytes in %.2f s (%s -> %s)\n"
                     % (files, "" if files == 1 else "s", size, seconds, args.source, args.destination))
    return 0


CP_HELP = """\
Copies a file, or a folder with -r, between the host and a VM: exactly one of SRC and DST is
NAME:PATH (a relative PATH is in the VM user's home). It goes over the VM's pinned SSH connection (SFTP).
A DST that is an existing folder receives SRC under its own name. A summary goes to stderr.

examples:
  vmctl cp ./app.conf web:/tmp/app.conf
  vmctl cp web:/var/log/syslog .
  vmctl cp -r ./site web:site
  vmctl cp -r web:/etc/nginx ./nginx-conf
"""


def cp_args(p):
    p.add_argument("-r", "--recursive", action="store_true", help="copy folders with everything in them")
    p.add_argument("--wait", type=int, default=30, metavar="SECONDS",
                   help="wait this long for the guest to accept SSH (default 30)")
    p.add_argument("source", metavar="SRC", help="local path or NAME:PATH")
    p.add_argument("destination", metavar="DST", help="local path or NAME:PATH")
    return cmd_cp


__all__ = ["stanza", "config_path", "split_remote", "cmd_ssh_config", "cmd_cp", "ssh_config_args", "cp_args",
           "SSH_CONFIG_HELP", "CP_HELP"]
