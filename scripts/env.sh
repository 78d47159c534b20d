# shellcheck shell=bash
# Sourced by the project's scripts: where things live. Safe to source from any directory.
VMCTL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Caches shared by every clone on this machine (venv, built guest images), keyed by content hash.
VMCTL_DEV_CACHE=${VMCTL_DEV_CACHE:-/var/cache/vmctl-dev}
# The test venv is keyed by every file scripts/setup installs into it (requirements-test.txt includes
# requirements.txt); the publishing tools' venv by its own file.
_req_hash=$(cat "$VMCTL_ROOT/requirements.txt" "$VMCTL_ROOT/requirements-test.txt" | sha256sum | cut -c1-12)
VMCTL_VENV=${VMCTL_VENV:-$VMCTL_DEV_CACHE/venv-$_req_hash}
_tools_hash=$(sha256sum "$VMCTL_ROOT/requirements-tools.txt" | cut -c1-12)
VMCTL_TOOLS_VENV=${VMCTL_TOOLS_VENV:-$VMCTL_DEV_CACHE/tools-$_tools_hash}
# The collection is used in place through an ansible_collections/vmctl/core path.
VMCTL_COLLECTIONS=$VMCTL_ROOT/.cache/collections
# What the tests' hypervisors (network namespaces) run the modules with: only the run-time packages.
_hv_hash=$(sha256sum "$VMCTL_ROOT/requirements-hypervisor.txt" | cut -c1-12)
VMCTL_HYPERVISOR_VENV=${VMCTL_HYPERVISOR_VENV:-$VMCTL_DEV_CACHE/hypervisor-$_hv_hash}
export VMCTL_ROOT VMCTL_DEV_CACHE VMCTL_VENV VMCTL_TOOLS_VENV VMCTL_HYPERVISOR_VENV
export ANSIBLE_COLLECTIONS_PATH=$VMCTL_COLLECTIONS
export PYTHONPATH=$VMCTL_COLLECTIONS${PYTHONPATH:+:$PYTHONPATH}
export PATH=$VMCTL_VENV/bin:$PATH
# No ANSIBLE_PYTHON_INTERPRETER here: implicit localhost runs modules with the venv's python (ansible's own
# interpreter), and guests must discover their own python.
