"""A real HTTP server for download tests: Debian's nginx on a free 127.0.0.1 port.

nginx serves files with ``ETag``/``Last-Modified``, ``Range`` and ``If-Range`` itself. The access
log is JSON lines with the method, URI, status, ``Range`` and ``If-Range`` headers and body bytes
sent, so tests can count and inspect the requests a pull made. Locations:

- ``/``             the document root
- ``/slow/...``     the same files, 1 MB at full speed then 256 KB/s (``limit_rate_after``)
- ``/throttled/...`` the same files at 2 MB/s
- ``/error500/...`` always ``500 Internal Server Error``

The same locations are served over HTTPS (``tls_url``) with a self-signed certificate.

``DroppingProxy`` sits between a client and nginx and cuts the first connections after N bytes of
response, to break a download mid-body over real sockets.

Fixtures: ``nginx`` (one server per session) and ``http_files`` (a per-test directory on it, with
its own view of the access log).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

CONF = """\
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    log_format vmctl_test escape=json '{{"method":"$request_method","uri":"$uri","status":$status,'
                                      '"range":"$http_range","if_range":"$http_if_range","bytes":$body_bytes_sent}}';
    access_log {dir}/access.log vmctl_test;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    keepalive_timeout 5;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {dir}/tls.crt;
        ssl_certificate_key {dir}/tls.key;
        root {root};
        location / {{ }}
        location /slow/ {{ alias {root}/; limit_rate_after 1m; limit_rate 256k; }}
        location /throttled/ {{ alias {root}/; limit_rate 2m; }}
        location /error500/ {{ return 500; }}
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc=None, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %ss" % (port, timeout))


class NginxServer:
    def __init__(self, workdir):
        self.dir = str(workdir)
        self.root = os.path.join(self.dir, "www")
        self.log_path = os.path.join(self.dir, "access.log")
        self.port = self.tls_port = None
        self.proc = None

    def start(self):
        if not shutil.which("nginx"):
            pytest.fail("nginx is not installed; run scripts/setup (Debian package nginx-light)")
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-subj", "/CN=127.0.0.1", "-days", "2", "-keyout", os.path.join(self.dir, "tls.key"),
                        "-out", os.path.join(self.dir, "tls.crt")], check=True, capture_output=True)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            # As root, nginx's workers would run as nobody and could not read pytest's 0700 tmp dirs.
            f.write(CONF.format(dir=self.dir, root=self.root, port=self.port, tls_port=self.tls_port,
                                user="user root;" if os.geteuid() == 0 else ""))
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.dir + "/", "-e", os.path.join(self.dir, "error.log"), "-c", conf, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, self.proc)
        except RuntimeError as err:
            self.stop()
            pytest.fail("nginx did not start: %s\n%s" % (err, self.error_log()))
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.port, path.lstrip("/"))

    def tls_url(self, path):
        return "https://127.0.0.1:%d/%s" % (self.tls_port, path.lstrip("/"))

    def log_entries(self):
        entries = []
        with open(self.log_path) as f:
            for line in f:
                if line.strip():
                    entries.append(json.loads(line))
        return entries


class HttpFiles:
    """One test's directory on the server: ``put`` files, get their ``url`` (optionally under a
    location such as ``slow``), and read ``requests`` made for them."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        self.dir = os.path.join(server.root, name)
        os.makedirs(self.dir)

    def path(self, filename):
        return os.path.join(self.dir, filename)

    def put(self, filename, source):
        """Publish ``source`` (a path to copy, or bytes) as ``filename``; returns its path."""
        dest = self.path(filename)
        if isinstance(source, bytes):
            with open(dest, "wb") as f:
                f.write(source)
        else:
            shutil.copyfile(source, dest)
        return dest

    def url(self, filename, location="", tls=False):
        path = "/".join(p for p in (location, self.name, filename) if p)
        return self.server.tls_url(path) if tls else self.server.url(path)

    def requests(self, filename=None):
        marker = "/%s/%s" % (self.name, filename or "")
        return [e for e in self.server.log_entries() if marker in e["uri"]]

    def body_gets(self, filename):
        """GET requests for ``filename`` whose answer carried a body (status 200 or 206)."""
        return [e for e in self.requests(filename) if e["method"] == "GET" and e["status"] in (200, 206)]


class DroppingProxy:
    """TCP proxy 127.0.0.1:port -> upstream that closes each of the first ``drops`` connections after
    ``after`` bytes of response (headers included); later connections pass through untouched."""

    def __init__(self, upstream_port, after, drops=1):
        self.upstream_port = upstream_port
        self.after = after
        self.drops = drops
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, server_url):
        return re.sub(r"^http://127\.0\.0\.1:\d+/", "http://127.0.0.1:%d/" % self.port, server_url)

    def close(self):
        self._closed = True
        self._sock.close()

    def _accept(self):
        while not self._closed:
            try:
                client = self._sock.accept()[0]
            except OSError:
                return
            self.connections += 1
            limit = self.after if self.connections <= self.drops else None
            threading.Thread(target=self._serve, args=(client, limit), daemon=True).start()

    def _serve(self, client, limit):
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        self._pump(upstream, client, limit)
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    @staticmethod
    def _pump(src, dst, limit):
        sent = 0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if limit is not None and sent + len(data) >= limit:
                try:
                    dst.sendall(data[:limit - sent])
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return
            sent += len(data)


@pytest.fixture(scope="session")
def nginx(tmp_path_factory):
    server = NginxServer(tmp_path_factory.mktemp("nginx")).start()
    yield server
    server.stop()


@pytest.fixture
def http_files(nginx, request):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60] + "-%d" % (time.monotonic_ns() % 10 ** 9)
    return HttpFiles(nginx, name)
