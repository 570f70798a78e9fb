"""What the access records (the `asgiws.access` logger) share between HTTP and WebSocket.

Each record carries its named fields as `extra=` attributes (listed in docs/observability.md),
so a JSON formatter (`--log-format json`, or a formatter of your own in a --log-config file)
gets structure without parsing the message text. This module is standard library only: the
HTTP protocol (`asgiws.http.protocol`) and the WebSocket bridge (`asgiws.asgi.websocket`) both
use it, and neither imports the other for it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, FrozenSet, Optional, Tuple

REDACTED = "[redacted]"


def client_text(client: Optional[Tuple[str, int]]) -> str:
    """`127.0.0.1:51234`, or `-` when there is no peer address (a Unix socket)."""
    return f"{client[0]}:{int(client[1])}" if client else "-"


def redact_query(query_string: bytes, names: FrozenSet[str]) -> str:
    """The query string as text, with the value of each parameter in `names` (lower-case)
    replaced by [redacted]; the names, their order and the other values are kept as sent.

    Browsers cannot set headers on a WebSocket, so tokens travel in its query string: this keeps
    them out of log files. A name is compared percent-decoded and without regard to case
    (`Token`, `%74oken`), so spelling it differently does not get a credential through.
    """
    text = query_string.decode("latin-1")
    if not names or not text:
        return text
    parts = text.split("&")
    changed = False
    for index, part in enumerate(parts):
        name, equals, _ = part.partition("=")
        if equals and urllib.parse.unquote_plus(name).lower() in names:
            parts[index] = name + "=" + REDACTED
            changed = True
    return "&".join(parts) if changed else text


def fields(scope: Any, query: str, status: int, duration: float, sent: int) -> Dict[str, Any]:
    """The named fields every access record has (HTTP request or WebSocket session)."""
    return {
        "type": scope["type"],
        "client": client_text(scope.get("client")),
        "method": scope.get("method", "GET"),
        "path": (scope.get("raw_path") or b"").decode("latin-1") or scope.get("path", ""),
        "query": query,
        "http_version": scope.get("http_version", "1.1"),
        "status": status,
        "duration_ms": round(duration * 1000.0, 3),
        "bytes": sent,
    }
