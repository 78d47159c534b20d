# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for pip's get-pip.py, which ansible-test downloads from a host the test machines cannot reach.

ansible-test runs it inside a new, empty virtual environment with pip-install arguments; we
bootstrap pip from CPython's bundled wheel (ensurepip) and install what was asked for from the
configured package index.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

# ansible-test runs this with a reduced environment: keep trusting the machine's CA bundle.
CA_BUNDLES = (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")


def main():
    ensurepip.bootstrap()
    args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    bundle = next((path for path in CA_BUNDLES if path and os.path.isfile(path)), None)
    if bundle:
        args = ["--cert", bundle] + args
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))


if __name__ == "__main__":
    main()
