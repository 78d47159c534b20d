import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Fixtures: a real nginx for download tests.
from nginx_server import http_files, nginx  # noqa: E402,F401  pylint: disable=unused-import
