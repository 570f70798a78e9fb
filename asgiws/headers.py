"""The fields the server adds to every HTTP response it writes — plain HTTP, the WebSocket 101,
and WebSocket refusals — unless the app sent its own: `server` (RFC 9110 §10.2.4) and `date`
(RFC 9110 §6.6.1; an origin server with a clock must send it)."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Iterable, List, Tuple

SERVER_NAME = b"asgiws"
SERVER_HEADER = b"server: " + SERVER_NAME + b"\r\n"

_date_second = -1
_date_value = b""
_date_line = b""


def _refresh_date() -> None:
    global _date_second, _date_value, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_value = formatdate(now, usegmt=True).encode("ascii")
        _date_line = b"date: " + _date_value + b"\r\n"


def date_header() -> bytes:
    """The `Date` header line, `date: <IMF-fixdate>\\r\\n`, formatted at most once per second."""
    _refresh_date()
    return _date_line


def default_fields(headers: Iterable[Tuple[bytes, bytes]]) -> List[Tuple[bytes, bytes]]:
    """The (name, value) pairs of `date` and `server` that `headers` (the app's) lacks."""
    present = {bytes(name).lower() for name, _ in headers}
    fields = []
    if b"date" not in present:
        _refresh_date()
        fields.append((b"date", _date_value))
    if b"server" not in present:
        fields.append((b"server", SERVER_NAME))
    return fields
