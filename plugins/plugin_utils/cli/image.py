# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``vmctl image pull|list|inspect|rm|prune``: the image cache."""

from __future__ import annotations

__metaclass__ = type

import os
import time

from ansible_collections.vmctl.core.plugins.module_utils import errors
from ansible_collections.vmctl.core.plugins.module_utils.images.cache import human_size
from ansible_collections.vmctl.core.plugins.plugin_utils.cli.common import EXIT_OK, Progress, command, dash, note, out, print_json, subparser, vm_manager


def image_cache():
    return vm_manager().image_cache()


def cmd_image_pull(args):
    progress = Progress(args.url)
    begin = time.monotonic()
    try:
        entry = image_cache().pull(args.url, checksum=args.checksum, name=args.name, progress=progress, force=args.force,
                                   deadline=args.deadline, stall_timeout=args.stall_timeout,
                                   max_size=args.max_size << 30 if args.max_size else None)
    finally:
        progress.finish()
    if entry.downloaded:
        note("downloaded %s (%s, %s) in %.1f s" % (args.url, entry.format, human_size(entry.size), time.monotonic() - begin))
    else:
        note("%s is already cached" % args.url)
    out(entry.path)
    return EXIT_OK


IMAGE_LIST_FORMAT = "%-40s %-10s %-7s %-60s %s"


def cmd_image_list(args):
    entries = image_cache().list()
    if args.json:
        return print_json([e.to_dict(digest=False) for e in entries])
    out(IMAGE_LIST_FORMAT % ("NAME", "SIZE", "FORMAT", "PATH", "USED BY"))
    for e in sorted(entries, key=lambda e: os.path.basename(e.path)):
        out(IMAGE_LIST_FORMAT % (os.path.basename(e.path), human_size(e.size or 0), dash(e.format), e.path,
                                 ", ".join(e.used_by or []) or "-"))
    return EXIT_OK


def cmd_image_inspect(args):
    info = image_cache().inspect(args.image)
    if args.json:
        return print_json(info)
    sizes = ("virtual_size", "disk_size", "size", "source_size")
    order = ("path", "format", "virtual_size", "disk_size", "size", "backing_file", "backing_format",
             "external_references", "dirty", "cached", "url", "name", "sha256", "compression", "source_size",
             "fetched_at", "etag", "last_modified", "used_by")
    for key in order + tuple(sorted(k for k in info if k not in order and k != "source_digests")):
        if key not in info or (key not in ("path", "format", "cached") and info[key] in (None, [], {}, False)):
            continue
        value = info[key]
        if key in sizes and isinstance(value, int):
            value = "%s (%d bytes)" % (human_size(value), value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        out("%-20s %s" % (key.replace("_", " ") + ":", dash(value)))
    return EXIT_OK


def cmd_image_rm(args):
    entry = image_cache().remove(args.image, force=args.force)
    if entry is None:
        raise errors.ImageNotFound("%s is not in the image cache" % args.image, hint="See vmctl image list")
    out("removed %s (%s)" % (entry.path, entry.url))
    return EXIT_OK


def cmd_image_prune(args):
    removed = image_cache().prune(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        out("%s %s (%s, %s)" % (verb, item["path"], item["reason"], human_size(item["size"])))
    note("%s %d file(s), %s" % (verb, len(removed), human_size(sum(i["size"] for i in removed))))
    return EXIT_OK


@command("image", "Manage VM images", """\
examples:
  vmctl image pull https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
  vmctl image list
  vmctl image inspect ./my-image.qcow2
  vmctl image rm https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
  vmctl image prune --dry-run
""")
def _image_args(p):
    sub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True
    pull = subparser(sub, "pull", "Download an image to the cache", """\
Downloads (resuming an interrupted download), decompresses .zst/.xz/.gz, checks the format and
caches the image by URL; progress goes to stderr, the cached path to stdout.

examples:
  vmctl image pull https://example.com/debian-12.qcow2
  vmctl image pull https://example.com/debian-12.qcow2.zst --name debian-12 --checksum sha256:<hex>
""")
    pull.add_argument("url", metavar="URL", help="URL to download")
    pull.add_argument("--name", help="readable name of the cached file")
    pull.add_argument("--checksum", metavar="SUM", help="sha256:<hex>, sha512:<hex> or the URL of a SHA256SUMS file")
    pull.add_argument("--force", action="store_true", help="download again even if cached")
    pull.add_argument("--deadline", type=int, metavar="SECONDS",
                      help="give up when the download takes longer (default: its size at 256 KB/s, at least 600 s)")
    pull.add_argument("--stall-timeout", type=int, metavar="SECONDS",
                      help="give up when less than 64 KB arrive in this long (default 60)")
    pull.add_argument("--max-size", type=int, metavar="GB",
                      help="largest image accepted on disk, decompressed (default 64; less when its qcow2 header declares less)")
    pull.set_defaults(handler=cmd_image_pull)
    listing = subparser(sub, "list", "List cached images", "examples:\n  vmctl image list\n")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_image_list)
    inspect = subparser(sub, "inspect", "Show an image's format and details",
                        "examples:\n  vmctl image inspect ./my-image.qcow2\n  vmctl image inspect https://example.com/image.img\n")
    inspect.add_argument("image", metavar="PATH|URL", help="an image file, or the URL of a cached image")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=cmd_image_inspect)
    rm = subparser(sub, "rm", "Remove an image from the cache",
                   "Refused while a VM uses it, unless --force.\n\nexamples:\n  vmctl image rm https://example.com/image.img\n")
    rm.add_argument("image", metavar="URL|PATH", help="the image's URL, or its path in the cache")
    rm.add_argument("--force", action="store_true", help="remove it even if VMs use it")
    rm.set_defaults(handler=cmd_image_rm)
    prune = subparser(sub, "prune", "Remove images no VM uses and unfinished downloads",
                      "examples:\n  vmctl image prune --dry-run\n  vmctl image prune\n")
    prune.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    prune.set_defaults(handler=cmd_image_prune)
    return None
