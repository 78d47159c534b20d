# shellcheck shell=bash
# Sourced by the project's scripts: where things live. Safe to source from any directory.
VMCTL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Caches shared by every clone on this machine (venv, built guest images), keyed by content hash.
VMCTL_DEV_CACHE=${VMCTL_DEV_CACHE:-/var/cache/vmctl-dev}
_req_hash=$(sha256sum "$VMCTL_ROOT/requirements.txt" | cut -c1-12)
VMCTL_VENV=${VMCTL_VENV:-$VMCTL_DEV_CACHE/venv-$_req_hash}
# The collection is used in place through an ansible_collections/vmctl/core path.
VMCTL_COLLECTIONS=$VMCTL_ROOT/.cache/collections
export VMCTL_ROOT VMCTL_DEV_CACHE VMCTL_VENV
export ANSIBLE_COLLECTIONS_PATH=$VMCTL_COLLECTIONS
export PYTHONPATH=$VMCTL_COLLECTIONS${PYTHONPATH:+:$PYTHONPATH}
export PATH=$VMCTL_VENV/bin:$PATH
# No ANSIBLE_PYTHON_INTERPRETER here: implicit localhost runs modules with the venv's python (ansible's own
# interpreter), and guests must discover their own python.
