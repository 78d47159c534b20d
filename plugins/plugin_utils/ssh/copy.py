# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy a file or a folder tree between the host and a VM over a logged-in ``SshSession`` (its pinned
connection): ``upload`` and ``download``, each ``(files, bytes)``. Like ``cp``/``scp``: a destination that is an
existing folder receives the source under its own name; a folder needs ``recursive``.
"""

from __future__ import annotations

__metaclass__ = type

import errno
import os
import posixpath
import stat

from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec, SshTransferFailed


def _remote_stat(session, sftp, path):
    """The remote path's attributes (symlinks followed), or None when it does not exist."""
    try:
        return sftp.stat(path)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        raise SshTransferFailed("VM %s: cannot look at %s: %s" % (session.target.vm, path, err.strerror or err),
                                name=session.target.vm, path=path)


def _folder_needs_r(what, path):
    return InvalidSpec("%s is a folder: copying it needs -r" % what,
                       hint="vmctl cp -r ... to copy %s with everything in it" % path, path=path)


def check_local_source(local, recursive):
    """InvalidSpec for a host source that is missing, or a folder without ``recursive`` (before any connection)."""
    if not os.path.lexists(local):
        raise InvalidSpec("%s does not exist on the host" % local, hint="Check the source path", path=local)
    if os.path.isdir(local) and not recursive:
        raise _folder_needs_r(local, local)


def upload(session, local, remote, recursive=False):
    """Copy the host's ``local`` to ``remote`` in the VM; ``(files, bytes)``."""
    check_local_source(local, recursive)
    with session.sftp() as sftp:
        attrs = _remote_stat(session, sftp, remote)
        if attrs is not None and stat.S_ISDIR(attrs.st_mode):
            remote = posixpath.join(remote, os.path.basename(os.path.normpath(local)))
        if not os.path.isdir(local):
            return 1, session.put(local, remote, stat.S_IMODE(os.stat(local).st_mode))
        files = size = 0
        for folder, dirs, names in os.walk(local):
            dirs.sort()
            target = posixpath.join(remote, *os.path.relpath(folder, local).split(os.sep)) if folder != local else remote
            if _remote_stat(session, sftp, target) is None:
                try:
                    sftp.mkdir(target, stat.S_IMODE(os.stat(folder).st_mode))
                except OSError as err:
                    raise SshTransferFailed("VM %s: cannot make folder %s: %s" % (session.target.vm, target, err.strerror or err),
                                            hint="Does its parent folder exist in the VM?", name=session.target.vm, path=target)
            for name in sorted(names):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    size += session.put(path, posixpath.join(target, name), stat.S_IMODE(os.stat(path).st_mode))
                    files += 1
        return files, size


def download(session, remote, local, recursive=False):
    """Copy ``remote`` in the VM to the host's ``local``; ``(files, bytes)``."""
    with session.sftp() as sftp:
        attrs = _remote_stat(session, sftp, remote)
        if attrs is None:
            raise SshTransferFailed("VM %s: %s does not exist in the VM" % (session.target.vm, remote),
                                    hint="Check the path: vmctl ssh %s -- ls -la %s" % (session.target.vm, posixpath.dirname(remote) or "."),
                                    name=session.target.vm, path=remote)
        if stat.S_ISDIR(attrs.st_mode) and not recursive:
            raise _folder_needs_r("%s:%s" % (session.target.vm, remote), "%s:%s" % (session.target.vm, remote))
        if os.path.isdir(local):
            local = os.path.join(local, posixpath.basename(posixpath.normpath(remote)))
        if not stat.S_ISDIR(attrs.st_mode):
            return 1, session.get(remote, local, stat.S_IMODE(attrs.st_mode))
        return _download_tree(session, sftp, remote, local, attrs)


def _download_tree(session, sftp, remote, local, attrs):
    files = size = 0
    os.makedirs(local, stat.S_IMODE(attrs.st_mode) | 0o700, exist_ok=True)
    for entry in sorted(sftp.listdir_attr(remote), key=lambda e: e.filename):
        source, target = posixpath.join(remote, entry.filename), os.path.join(local, entry.filename)
        if stat.S_ISDIR(entry.st_mode):
            more, more_size = _download_tree(session, sftp, source, target, entry)
            files, size = files + more, size + more_size
        elif stat.S_ISREG(entry.st_mode):  # symlinks, sockets and devices are left out, as with sftp's get -R
            size += session.get(source, target, stat.S_IMODE(entry.st_mode))
            files += 1
    return files, size


__all__ = ["check_local_source", "upload", "download"]
