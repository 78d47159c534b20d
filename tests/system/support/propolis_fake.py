"""A fake propolis-server (API 5.0.0) and a fake illumos host, for testing the Propolis backend.

``FakePropolis`` is a real HTTP/1.1 server on 127.0.0.1 that behaves the way the API notes
(shared/propolis/API-NOTES.md) say the real server does, not the way propolis's own mock does:
- ``api-version`` is required on every request (websocket upgrades too): 400 without it, 400 above 5.0.0;
- every request body and query is validated against the OpenAPI document (``openapi_contract``)
  plus the spec checks JSON Schema cannot express (§4), and every response the fake sends is
  validated too (a fake that answers off-contract is a broken fake: see ``self.contract_errors``);
- the server state machine (NoVm → WaitingForInit → Active → Rundown → RundownComplete) and the
  instance state machine with generations starting at 1, asynchronous transitions after the 204,
  the request queue's ignore/deny rules with the exact 403 reasons, 424 / 409 / 410 / 500 bodies;
- ``GET /instance/state-monitor`` is a GET with a JSON body that long-polls until gen >= N and
  returns the latest state;
- ``/instance/serial`` is a real websocket (history replay, binary frames of guest output, input
  echoed back, close 1001 "VM stopped"), ``/instance/serial/history`` has the documented offsets.

``FakeIllumos`` answers the illumos commands the backend runs (zoneadm, zonecfg, dladm, zlogin
svccfg/svcadm, arp) and records them; ``svcadm enable`` of the propolis-server service starts a
``FakePropolis`` on the configured listen address and halting the zone stops it, as on a host.
Run as ``python propolis_fake.py illumos STATE.json ARGV...`` it answers one command from a state
file (the ansible-playbook tests use it as VMCTL_PROPOLIS_COMMAND_PREFIX).
"""

import base64
import contextlib
import copy
import http.server
import json
import os
import queue
import re
import select
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/system: run as a script too
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".cache", "collections"))
from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis import websocket  # noqa: E402

API_VERSION = (5, 0, 0)
BODY_MAX = 1 << 20
SERVICE = "svc:/system/illumos/propolis-server"

DENY = {
    "InstanceNotActive": "Operation requires an active instance",
    "StartInProgress": "Instance is currently starting",
    "HaltPending": "Instance is preparing to stop",
    "Halted": "Instance has already halted",
    "InstanceFailed": "Instance failed to start or halted due to a failure",
    "MigratedOut": "Instance has migrated out and is being torn down",
}

_DOCUMENT = None


def document():
    global _DOCUMENT
    if _DOCUMENT is None:
        # imported here: the ``illumos`` command mode needs only the standard library (it runs on a hypervisor's python3)
        from support.openapi_contract import ApiDocument
        _DOCUMENT = ApiDocument()
    return _DOCUMENT


JSON_NULL = "JSON null"  # a body that is the JSON value null (not: no body)


class HttpError(Exception):
    def __init__(self, status, message, error_code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


def no_instance():
    return HttpError(424, "Server not initialized (no instance)", "NoInstance")


class Publisher:
    """The state generation counter of one VM: starts at 1 (Creating)."""

    def __init__(self, cond, state):
        self.cond = cond
        self.gen = 1
        self.state = state
        self.closed = False  # the publisher was dropped: generations beyond ``gen`` never come

    def publish(self, state):
        self.gen += 1
        self.state = state
        self.cond.notify_all()


class Vm:
    def __init__(self, cond, request):
        self.properties = request["properties"]
        self.spec = request["init"]["value"]["spec"]
        self.publisher = Publisher(cond, "Creating")
        self.queue_state = "NotStarted"
        self.awaiting_stop = False
        self.awaiting_reboot = False
        self.requests = []
        self.stop_requested = threading.Event()
        self.output = bytearray()
        self.consoles = []  # queue.Queue per attached websocket client


class FakePropolis:
    """``with FakePropolis() as fake:`` — ``fake.address`` is ``127.0.0.1:<port>``."""

    def __init__(self, host="127.0.0.1", port=0, step_delay=0.05, init_delay=0.05, check_files=True, vnics=None):
        self.host, self.port = host, port
        self.step_delay, self.init_delay = step_delay, init_delay
        self.check_files = check_files
        self.vnics = vnics  # None: any VNIC name is taken to exist
        self.doc = document()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.requests = []  # every request: method, path, query, headers, body, status, errors
        self.contract_errors = []  # responses the fake sent that the document does not allow (fake bugs)
        self.fail_next_ensure = False
        self.fail_next_run = False
        self.server = None
        self.starts = 0
        self.abandoned_polls = 0  # state-monitor long polls whose client hung up (they end, as in dropshot)
        self._local = threading.local()
        self._reset()

    def _reset(self):
        self.server_state = "NoVm"
        self.vm = None
        self.publisher = None

    # --- process lifecycle ---------------------------------------------------------------------------
    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def running(self):
        return self.server is not None

    def start(self):
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = _Server((self.host, self.port), handler)
        self.port = self.server.server_address[1]
        self.starts += 1
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        """Like killing the process: the VM and every connection are gone."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.shutdown()
        server.close_all()
        with self.lock:
            if self.vm is not None:
                self._close_consoles(self.vm, None)
            if self.publisher is not None:
                self.publisher.closed = True
            self._reset()
            self.cond.notify_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- test hooks (not API) ------------------------------------------------------------------------
    def state(self):
        with self.lock:
            return (self.publisher.gen, self.publisher.state) if self.publisher else (None, None)

    def api_requests(self):
        return list(self.requests)

    def guest_poweroff(self):
        """The guest powers itself off: Stopping → Stopped → Destroyed."""
        with self.lock:
            vm = self.vm
            if vm is None or self.server_state != "Active" or vm.awaiting_stop:
                raise AssertionError("no running VM to power off")
            vm.awaiting_stop = True
            vm.stop_requested.set()
            vm.requests.append("Stop")
            self.cond.notify_all()

    def guest_output(self, data):
        with self.lock:
            self._emit(self.vm, data)

    # --- request handling ----------------------------------------------------------------------------
    def handle(self, handler):
        """Answer one request; returns ``(status, body or None, extra headers)`` or None after a websocket."""
        split = urllib.parse.urlsplit(handler.path)
        path, query = split.path, urllib.parse.parse_qs(split.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = {"method": handler.command, "path": path, "query": query, "headers": headers, "body": None,
                  "status": None, "errors": []}
        self.requests.append(record)
        operation = None
        try:
            self._check_version(headers)
            template, operations = self.doc.route(path)
            if template is None:
                raise HttpError(404, "Not Found")
            operation = operations.get(handler.command.lower())
            if operation is None:
                raise HttpError(405, "Method Not Allowed", headers={"Allow": ", ".join(m.upper() for m in operations)})
            record["template"] = template
            raw = self._read_body(handler, headers)
            problems = self.doc.query_errors(operation, query)
            if problems:
                record["errors"] += problems
                raise HttpError(400, "unable to parse query string: %s" % "; ".join(problems))
            body = self._parse_body(operation, headers, raw, record)
            if operation.get("x-dropshot-websocket") is not None:
                self._websocket(handler, template, query, record)
                return None
            self._local.connection = handler.connection
            status, answer = self.dispatch(handler.command, template, path, query, body)
        except HttpError as err:
            status, answer = err.status, {"error_code": err.error_code, "message": err.message}
            if err.error_code is None:
                del answer["error_code"]
            record["status"] = status
            return self._answer(record, operation, status, answer, err.headers)
        record["status"] = status
        return self._answer(record, operation, status, answer, {})

    def _answer(self, record, operation, status, body, headers):
        request_id = str(uuid.uuid4())
        if body is not None and status >= 400:
            body = dict(body, request_id=request_id)
        if operation is not None:
            problems = self.doc.response_errors(operation, status, None if body is JSON_NULL else body,
                                                has_body=body is not None)
            if problems:
                self.contract_errors.append((record["method"], record["path"], status, problems))
        return status, body, dict(headers, **{"x-request-id": request_id})

    @staticmethod
    def _check_version(headers):
        value = headers.get("api-version")
        if value is None:
            raise HttpError(400, 'missing expected header "api-version"')
        match = re.match(r"^(\d+)\.(\d+)\.(\d+)$", value.strip())
        if not match:
            raise HttpError(400, 'bad value for header "api-version": unexpected character in version %r' % value)
        if tuple(int(g) for g in match.groups()) > API_VERSION:
            raise HttpError(400, "server does not support this API version: %s" % value)
        # Lower versions are served with 5.0.0 semantics (the fake keeps no older shapes).

    @staticmethod
    def _read_body(handler, headers):
        if "chunked" in headers.get("transfer-encoding", ""):
            raise HttpError(400, "the fake does not read chunked bodies")
        length = int(headers.get("content-length") or 0)
        if length > BODY_MAX:
            handler.close_connection = True
            raise HttpError(400, "request body exceeded maximum size of %d bytes" % BODY_MAX)
        return handler.rfile.read(length) if length else b""

    def _parse_body(self, operation, headers, raw, record):
        schema, required = self.doc.request_body_schema(operation)
        if schema is None:
            return None
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type != "application/json":
            raise HttpError(400, 'expected content type "application/json", got "%s"' % content_type)
        if not raw:
            if required:
                record["errors"].append("missing body")
                raise HttpError(400, "unable to parse JSON body: EOF while parsing a value at line 1 column 0")
            return None
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            record["errors"].append("not JSON: %s" % err)
            raise HttpError(400, "unable to parse JSON body: %s" % err)
        record["body"] = body
        problems = self.doc.errors(schema, body)
        if problems:
            record["errors"] += problems
            raise HttpError(400, "unable to parse JSON body: %s" % problems[0])
        return body

    def dispatch(self, method, template, path, query, body):
        route = (method, template)
        if route == ("PUT", "/instance"):
            return self.ensure(body)
        if route == ("GET", "/instance/state-monitor"):
            return 200, self.monitor(body["gen"], self._local.connection)
        with self.lock:
            if route == ("GET", "/instance"):
                vm = self._vm()
                return 200, {"instance": {"properties": vm.properties, "state": self.publisher.state}}
            if route == ("GET", "/instance/spec"):
                vm = self._vm()
                return 200, {"properties": vm.properties, "state": self.publisher.state,
                             "spec": {"type": "Present", "value": self._read_back(vm.spec)}}
            if route == ("PUT", "/instance/state"):
                self.request_state(body)
                return 204, None
            if route == ("GET", "/instance/migration-status"):
                self._vm()
                return 200, {"migration_in": None, "migration_out": None}
            if route == ("GET", "/instance/serial/history"):
                return 200, self.history(query)
            if route == ("POST", "/instance/nmi"):
                self._active()
                return 200, JSON_NULL
            if template.startswith("/instance/disk/"):
                self._active()
                disk = urllib.parse.unquote(path.split("/")[3])
                if template.endswith("/snapshot/{snapshot_id}"):
                    raise HttpError(404, "Not Found", "no disk with id %s!" % disk)
                raise HttpError(404, "Not Found", "No crucible backend for id %s" % disk)
        raise HttpError(404, "Not Found")

    def _vm(self):
        if self.server_state == "NoVm":
            raise no_instance()
        return self.vm

    def _active(self):
        if self.server_state != "Active":
            raise no_instance()
        return self.vm

    @staticmethod
    def _read_back(spec):
        spec = copy.deepcopy(spec)
        board = spec["board"]
        if board.get("cpuid") is None:
            board["cpuid"] = {"entries": [{"leaf": 0, "subleaf": None, "eax": 0xD, "ebx": 0x68747541,
                                           "ecx": 0x444D4163, "edx": 0x69746E65}], "vendor": "amd"}
        if board.get("guest_hv_interface") == {"type": "bhyve"}:
            del board["guest_hv_interface"]
        spec.setdefault("smbios", None)
        return spec

    # --- ensure ---------------------------------------------------------------------------------------
    def ensure(self, request):
        with self.lock:
            if self.server_state in ("WaitingForInit", "Active", "Rundown"):
                raise HttpError(409, "instance already initialized", "AlreadyInitialized")
            if request["init"]["method"] != "Spec":
                spec_error = None
            else:
                spec_error = spec_problem(request["init"]["value"]["spec"])
            if spec_error:
                raise HttpError(400, "failed to generate internal instance spec: %s" % spec_error)
            if self.publisher is not None:
                self.publisher.closed = True  # a monitor waiting on the old VM now gets 410
                self.cond.notify_all()
            if request["init"]["method"] != "Spec":  # migration target: the source is never reachable here
                self.vm = Vm(self.cond, {"properties": request["properties"],
                                         "init": {"value": {"spec": {"board": {}, "components": {}}}}})
                self.publisher = self.vm.publisher
                self.publisher.state = "Migrating"
                self.server_state = "WaitingForInit"
            else:
                self.vm = Vm(self.cond, request)
                self.publisher = self.vm.publisher
                self.server_state = "WaitingForInit"
            vm = self.vm
        time.sleep(self.init_delay)  # ensure blocks until the VM objects exist
        with self.lock:
            failure = "migration source unreachable" if request["init"]["method"] != "Spec" else self._init_problem(vm)
            if self.fail_next_ensure:
                self.fail_next_ensure, failure = False, "injected failure"
            if failure:
                vm.init_failure = failure
                self.publisher.publish("Failed")
                self.server_state = "RundownComplete"  # the publisher lives on until the next ensure replaces it
                raise HttpError(500, "Internal Server Error", "Internal")
            self.server_state = "Active"
            threading.Thread(target=self._drive, args=(vm,), daemon=True).start()
        return 201, {"migrate": None}

    def _init_problem(self, vm):
        """Init-time failures (500, state Failed): vCPUs, com1, backing files, VNICs."""
        spec = vm.spec
        if not 1 <= spec["board"]["cpus"] <= 32:
            return "cpus %d out of range" % spec["board"]["cpus"]
        components = spec["components"]
        if not any(c["type"] == "serial_port" and c["component"]["num"] == "com1" for c in components.values()):
            return "no com1"
        for c in components.values():
            if c["type"] == "file_storage_backend" and self.check_files and not os.path.exists(c["component"]["path"]):
                return "cannot open %s" % c["component"]["path"]
            if c["type"] == "virtio_network_backend" and self.vnics is not None \
                    and c["component"]["vnic_name"] not in self.vnics:
                return "no VNIC %s" % c["component"]["vnic_name"]
            if c["type"] == "blob_storage_backend":
                base64.b64decode(c["component"]["base64"], validate=True)
        return None

    # --- instance state machine -----------------------------------------------------------------------
    def request_state(self, requested):
        vm = self._active()
        terminal = {"Stopped": "Halted", "Failed": "InstanceFailed", "MigratedOut": "MigratedOut"}
        if vm.queue_state in terminal:
            if requested == "Stop":
                return
            raise denied(terminal[vm.queue_state])
        if requested == "Run":
            if vm.awaiting_stop:
                raise denied("HaltPending")
            if vm.queue_state != "NotStarted":
                return
            vm.queue_state = "StartPending"
        elif requested == "Reboot":
            if vm.awaiting_stop:
                raise denied("HaltPending")
            if vm.queue_state == "NotStarted":
                raise denied("InstanceNotActive")
            if vm.queue_state == "StartPending":
                raise denied("StartInProgress")
            if vm.awaiting_reboot:
                return
            vm.awaiting_reboot = True
        else:
            if vm.awaiting_stop:
                return
            vm.awaiting_stop = True
            vm.stop_requested.set()
        vm.requests.append(requested)
        self.cond.notify_all()

    def _drive(self, vm):
        """The state driver: applies queued requests one at a time, publishing each step."""
        while True:
            with self.lock:
                while not vm.requests and self.vm is vm and self.server is not None:
                    self.cond.wait(0.2)
                if self.vm is not vm or self.server is None:
                    return
                requested = vm.requests.pop(0)
            if requested == "Run":
                self._run(vm)
            elif requested == "Reboot":
                self._step(vm, "Rebooting")
                with self.lock:
                    vm.awaiting_reboot = False
                self._step(vm, "Running")
            else:
                self._halt(vm, stopping=True)
                return
            with self.lock:
                if vm.queue_state in ("Failed", "Stopped"):
                    return

    def _step(self, vm, state):
        with self.lock:
            if self.vm is vm:
                self.publisher.publish(state)
        time.sleep(self.step_delay)

    def _run(self, vm):
        self._step(vm, "Starting")
        if vm.stop_requested.wait(self.step_delay):  # stopped while the backends were still starting
            with self.lock:
                vm.requests.remove("Stop")
            self._halt(vm, stopping=False)
            return
        with self.lock:
            if self.fail_next_run:
                self.fail_next_run = False
                vm.queue_state = "Failed"
                self.publisher.publish("Failed")
                self._rundown(vm, None)
                return
            vm.queue_state = "Running"
        self._step(vm, "Running")
        with self.lock:
            self._emit(vm, b"\x1b[0mfake-propolis OVMF\r\nBooting from disk0...\r\nDebian GNU/Linux 12 %s ttyS0\r\n\r\n%s login: "
                       % (vm.properties["name"].encode(), vm.properties["name"].encode()))

    def _halt(self, vm, stopping):
        if stopping:
            self._step(vm, "Stopping")
        with self.lock:
            if self.vm is not vm:
                return
            vm.queue_state = "Stopped"
            self.publisher.publish("Stopped")
            self.server_state = "Rundown"
            self._close_consoles(vm, (websocket.CLOSE_GOING_AWAY, "VM stopped"))
        time.sleep(self.step_delay)
        with self.lock:
            if self.vm is vm:
                self._rundown(vm, "Destroyed")

    def _rundown(self, vm, final):
        if final:
            self.publisher.publish(final)
        self.server_state = "RundownComplete"
        self.publisher.closed = True
        self._close_consoles(vm, (websocket.CLOSE_GOING_AWAY, "VM stopped"))
        self.cond.notify_all()

    def monitor(self, gen, connection=None):
        with self.lock:
            if self.server_state == "NoVm":
                raise no_instance()
            publisher = self.publisher
            while gen > publisher.gen:
                if publisher.closed or self.server is None:
                    raise HttpError(410, "No instance present; will never reach generation %d" % gen, "NoInstance")
                if connection is not None and _hung_up(connection):
                    self.abandoned_polls += 1
                    raise HttpError(499, "client went away")  # nobody reads this answer
                self.cond.wait(0.2)
            return {"gen": publisher.gen, "state": publisher.state,
                    "migration": {"migration_in": None, "migration_out": None}}

    # --- serial ---------------------------------------------------------------------------------------
    def _emit(self, vm, data):
        if vm is None or not data:
            return
        vm.output += data
        for console in vm.consoles:
            for i in range(0, len(data), 1024):
                console.put((websocket.OP_BINARY, bytes(data[i:i + 1024])))

    def _close_consoles(self, vm, close):
        for console in vm.consoles:
            console.put((websocket.OP_CLOSE, close))
        vm.consoles = []

    def history(self, query):
        vm = self._active()
        from_start, most_recent = query.get("from_start"), query.get("most_recent")
        if (from_start is None) == (most_recent is None):
            raise HttpError(400, "Exactly one of 'from_start' or 'most_recent' must be specified.")
        max_bytes = int(query["max_bytes"][-1]) if "max_bytes" in query else 16384
        total = len(vm.output)
        start = min(int(from_start[-1]), total) if from_start else max(total - int(most_recent[-1]), 0)
        data = bytes(vm.output[start:start + max_bytes])
        return {"data": list(data), "last_byte_offset": start + len(data)}

    def _websocket(self, handler, template, query, record):
        headers = record["headers"]
        if template != "/instance/serial":
            raise HttpError(404, "Not Found")
        if "upgrade" not in headers.get("connection", "").lower():
            raise HttpError(400, "expected connection upgrade")
        if headers.get("upgrade", "").lower() != "websocket":
            raise HttpError(400, "unexpected protocol for upgrade")
        if headers.get("sec-websocket-version") != "13":
            raise HttpError(400, "missing or invalid websocket version")
        key = headers.get("sec-websocket-key")
        if not key:
            raise HttpError(400, "missing websocket key")
        record["status"] = 101
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", websocket.accept_key(key))
        handler.send_header("x-request-id", str(uuid.uuid4()))
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        with self.lock:
            if self.server_state != "Active":
                return  # the real handler fails after the upgrade: the TCP connection just drops
            vm = self.vm
            console = queue.Queue()
            replay = b""
            if ("from_start" in query) != ("most_recent" in query):
                total = len(vm.output)
                start = min(int(query["from_start"][-1]), total) if "from_start" in query \
                    else max(total - int(query["most_recent"][-1]), 0)
                replay = bytes(vm.output[start:])
            vm.consoles.append(console)
        for i in range(0, len(replay), 16384):
            handler.wfile.write(websocket.encode_frame(websocket.OP_BINARY, replay[i:i + 16384], mask=False))
        threading.Thread(target=self._console_input, args=(handler, vm, console), daemon=True).start()
        while True:
            opcode, payload = console.get()
            if opcode is None:
                return
            if opcode == websocket.OP_CLOSE:
                if payload is not None:
                    with contextlib.suppress(OSError):
                        handler.wfile.write(websocket.encode_frame(websocket.OP_CLOSE, websocket.close_payload(*payload), mask=False))
                return
            try:
                handler.wfile.write(websocket.encode_frame(opcode, payload, mask=False))
            except OSError:
                return

    def _console_input(self, handler, vm, console):
        """Client frames: binary bytes are typed into COM1 (the fake guest echoes them); close ends it."""
        while True:
            try:
                _fin, opcode, payload, masked = websocket.read_frame(handler.rfile)
            except (EOFError, OSError, websocket.WebSocketError):
                opcode, payload, masked = websocket.OP_CLOSE, b"", True
            if not masked:  # RFC 6455: a server must close on an unmasked client frame
                opcode = websocket.OP_CLOSE
            if opcode == websocket.OP_CLOSE:
                with self.lock:
                    if console in vm.consoles:
                        vm.consoles.remove(console)
                console.put((None, None))
                return
            if opcode == websocket.OP_BINARY:
                with self.lock:
                    if self.vm is vm:
                        self._emit(vm, payload)


def _hung_up(sock):
    """Whether the client closed its end (readable with nothing to read)."""
    readable, _w, _x = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def denied(reason):
    return HttpError(403, "Forbidden", "instance state change not allowed: %s" % DENY[reason])


def spec_problem(spec):
    """The §4 semantic checks (after JSON Schema), as the real server words them, or None."""
    components = spec["components"]
    storage = ("file_storage_backend", "blob_storage_backend", "crucible_storage_backend")
    used, paths, serial, boot = set(), {}, set(), 0
    for name, comp in components.items():
        kind, body = comp["type"], comp["component"]
        if "backend_id" in body:
            backend = components.get(body["backend_id"])
            if body["backend_id"] == name:
                return "device %s has the same name as its backend" % name
            wanted = storage if kind in ("virtio_disk", "nvme_disk") else ("virtio_network_backend", "dlpi_network_backend")
            if backend is None or backend["type"] not in wanted:
                what = "storage" if kind in ("virtio_disk", "nvme_disk") else "network"
                return "%s backend %s not found for device %s" % (what, body["backend_id"], name)
            used.add(body["backend_id"])
        if "pci_path" in body:
            pci = body["pci_path"]
            if pci["device"] > 31 or pci["function"] > 7:
                return "invalid PCI path %s" % pci
            key = (pci["bus"], pci["device"], pci["function"])
            if key in paths:
                return "a PCI device is already attached at %d.%d.%d" % key
            paths[key] = name
        if kind == "serial_port":
            if body["num"] in serial:
                return "serial port %s is already specified" % body["num"]
            serial.add(body["num"])
        if kind == "boot_settings":
            boot += 1
            if boot > 1:
                return "boot settings were already specified"
            for entry in body["order"]:
                target = components.get(entry["id"])
                if target is None or target["type"] not in ("virtio_disk", "nvme_disk"):
                    return "boot option %s is not an attached device" % entry["id"]
        if kind in ("soft_npu_pci_port", "soft_npu_port", "soft_npu_p9", "p9fs", "dlpi_network_backend",
                    "migration_failure_injector"):
            return "support for component %s compiled out via falcon" % name
    for name, comp in components.items():
        if comp["type"] in storage + ("virtio_network_backend",) and name not in used:
            return "backend %s not used by any device" % name
    return None


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args):
        self.connections = set()
        super().__init__(*args)

    def handle_error(self, request, client_address):
        pass  # connections cut by stop() while a long poll waits

    def process_request(self, request, client_address):
        self.connections.add(request)
        super().process_request(request, client_address)

    def close_all(self):
        for sock in list(self.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None

    def log_message(self, *args):
        pass

    def _any(self):
        result = self.fake.handle(self)
        if result is None:
            return
        status, body, headers = result
        data = json.dumps(None if body is JSON_NULL else body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _any


# --- the illumos host ---------------------------------------------------------------------------------
class CommandFailed(Exception):
    pass


class FakeIllumos:
    """Answers illumos commands like a host with zones and VNICs; ``calls`` lists every argv.
    ``state["failing"]`` (``{command: stderr}``) makes every run of a command fail with that message.

    ``servers`` maps listen addresses to FakePropolis objects to start when the zone's
    propolis-server service is enabled (and stop when the zone halts). ``state`` is JSON-able.
    """

    def __init__(self, state=None, servers=None):
        self.state = state or {"zones": {}, "vnics": {}, "arp": {}}
        self.servers = servers or {}
        self.calls = []

    def __call__(self, argv, check=True, timeout=300):
        from ansible_collections.vmctl.core.plugins.module_utils.errors import IllumosCommandFailed
        from ansible_collections.vmctl.core.plugins.module_utils.proc import Result as CommandResult
        self.calls.append(list(argv))
        try:
            out = self.answer(list(argv))
            result = CommandResult(0, out, "")
        except CommandFailed as err:
            result = CommandResult(1, "", str(err) + "\n")
        if check and result.rc:
            raise IllumosCommandFailed("%s failed (exit 1): %s" % (" ".join(argv), result.stderr.strip()), argv=list(argv))
        return result

    def add_vnic(self, name, mac, over="e1000g0"):
        self.state["vnics"][name] = {"mac": mac, "over": over}

    def zone(self, name):
        zone = self.state["zones"].get(name)
        if zone is None:
            raise CommandFailed("zoneadm: %s: No such zone configured" % name)
        return zone

    def answer(self, argv):
        cmd = argv[0]
        failing = self.state.get("failing", {}).get(cmd)  # a test hook: {"zoneadm": "its stderr"} fails every zoneadm
        if failing:
            raise CommandFailed(failing)
        if cmd == "zoneadm" and argv[1:] == ["list", "-cp"]:
            lines = ["0:global:running:/::ipkg:shared"]
            for i, (name, zone) in enumerate(sorted(self.state["zones"].items())):
                zoneid = str(i + 1) if zone["state"] == "running" else "-"
                lines.append("%s:%s:%s:%s:%s:sparse:excl" % (zoneid, name, zone["state"], zone["path"], zone["uuid"]))
            return "\n".join(lines) + "\n"
        if cmd == "zonecfg":
            name, rest = argv[2], argv[3:]
            if rest == ["delete", "-F"]:
                if self.zone(name)["state"] != "configured":
                    raise CommandFailed("Zone %s is in use, it must be uninstalled first" % name)
                del self.state["zones"][name]
                return ""
            if name in self.state["zones"]:
                raise CommandFailed("%s: zone already exists" % name)
            script = rest[0]
            path = re.search(r"set zonepath=([^;]+)", script).group(1).strip()
            self.state["zones"][name] = {"state": "configured", "config": script, "path": path,
                                         "uuid": str(uuid.uuid4()), "props": {}, "service": "disabled"}
            return ""
        if cmd == "zoneadm":
            name, verb = argv[2], argv[3]
            zone = self.zone(name)
            allowed = {"install": ("configured", "installed"), "boot": ("installed", "running"),
                       "halt": ("running", "installed"), "uninstall": ("installed", "configured")}
            if verb not in allowed:
                raise CommandFailed("zoneadm: unknown subcommand %s" % verb)
            before, after = allowed[verb]
            if zone["state"] != before:
                raise CommandFailed("zoneadm: zone '%s': %s operation is invalid for %s zones" % (name, verb, zone["state"]))
            zone["state"] = after
            if verb == "halt":
                zone["service"] = "disabled"
                for server in self.servers.values():
                    if server.running and zone.get("listening") == server.address:
                        server.stop()
                zone.pop("listening", None)
            return ""
        if cmd == "zlogin":
            name, inner = argv[1], argv[2:]
            zone = self.zone(name)
            if zone["state"] != "running":
                raise CommandFailed("zlogin: login allowed only to running zones (%s is '%s')." % (name, zone["state"]))
            return self.in_zone(zone, inner)
        if cmd == "dladm" and argv[1] == "show-vnic":
            name = argv[-1]
            vnic = self.state["vnics"].get(name)
            if vnic is None:
                raise CommandFailed("dladm: invalid vnic name '%s': object not found" % name)
            return "%s:%s:%s\n" % (name, vnic["over"], vnic["mac"].replace(":", "\\:"))
        if cmd == "arp" and argv[1:] == ["-an"]:
            lines = ["Net to Media Table: IPv4", "Device   IP Address               Mask      Flags      Phys Addr",
                     "------ -------------------- --------------- -------- ---------------",
                     "e1000g0 192.168.1.1         255.255.255.255 SPLA     0:c:29:aa:bb:1"]
            for ip, mac in self.state["arp"].items():
                short = ":".join("%x" % int(p, 16) for p in mac.split(":"))
                lines.append("e1000g0 %-20s 255.255.255.255          %s" % (ip, short))
            return "\n".join(lines) + "\n"
        raise CommandFailed("%s: command not found" % cmd)

    def in_zone(self, zone, argv):
        if argv[:2] == ["svccfg", "-s"] and argv[2] == SERVICE and argv[3] == "setprop":
            key, value = argv[4].split("=", 1)
            zone["props"][key] = value
            return ""
        if argv[:1] == ["svcadm"] and argv[-1] == SERVICE + ":default":
            if argv[1] == "enable":
                zone["service"] = "online"
                address = "%s:%s" % (zone["props"].get("config/listen_addr"), zone["props"].get("config/listen_port"))
                zone["listening"] = address
                server = self.servers.get(address)
                if server is not None and not server.running:
                    server.start()
            elif argv[1] == "disable":
                zone["service"] = "disabled"
            return ""
        raise CommandFailed("%s: not found in zone" % argv[0])


def main(argv):
    """``propolis_fake.py illumos STATE.json ARGV...``: answer one command from the state file."""
    if len(argv) < 3 or argv[0] != "illumos":
        sys.stderr.write("usage: propolis_fake.py illumos STATE.json ARGV...\n")
        return 2
    path = argv[1]
    with open(path) as f:
        host = FakeIllumos(json.load(f))
    host.calls = []
    try:
        out = host.answer(argv[2:])
        code = 0
    except CommandFailed as err:
        out, code = "", 1
        sys.stderr.write(str(err) + "\n")
    host.state.setdefault("log", []).append(argv[2:])
    with open(path + ".tmp", "w") as f:
        json.dump(host.state, f)
    os.replace(path + ".tmp", path)
    sys.stdout.write(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
