"""The fields the server adds to every HTTP response it writes — plain HTTP, the WebSocket 101,
and WebSocket refusals: `server` (RFC 9110 §10.2.4) and `date` (RFC 9110 §6.6.1; an origin
server with a clock must send it) unless the app sent its own or --no-server-header /
--no-date-header say not to, and the --header fields, always (as uvicorn adds them).

`ResponseFields` holds that choice, built once per `Config`; the protocols ask it per response."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Iterable, List, Optional, Sequence, Tuple

SERVER_NAME = b"asgiws"

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


class ResponseFields:
    """What the server adds to a response: `server`, `date`, and the --header fields."""

    def __init__(self, server: bool = True, date: bool = True, extra: Sequence[str] = ()) -> None:
        pairs: List[Tuple[bytes, bytes]] = []
        for entry in extra:  # "Name: value", checked by the config
            name, _, value = entry.partition(":")
            pairs.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
        server_value: Optional[bytes] = SERVER_NAME if server else None
        for field, field_value in pairs:
            if field == b"server":  # --header "server: x" replaces ours, as uvicorn does it
                server_value = field_value
        self.extra: List[Tuple[bytes, bytes]] = [(n, v) for n, v in pairs if n != b"server"]
        self.date = date
        self.server: Optional[Tuple[bytes, bytes]] = None if server_value is None else (b"server", server_value)
        # For the HTTP/1.1 head: the server line and the --header lines, each ready to join.
        self.server_line = b"" if server_value is None else b"server: " + server_value + b"\r\n"
        self.extra_lines = b"".join(name + b": " + value + b"\r\n" for name, value in self.extra)

    def head_lines(self, has_date: bool = False, has_server: bool = False) -> List[bytes]:
        """The header lines to add to a response whose own headers have (or lack) date and server."""
        lines = []
        if self.date and not has_date:
            lines.append(date_header())
        if self.server_line and not has_server:
            lines.append(self.server_line)
        if self.extra_lines:
            lines.append(self.extra_lines)
        return lines

    def fields_for(self, headers: Iterable[Tuple[bytes, bytes]]) -> List[Tuple[bytes, bytes]]:
        """The (name, value) pairs to add to `headers` (the app's): date and server when it lacks
        them, then the --header fields."""
        present = {bytes(name).lower() for name, _ in headers}
        fields = []
        if self.date and b"date" not in present:
            _refresh_date()
            fields.append((b"date", _date_value))
        if self.server is not None and b"server" not in present:
            fields.append(self.server)
        return fields + self.extra

