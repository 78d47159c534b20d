"""``ansible-test sanity`` passes on the whole collection, with no ignore files."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_no_ignore_files():
    assert not [n for n in os.listdir(os.path.join(ROOT, "tests", "sanity")) if n.startswith("ignore")]


def test_ansible_test_sanity():
    proc = subprocess.run([os.path.join(ROOT, "scripts", "sanity")], capture_output=True, text=True, timeout=1800, check=False)
    errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert proc.returncode == 0, "\n".join(errors) or proc.stderr[-3000:]
