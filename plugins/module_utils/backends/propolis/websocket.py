# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small RFC 6455 websocket client (stdlib only), and the framing both ends share.

Enough for propolis-server's serial console: binary frames in both directions, text frames for
control messages, ping/pong, and close frames with a code and reason. No extensions, no
subprotocols, ``ws://`` only (propolis-server speaks plain HTTP).
"""

from __future__ import annotations

__metaclass__ = type

import base64
import hashlib
import os
import socket
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS = 1000, 1001, 1005


class WebSocketError(Exception):
    """A protocol or connection problem (callers turn it into their own engine error)."""


def accept_key(key):
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def encode_frame(opcode, payload=b"", mask=True, fin=True):
    """One frame; clients must mask (``mask=True``), servers must not."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _xor(payload, key)


def _xor(data, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def _read_exact(reader, count):
    data = reader.read(count)
    if data is None or len(data) < count:
        raise WebSocketError("connection closed in the middle of a frame" if data else "connection closed")
    return data


def read_frame(reader, max_size=16 << 20):
    """``(fin, opcode, payload, masked)`` of the next frame from a buffered binary ``reader``."""
    first = reader.read(2)
    if not first:
        raise EOFError("connection closed")
    if len(first) < 2:
        first += _read_exact(reader, 2 - len(first))
    fin, opcode = bool(first[0] & 0x80), first[0] & 0x0F
    if first[0] & 0x70:
        raise WebSocketError("frame uses reserved bits (no extension was negotiated)")
    masked, length = bool(first[1] & 0x80), first[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", _read_exact(reader, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _read_exact(reader, 8))[0]
    if length > max_size:
        raise WebSocketError("frame of %d bytes is larger than %d" % (length, max_size))
    key = _read_exact(reader, 4) if masked else None
    payload = _read_exact(reader, length) if length else b""
    return fin, opcode, (_xor(payload, key) if masked else payload), masked


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode("utf-8")


def parse_close(payload):
    """``(code, reason)`` of a close frame's payload (1005 when it carries no code)."""
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class WebSocketClient:
    """``WebSocketClient.connect(host, port, path, headers)``; ``recv()`` gives ``(opcode, data)``.

    ``recv`` answers pings and, on a close frame from the server, answers it and returns
    ``(OP_CLOSE, (code, reason))``; ``self.close_code`` keeps the code.
    """

    def __init__(self, sock, reader):
        self.sock = sock
        self.reader = reader
        self.close_code = None
        self.close_reason = None

    @classmethod
    def connect(cls, host, port, path, headers=None, timeout=10.0, buffered=True):
        """``buffered=False`` reads no byte past the frame asked for, so ``select`` on ``sock`` tells
        truly whether a next frame is there (what an interactive relay needs)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Upgrade: websocket",
                     "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: 13"]
            lines += ["%s: %s" % item for item in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            reader = sock.makefile("rb", buffering=-1 if buffered else 0)
            status_line = reader.readline(65537).decode("latin-1").strip()
            response_headers = {}
            while True:
                line = reader.readline(65537).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, value = (line.split(":", 1) + [""])[:2]
                response_headers[name.strip().lower()] = value.strip()
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                length = int(response_headers.get("content-length") or 0)
                body = reader.read(length).decode("utf-8", "replace") if length else ""
                raise WebSocketHandshakeError(status_line, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None, body)
            if response_headers.get("sec-websocket-accept") != accept_key(key):
                raise WebSocketError("server answered the upgrade with a wrong Sec-WebSocket-Accept")
            return cls(sock, reader)
        except BaseException:
            sock.close()
            raise

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, opcode, payload):
        self.sock.sendall(encode_frame(opcode, payload, mask=True))

    def send_binary(self, data):
        self.send(OP_BINARY, data)

    def recv(self):
        """The next data message (fragments joined), or ``(OP_CLOSE, (code, reason))``."""
        message_opcode, parts = None, []
        while True:
            try:
                fin, opcode, payload, _masked = read_frame(self.reader)
            except EOFError:
                raise WebSocketError("connection closed without a close frame")
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.close_code, self.close_reason = parse_close(payload)
                try:
                    self.send(OP_CLOSE, close_payload(self.close_code if self.close_code != CLOSE_NO_STATUS else CLOSE_NORMAL))
                except OSError:
                    pass
                self.sock.close()
                return OP_CLOSE, (self.close_code, self.close_reason)
            if opcode != OP_CONTINUATION:
                message_opcode = opcode
            parts.append(payload)
            if fin:
                return message_opcode, b"".join(parts)

    def close(self, code=CLOSE_NORMAL, reason=""):
        try:
            self.send(OP_CLOSE, close_payload(code, reason))
        except OSError:
            pass
        self.sock.close()


class WebSocketHandshakeError(WebSocketError):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_line, status, body):
        super(WebSocketHandshakeError, self).__init__("websocket upgrade refused: %s %s" % (status_line, body))
        self.status = status
        self.body = body


class MessageStream:
    """A websocket seen as a byte stream, the way a console relay uses a socket: ``fileno``,
    ``recv`` (guest output; ``b""`` once the connection closed; ``None`` for a message that carries
    no output, such as a text control message), ``sendall`` (binary frames) and ``close``.
    Open the client with ``buffered=False`` so that ``select`` on ``fileno`` is exact."""

    def __init__(self, client):
        self.client = client

    def fileno(self):
        return self.client.sock.fileno()

    def recv(self, _size=None):
        try:
            opcode, data = self.client.recv()
        except (OSError, WebSocketError):
            return b""
        if opcode == OP_CLOSE:
            return b""
        return (data or None) if opcode == OP_BINARY else None

    def sendall(self, data):
        self.client.send_binary(data)

    def close(self):
        self.client.close()
