"""The WebSocket opening handshake, server side (RFC 6455 §4.2).

`validate_request` checks an upgrade request's method, version and headers and returns what the
rest of the server needs (key, subprotocols offered, extension offers); a bad request raises
`HandshakeError` carrying the HTTP status to answer with. `build_response` writes the 101.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
SUPPORTED_VERSION = b"13"

Headers = Sequence[Tuple[bytes, bytes]]


class HandshakeError(Exception):
    """An upgrade request the server must refuse with `status` (RFC 6455 §4.2.1-4.2.2)."""

    def __init__(self, status: int, reason: str, headers: Iterable[Tuple[bytes, bytes]] = ()):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


@dataclass(frozen=True)
class HandshakeRequest:
    key: bytes
    subprotocols: List[str]
    extensions: List[Tuple[str, List[Tuple[str, Optional[str]]]]]


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def header_tokens(headers: Headers, name: bytes) -> List[bytes]:
    """All comma-separated tokens of every `name` header, stripped and lowercased."""
    tokens: List[bytes] = []
    for key, value in headers:
        if key.lower() == name:
            tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def is_websocket_upgrade(headers: Headers) -> bool:
    """Does this request ask for a WebSocket (an `Upgrade` header with the token websocket)?"""
    return b"websocket" in header_tokens(headers, b"upgrade")


def validate_request(method: str, http_version: str, headers: Headers) -> HandshakeRequest:
    """Check an upgrade request against RFC 6455 §4.2.1; raise HandshakeError if it fails."""
    if method != "GET":
        raise HandshakeError(400, "WebSocket handshake must use GET")
    if http_version != "1.1":
        raise HandshakeError(400, "WebSocket handshake needs HTTP/1.1")
    if b"websocket" not in header_tokens(headers, b"upgrade"):
        raise HandshakeError(400, "missing Upgrade: websocket")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise HandshakeError(400, "missing Connection: upgrade")

    versions = [v for k, v in headers if k.lower() == b"sec-websocket-version"]
    if len(versions) != 1 or versions[0].strip() != SUPPORTED_VERSION:
        if not versions:
            raise HandshakeError(400, "missing Sec-WebSocket-Version")
        # §4.2.2: answer an unsupported version with 426 and the versions we speak.
        raise HandshakeError(426, "unsupported WebSocket version",
                             [(b"sec-websocket-version", SUPPORTED_VERSION)])

    keys = [v for k, v in headers if k.lower() == b"sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError(400, "need exactly one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")

    subprotocols = [
        t.strip().decode("latin-1")
        for k, v in headers if k.lower() == b"sec-websocket-protocol"
        for t in v.split(b",") if t.strip()
    ]
    try:
        extensions = parse_extensions(
            [v for k, v in headers if k.lower() == b"sec-websocket-extensions"])
    except ValueError:
        raise HandshakeError(400, "malformed Sec-WebSocket-Extensions") from None
    return HandshakeRequest(key=key, subprotocols=subprotocols, extensions=extensions)


def parse_extensions(values: Iterable[bytes]) -> List[Tuple[str, List[Tuple[str, Optional[str]]]]]:
    """Parse Sec-WebSocket-Extensions (RFC 6455 §9.1) into [(name, [(param, value|None)])].
    Quoted parameter values are unquoted. Raises ValueError on malformed input."""
    offers = []
    for value in values:
        text = value.decode("latin-1")
        for offer in _split_outside_quotes(text, ","):
            parts = [p.strip() for p in _split_outside_quotes(offer, ";")]
            if not parts or not parts[0] or not _is_token(parts[0]):
                raise ValueError(f"bad extension {offer!r}")
            params: List[Tuple[str, Optional[str]]] = []
            for part in parts[1:]:
                name, eq, param_value = part.partition("=")
                name = name.strip()
                if not _is_token(name):
                    raise ValueError(f"bad extension parameter {part!r}")
                if eq:
                    param_value = param_value.strip()
                    if len(param_value) >= 2 and param_value[0] == param_value[-1] == '"':
                        param_value = param_value[1:-1]
                    if not _is_token(param_value):
                        raise ValueError(f"bad extension parameter value {part!r}")
                    params.append((name, param_value))
                else:
                    params.append((name, None))
            offers.append((parts[0], params))
    return offers


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def _split_outside_quotes(text: str, sep: str) -> List[str]:
    parts: List[str] = []
    current: List[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def build_response(key: bytes, subprotocol: Optional[str], extensions: Optional[bytes],
                   headers: Iterable[Tuple[bytes, bytes]]) -> bytes:
    """The 101 Switching Protocols response (RFC 6455 §4.2.2 step 5)."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(key),
    ]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    if extensions:
        lines.append(b"Sec-WebSocket-Extensions: " + extensions)
    for name, value in headers:
        lines.append(bytes(name) + b": " + bytes(value))
    return b"\r\n".join(lines) + b"\r\n\r\n"
