"""An earlier revision of this checkout as an installed-looking collection, for before/after figures in one run.

``with revision("8e2872f") as collections: ...`` gives a directory to put in ANSIBLE_COLLECTIONS_PATH and
PYTHONPATH: a detached git worktree of that revision under ansible_collections/vmctl/core, removed after.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE_LAYOUT = "8e2872f"  # the last commit before issue 13's layout


def collections_for(tree, work):
    """A collections dir in ``work`` whose ansible_collections/vmctl/core is ``tree``."""
    base = os.path.join(work, "collections")
    os.makedirs(os.path.join(base, "ansible_collections", "vmctl"))
    os.symlink(tree, os.path.join(base, "ansible_collections", "vmctl", "core"))
    return base


@contextlib.contextmanager
def revision(rev):
    work = tempfile.mkdtemp(prefix="vmctl-bench-rev-")
    tree = os.path.join(work, "tree")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, rev], check=True, capture_output=True)
    try:
        yield collections_for(tree, work)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
