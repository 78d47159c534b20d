# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl ssh`` (the system ssh, host key pinned), ``vmctl ssh-config`` (OpenSSH ``Host`` stanzas for VMs, host
keys pinned) and ``vmctl cp`` (files both ways over the engine's pinned paramiko connection).
"""

from __future__ import annotations

__metaclass__ = type

import argparse
import ipaddress
import os
import re
import sys
import time

from ansible_collections.vmctl.core.plugins.module_utils import checks, errors
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, UsageError, VmNotFound
from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import EXIT_FAILED, EXIT_OK, command, note, vm_manager

DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def _vm_from_vmfile(path):
    """The one VM of the VMFile at ``path`` (or ./VMFile.kdl), for commands whose NAME is optional."""
    found = vmfile.find(path)
    records = vmfile.load(found)
    if len(records) != 1:
        names = ", ".join(r["name"] for r in records)
        raise UsageError("%s defines %d VMs (%s); say which one" % (found, len(records), names),
                         hint="Give its name: vmctl ssh NAME (one of %s)" % names)
    return records[0]["name"]


def cmd_ssh(args):
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    if args.name and args.name_option and args.name != args.name_option:
        raise UsageError("two VM names given: %s and --name %s" % (args.name, args.name_option), hint="Give one")
    if args.user is not None:
        checks.validate_login_user(args.user)  # it reaches ssh's argv: never an option
    name = args.name or args.name_option or _vm_from_vmfile(args.file)
    manager = vm_manager()
    handle = None
    if args.inventory:
        located = _locate(args.inventory, [name])[0]
        if not located.local:
            return _ssh_through_hypervisor(args, located)
        handle = located.handle
    handle = handle or manager.get(name)
    ssh.require_running(handle)
    key = args.key or handle.private_key_path or next(
        (k for k in (os.path.expanduser(p) for p in DEFAULT_KEYS) if os.path.isfile(k)), None)
    target = ssh.target_for(handle, user=args.user, private_key_path=key, guest_ip_timeout=args.wait)
    target.check()
    if args.wait > 0:  # the readiness wait of vmctl up: a login, then cloud-init's end; progress on stderr
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
        readiness.ReadinessWait(handle, deadline=args.wait, stall=min(args.wait, readiness.DEFAULT_STALL),
                                on_progress=note, target=target, backend=manager.backend(handle)).run()
    checking = _host_key_checking(target)
    from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
    argv = [find_tool("ssh"),
            "-o", "StrictHostKeyChecking=%s" % checking, "-o", "UserKnownHostsFile=%s" % target.known_hosts,
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-i", target.private_key_path, "-p", str(target.port), "-l", target.user, "--", target.host]
    argv += args.remote_command  # after the destination, ssh takes everything as the remote command
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return EXIT_FAILED  # not reached


def _locate(inventory_path, names):
    from ansible_collections.vmctl.core.plugins.plugin_utils import remote_vms
    return remote_vms.locate(remote_vms.read_inventory(inventory_path), names)


def _ssh_through_hypervisor(args, located):
    """The system ssh with a config file (in the VM's cache folder) of the hypervisor's stanza and the VM's, ProxyJump."""
    from ansible_collections.vmctl.core.plugins.module_utils.proc import find_tool
    from ansible_collections.vmctl.core.plugins.plugin_utils import remote_vms
    located.require_running()
    if args.wait > 0:  # the readiness wait of vmctl up, through the hypervisor
        from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import readiness
        readiness.login(located.target(), args.wait, on_progress=note).close()
    files = remote_vms.fetch_logins([located])[located.name]
    _require_pins(located, files["known_hosts"])
    text = _remote_config([located], {located.name: dict(files, private_key=args.key or files["private_key"])}, args.user)
    config = remote_vms.write_private(os.path.join(located.cache_dir(), "ssh_config"), text.encode("utf-8"))
    argv = [find_tool("ssh"), "-F", config, "--", located.name] + args.remote_command
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return EXIT_FAILED  # not reached


def _require_pins(located, known_hosts):
    from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
    if not host_keys.pinned_keys(known_hosts):
        raise errors.HostKeyUnknown(
            "VM %s on hypervisor %s: no host key pinned in its known_hosts there yet" % (located.name, located.hypervisor.name),
            hint="Wait for it to finish booting (vmctl ssh --wait SECONDS), or reach it once with vmctl.core.vm_ssh",
            name=located.name)


def _host_key_checking(target):
    """OpenSSH's StrictHostKeyChecking for ``target``, after pinning the keys its console printed.

    ``yes`` when a key is pinned; ``accept-new`` when the VM opted in and nothing is pinned yet (OpenSSH
    then pins the first key in the VM's known_hosts and refuses any change after it); else an error.
    """
    from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
    target.pin_console_keys()
    if host_keys.pinned_keys(target.known_hosts):
        return "yes"
    if target.learn_host_keys == "accept-new":
        return "accept-new"
    raise errors.HostKeyUnknown(
        "VM %s: no host key pinned in %s yet, and the guest has not printed cloud-init's SSH HOST KEY KEYS "
        "block on its console since it started" % (target.vm, target.known_hosts),
        hint="Wait for the guest to finish booting (vmctl ssh --wait SECONDS %s), or, for an image that prints no host "
             "keys, create the VM with --host-key-checking accept-new" % target.vm,
        name=target.vm)


@command("ssh", "SSH into a VM", """\
Runs the system ssh with the VM's key, checking the guest's host key against the one vmctl pinned
when it made the VM (StrictHostKeyChecking=yes). NAME may be left out when the VMFile (./VMFile.kdl
or --file) defines one VM. Arguments after -- are run as a command.

examples:
  vmctl ssh
  vmctl ssh myvm
  vmctl ssh myvm --user root --key ~/.ssh/special_key
  vmctl ssh myvm -- uname -a
  vmctl ssh web --inventory fleet.vmctl.yml -- hostname    # a VM on another hypervisor, through it

With --inventory, NAME is looked up in the stores of that vms inventory file's hypervisors (localhost
and mappings, parsed as the vms inventory parses them). A VM on another hypervisor is reached through
it (ProxyJump): the hypervisor's host key is checked against its known_hosts_file, the VM's against
its pins, copied from the hypervisor with its key (see vmctl ssh-config --help).
""")
def _ssh_args(p):
    p.add_argument("name", metavar="NAME", nargs="?", help="VM name (default: the only VM of the VMFile)")
    p.add_argument("--name", dest="name_option", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--user", help="SSH user (default: the VM's)")
    p.add_argument("--key", metavar="PATH", help="private key (default: the VM's, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
    p.add_argument("--file", metavar="PATH", help="VMFile to find NAME in (default ./VMFile.kdl)")
    p.add_argument("--wait", type=int, default=30, metavar="SECONDS",
                   help="wait this long for the guest to accept SSH and finish cloud-init (default 30; 0: do not wait)")
    _inventory_arg(p)
    return cmd_ssh


def _inventory_arg(p):
    p.add_argument("-i", "--inventory", metavar="FILE",
                   help="a vms inventory file (plugin: vmctl.core.vms): find VMs in the stores of its hypervisors "
                        "(localhost and mappings of its hypervisors option) and reach those on other hosts through them")


# --- ssh-config ----------------------------------------------------------------------------------------

# ssh_config expands %-tokens (%% is a literal %) and ${VAR} in paths, and ends a quoted value at '"':
# a path is quoted, its % doubled, and one with '"', '\', '$' or a control character is refused.
_UNSAFE_PATH = re.compile(r'["\\$\x00-\x1f\x7f]')


def config_path(path, what, vm, hypervisor=None):
    """``path`` as an ssh_config value: absolute, quoted, nothing that could end the value or expand."""
    if not isinstance(path, str) or not os.path.isabs(path) or _UNSAFE_PATH.search(path):
        where = "check the hypervisor's mapping in the inventory file" if hypervisor else \
            "check the VM's record (vmctl status %s)" % vm
        raise InvalidSpec("%s %s: its %s path %r cannot go into an ssh_config file" % (
            "hypervisor" if hypervisor else "VM", hypervisor or vm, what, path),
            hint="It must be absolute, without '\"', '\\', '$' or control characters; " + where, name=vm, path=path)
    return '"%s"' % path.replace("%", "%%")


def stanza(name, host, port, user, identity_file, known_hosts, proxy_jump=None):
    """The ``Host`` stanza of one VM, as text; every value is validated or quoted. With ``proxy_jump`` (the alias of
    its hypervisor's stanza) the address is on that host."""
    checks.validate_name(name)
    host = str(ipaddress.ip_address(host))  # an address from the store or a lease, never an option
    extra = ["  ProxyJump %s" % checks.check_hypervisor(proxy_jump)] if proxy_jump else []
    return _stanza(name, None, host, port, user, identity_file, known_hosts, extra)


def hypervisor_stanza(hypervisor):
    """The ``Host`` stanza of a hypervisor, named after it, for its VMs' ProxyJump: its own key and known_hosts."""
    name = checks.check_hypervisor(hypervisor.name)
    try:
        host = str(ipaddress.ip_address(hypervisor.host))
    except ValueError:
        host = checks.validate_hostname(hypervisor.host)  # a DNS name, never an option
    return _stanza(name, name, host, hypervisor.port, hypervisor.user, hypervisor.private_key_file,
                   hypervisor.known_hosts_file, [])


def _stanza(alias, hypervisor, host, port, user, identity_file, known_hosts, extra):
    checks.validate_login_user(user)
    port = checks.whole_number("SSH port of %s %s" % ("hypervisor" if hypervisor else "VM", alias), port, 1, 65535)
    lines = ["Host %s" % alias, "  HostName %s" % host, "  Port %d" % port, "  User %s" % user]
    if identity_file:
        lines.append("  IdentityFile %s" % config_path(identity_file, "private key", alias, hypervisor))
    lines += ["  UserKnownHostsFile %s" % config_path(known_hosts, "known_hosts", alias, hypervisor),
              "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  IdentitiesOnly yes",
              "  LogLevel ERROR"] + extra
    return "\n".join(lines) + "\n"


def _no_stanza(handle, host):
    """The comment line saying why a VM has no stanza, or None."""
    if not handle.ssh_user or handle.network.type not in ("user", "tap"):
        return "# %s: no SSH settings (created without cloud-init or networking)\n" % handle.name
    if host is None:
        return "# %s: no address yet (a TAP guest without a DHCP lease); run vmctl ssh-config again once it has booted\n" % handle.name
    if not handle.known_hosts:
        return "# %s: no known_hosts file pinned for it; use vmctl ssh %s\n" % (handle.name, handle.name)
    return None


def _stanza_of(manager, handle):
    """A VM's stanza, or a comment line saying why it has none."""
    from ansible_collections.vmctl.core.plugins.plugin_utils.ssh import target as ssh
    host, port = manager.endpoint(handle) if handle.ssh_user and handle.network.type in ("user", "tap") else (None, None)
    why = _no_stanza(handle, host)
    if why:
        return why
    target = ssh.target_for(handle, host=host)
    target.pin_console_keys()  # what its console printed since it started (as vmctl ssh does)
    return stanza(handle.name, host, port, target.user, target.private_key_path, target.known_hosts)


def _remote_config(located, files, user=None):
    """Each hypervisor's stanza once, then its VMs' with ProxyJump to it, the VMs' files from ``files`` (fetched)."""
    names = {vm.name for vm in located}
    texts, done = [], set()
    for vm in located:
        hv = vm.hypervisor
        if hv.name in names:
            raise InvalidSpec("hypervisor %s has the name of a VM: their Host stanzas would clash" % hv.name,
                              hint="Name the hypervisor's mapping in the inventory file otherwise", name=hv.name)
        if hv.name not in done:
            done.add(hv.name)
            texts.append(hypervisor_stanza(hv))
        texts.append(stanza(vm.name, vm.view["host"], vm.view["port"], user or vm.handle.ssh_user,
                            files[vm.name]["private_key"], files[vm.name]["known_hosts"], proxy_jump=hv.name))
    return "\n".join(texts)


def _remote_stanzas(located):
    """The stanzas of VMs on other hypervisors (their key and pins fetched, one login per hypervisor), or comments."""
    from ansible_collections.vmctl.core.plugins.module_utils.guest import host_keys
    from ansible_collections.vmctl.core.plugins.plugin_utils import remote_vms
    by_hypervisor, comments = {}, []
    for vm in located:
        why = _no_stanza(vm.handle, vm.view["host"] if vm.view["port"] else None)
        if why:
            comments.append(why.replace(": ", " on %s: " % vm.hypervisor.name, 1))
        else:
            by_hypervisor.setdefault(vm.hypervisor.name, []).append(vm)
    usable, files = [], {}
    for vms in by_hypervisor.values():
        files.update(remote_vms.fetch_logins(vms))
        for vm in vms:
            if host_keys.pinned_keys(files[vm.name]["known_hosts"]):
                usable.append(vm)
            else:
                comments.append("# %s on %s: no host key pinned there yet; run vmctl ssh-config again once it has booted\n"
                                % (vm.name, vm.hypervisor.name))
    return ([_remote_config(usable, files)] if usable else []) + comments


def _ssh_config_with_inventory(args):
    from ansible_collections.vmctl.core.plugins.plugin_utils import remote_vms
    inventory = remote_vms.read_inventory(args.inventory)
    if args.names:
        located = remote_vms.locate(inventory, args.names)
    else:
        located = [vm for vm in remote_vms.read_all(inventory, warn=note) if vm.handle.ssh_user]
    manager = vm_manager()
    texts = [_stanza_of(manager, vm.handle) for vm in located if vm.local]
    return texts + _remote_stanzas([vm for vm in located if not vm.local])


def cmd_ssh_config(args):
    if args.inventory:
        sys.stdout.write("\n".join(_ssh_config_with_inventory(args)))
        sys.stdout.flush()
        return EXIT_OK
    manager = vm_manager()
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
    return EXIT_OK


SSH_CONFIG_HELP = """\
Prints an OpenSSH Host stanza per VM (default: every VM with SSH settings): its address and port, user,
key, and its own known_hosts with StrictHostKeyChecking yes, so host keys stay pinned. With it the
system ssh, scp, rsync and editors' remote plugins reach the VM by name.

examples:
  vmctl ssh-config web > ~/.ssh/vmctl.conf && ssh -F ~/.ssh/vmctl.conf web hostname
  ssh -F <(vmctl ssh-config) web
  rsync -e "ssh -F $HOME/.ssh/vmctl.conf" -a ./src/ web:src/
  vmctl ssh-config --inventory fleet.vmctl.yml > ~/.ssh/fleet.conf && ssh -F ~/.ssh/fleet.conf web

With --inventory, the VMs are those of that vms inventory file's hypervisors (localhost and mappings). A VM
on another hypervisor gets ProxyJump to a Host stanza of its hypervisor (its address, user, key and its own
known_hosts, StrictHostKeyChecking yes); the VM's key and known_hosts are copied from the hypervisor, over
its checked login, to $XDG_DATA_HOME/vmctl/hypervisors/HV/VM/ (0600), refreshed each time. Write the
config to a file: ProxyJump's second ssh reads it again (a <(...) pipe is read only once).
"""


@command("ssh-config", "Print OpenSSH Host stanzas for VMs", SSH_CONFIG_HELP)
def _ssh_config_args(p):
    p.add_argument("names", metavar="NAME", nargs="*", help="VMs (default: every VM with SSH settings)")
    _inventory_arg(p)
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
    located = _locate(args.inventory, [name])[0] if args.inventory else None
    if located is not None and not located.local:
        located.require_running()
        target = located.target()  # through the hypervisor
    else:
        handle = located.handle if located is not None else vm_manager().get(name)
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
    note("copied %d file%s, %d bytes in %.2f s (%s -> %s)"
         % (files, "" if files == 1 else "s", size, seconds, args.source, args.destination))
    return EXIT_OK


CP_HELP = """\
Copies a file, or a folder with -r, between the host and a VM: exactly one of SRC and DST is
NAME:PATH (a relative PATH is in the VM user's home). It goes over the VM's pinned SSH connection (SFTP).
A DST that is an existing folder receives SRC under its own name. A summary goes to stderr.

examples:
  vmctl cp ./app.conf web:/tmp/app.conf
  vmctl cp web:/var/log/syslog .
  vmctl cp -r ./site web:site
  vmctl cp -r web:/etc/nginx ./nginx-conf
  vmctl cp --inventory fleet.vmctl.yml ./app.conf web:/tmp/    # a VM on another hypervisor, through it
"""


@command("cp", "Copy files between the host and a VM", CP_HELP)
def _cp_args(p):
    p.add_argument("-r", "--recursive", action="store_true", help="copy folders with everything in them")
    p.add_argument("--wait", type=int, default=30, metavar="SECONDS",
                   help="wait this long for the guest to accept SSH (default 30)")
    p.add_argument("source", metavar="SRC", help="local path or NAME:PATH")
    p.add_argument("destination", metavar="DST", help="local path or NAME:PATH")
    _inventory_arg(p)
    return cmd_cp
