# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A client for propolis-server's HTTP API, version 5.0.0 (stdlib ``http.client`` only).

Every request, the websocket upgrade included, carries ``api-version: 5.0.0``: the server answers
400 without it. Error answers become ``PropolisApiError`` naming the VM, the request and
propolis's ``error_code`` and ``message``; a server that does not answer at all becomes
``PropolisUnreachable``.
"""

from __future__ import annotations

__metaclass__ = type

import http.client
import json
import socket
import time
import urllib.parse

from ansible_collections.vmctl.core.plugins.module_utils.backends.propolis import websocket
from ansible_collections.vmctl.core.plugins.module_utils.errors import (
    InvalidPropolisAddress, PropolisApiError, PropolisBodyTooLarge, PropolisTimeout, PropolisUnreachable,
    PropolisVmFailed, PropolisVmGone,
)

API_VERSION = "5.0.0"
DEFAULT_PORT = 12400
BODY_MAX = 1 << 20  # dropshot's default_request_body_max_bytes

# Published propolis InstanceState values.
TERMINAL_STATES = ("Destroyed", "Failed")


def split_address(address):
    """``("host", port)`` of ``host:port`` (``[v6]:port`` too); the port defaults to 12400."""
    parsed = urllib.parse.urlsplit("//" + address)
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise InvalidPropolisAddress("invalid propolis-server address %r" % address)
    return parsed.hostname, port


class PropolisClient:
    """One propolis-server (which holds one VM). ``vm`` names the VM in error messages."""

    def __init__(self, address, vm, timeout=15.0):
        self.address = address
        self.host, self.port = split_address(address)
        self.vm = vm
        self.timeout = timeout

    def headers(self, body=None):
        headers = {"api-version": API_VERSION, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def request(self, method, path, body=None, timeout=None, expect=(200,)):
        """``(status, parsed JSON or None)``; statuses outside ``expect`` raise PropolisApiError.

        ``timeout=None`` uses the client's; the state monitor passes the time left until its deadline.
        """
        what = "%s %s" % (method, path)
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            if len(data) > BODY_MAX:
                raise PropolisBodyTooLarge("VM %s: %s body is %d bytes, over propolis-server's %d-byte limit"
                                           % (self.vm, what, len(data), BODY_MAX))
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout if timeout is None else timeout)
        try:
            conn.request(method, path, body=data, headers=self.headers(body))
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except socket.timeout:
            raise PropolisTimeout("VM %s: propolis-server at %s did not answer %s in time" % (self.vm, self.address, what),
                                  request=what, address=self.address)
        except (OSError, http.client.HTTPException) as err:
            raise PropolisUnreachable("VM %s: cannot reach propolis-server at %s (%s): %s"
                                      % (self.vm, self.address, what, err), request=what, address=self.address)
        finally:
            conn.close()
        parsed = None
        if raw:
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except ValueError:
                parsed = {"message": raw.decode("utf-8", "replace")[:500]}
        if status not in expect:
            raise api_error(self.vm, what, status, parsed)
        return status, parsed

    # --- endpoints ---------------------------------------------------------------------------------
    def instance(self):
        """The ``instance`` object of ``GET /instance``, or None when the server has no VM (424)."""
        status, body = self.request("GET", "/instance", expect=(200, 424))
        return body["instance"] if status == 200 else None

    def ensure(self, request):
        return self.request("PUT", "/instance", request, expect=(201,))[1]

    def request_state(self, state):
        """Queue ``Run``, ``Stop`` or ``Reboot`` (the change happens later; watch it with ``wait_for``)."""
        self.request("PUT", "/instance/state", state, expect=(204,))

    def monitor(self, gen, timeout):
        """``GET /instance/state-monitor`` with body ``{"gen": gen}``: blocks until the generation is reached."""
        return self.request("GET", "/instance/state-monitor", {"gen": gen}, timeout=timeout)[1]

    def wait_for(self, wanted, timeout, gen=0):
        """Follow the state monitor until the state is in ``wanted`` (or terminal); returns the last answer.

        The monitor returns the *latest* state once its generation reaches ``gen``, so states may be
        skipped: a terminal state that is not wanted ends the wait with an error. A 410 (the VM was
        run down and the generation will never come) is returned as ``{"state": "Destroyed"}``.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PropolisTimeout("VM %s: still not %s after %ss" % (self.vm, " or ".join(wanted), timeout),
                                      wanted=list(wanted))
            try:
                answer = self.monitor(gen, timeout=left)
            except PropolisApiError as err:
                if err.details.get("status") == 410:
                    return {"gen": gen, "state": "Destroyed", "gone": True}
                raise
            except PropolisTimeout:
                raise PropolisTimeout("VM %s: still not %s after %ss" % (self.vm, " or ".join(wanted), timeout),
                                      wanted=list(wanted))
            if answer["state"] in wanted:
                return answer
            if answer["state"] in TERMINAL_STATES:
                error = PropolisVmFailed if answer["state"] == "Failed" else PropolisVmGone
                raise error("VM %s: propolis reports %s while waiting for %s" % (self.vm, answer["state"], " or ".join(wanted)),
                            state=answer["state"])
            gen = answer["gen"] + 1

    def wait_until_up(self, timeout, interval=0.2):
        """Wait until the server answers HTTP at all (424 = up without a VM); returns the instance or None."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.instance()
            except PropolisUnreachable as err:
                if time.monotonic() >= deadline:
                    raise PropolisUnreachable("%s; it did not come up within %ss" % (err.message, timeout),
                                              hint="Check the propolis-server service in the VM's zone "
                                                   "(zlogin <zone> svcs -xv) and that %s is reachable from here" % self.address,
                                              **err.details)
                time.sleep(interval)

    def serial_path(self, most_recent=16384, from_start=None):
        return "/instance/serial" + _query(from_start=from_start, most_recent=None if from_start is not None else most_recent)

    def serial_url(self, most_recent=16384):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "ws://%s:%d%s" % (host, self.port, self.serial_path(most_recent))

    def serial(self, most_recent=16384, from_start=None, timeout=10.0, buffered=True):
        """A websocket on the serial console: ``recv()`` gives ``(OP_BINARY, guest output)`` messages."""
        path = self.serial_path(most_recent, from_start)
        try:
            return websocket.WebSocketClient.connect(self.host, self.port, path, self.headers(), timeout=timeout,
                                                     buffered=buffered)
        except websocket.WebSocketHandshakeError as err:
            try:
                parsed = json.loads(err.body)
            except ValueError:
                parsed = {"message": err.body}
            raise api_error(self.vm, "GET %s (websocket)" % path, err.status, parsed)
        except (OSError, websocket.WebSocketError) as err:
            raise PropolisUnreachable("VM %s: cannot open the serial console at %s: %s" % (self.vm, self.address, err),
                                      address=self.address)


def _query(**params):
    given = [(k, v) for k, v in params.items() if v is not None]
    return "?" + urllib.parse.urlencode(given) if given else ""


def api_error(vm, what, status, body):
    body = body if isinstance(body, dict) else {}
    error_code, message = body.get("error_code"), body.get("message") or "(no message)"
    text = "VM %s: propolis-server answered %s with %s: %s" % (vm, what, status, message)
    if error_code:
        text += " [%s]" % error_code
    hint = None
    if status == 424:
        hint = "propolis-server has no active VM; start it again (vmctl.core.vm_state state=running)"
    elif status == 403:
        hint = "The VM is in the middle of another state change; wait for it and retry"
    elif status == 409:
        hint = "This propolis-server already holds a VM; stop it (the VM is then destroyed) before creating another"
    return PropolisApiError(text, hint=hint, status=status, error_code=error_code, propolis_message=message,
                            request=what, request_id=body.get("request_id"))
