"""The Origin policy for WebSocket handshakes (RFC 6455 §10.2), sans-I/O.

A browser lets a page open a WebSocket to any server, and sends that server's cookies with the
handshake: unlike `fetch`, no CORS preflight and no same-origin rule stand in the way. A page on
another site can therefore talk to the app as the logged-in user (cross-site WebSocket
hijacking). What the server can check is `Origin`, which the browser sets to the page's origin
and a page cannot change. A client that is not a browser can send any Origin, or none, but it
has no victim's cookies to use.

    policy = OriginPolicy(["https://app.example.com", "same-host"])   # ValueError on a bad entry
    policy.check(headers, scheme)   # raises HandshakeError(403, reason) to refuse

`headers` are the request's (the ASGI scope's: lower-case names, `host` already replaced by a
trusted proxy's X-Forwarded-Host / Forwarded host), `scheme` the connection's `http` or `https`
(TLS, or a trusted proxy's X-Forwarded-Proto).

Entries:

- an origin, `https://app.example.com`, `http://localhost:3000`: that origin only;
- `https://*.example.com`: a subdomain of example.com at any depth (`a.example.com`,
  `a.b.example.com`), with that scheme and port; not `example.com` itself, `evilexample.com`
  or `example.com.evil.net`;
- `same-host`: an Origin whose host and port are the request's `Host`, and whose scheme is the
  connection's (an http page for ws://, an https page for wss://);
- `*`: every origin, `null` included (the same as no policy, but deliberate).

Origins are compared normalised: scheme and host lower-case, IPv6 addresses in their short form,
default ports dropped (80 for http, 443 for https), and ws/wss taken as http/https (browsers send
http(s) origins; the entries may name either). `Origin: null` (sandboxed frames, file:// pages,
some redirects) matches only `*`. More than one Origin header is refused whatever the entries.
A handshake without Origin (not a browser) passes unless `require_origin`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from .handshake import HandshakeError

SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
DEFAULT_PORTS = {"http": 80, "https": 443}
SAME_HOST = "same-host"
ANY = "*"

# RFC 6454 §6.2 serialized origin: scheme "://" host [":" port]. Host names as browsers send them
# (ASCII, IDNs in punycode); `*.` only in a policy entry.
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<wildcard>\*\.)?(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE | re.ASCII,  # ASCII: no Unicode case folding ("\u212a" is not "k")
)
_SHOWN = 100  # characters of a refused Origin that go into the log line and the 403 body


class Origin(NamedTuple):
    """A normalised origin: `port` is None for the scheme's default port."""

    scheme: str
    host: str
    port: Optional[int]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + ("" if self.port is None else f":{self.port}")


def parse_origin(text: str) -> Origin:
    """`HTTPS://App.Example.com:443` → Origin("https", "app.example.com", None). Raises ValueError."""
    origin, wildcard = _parse(text)
    if wildcard:
        raise ValueError(f"{text!r} is a wildcard, not an origin")
    return origin


def _parse(text: str) -> Tuple[Origin, bool]:
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not scheme://host[:port]")
    scheme = match["scheme"].lower()
    scheme = SCHEMES.get(scheme, scheme)
    host = match["host"].lower()
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ValueError(f"{text!r} has an invalid IPv6 address") from None
    port = int(match["port"]) if match["port"] is not None else None
    if port is not None and port > 65535:
        raise ValueError(f"{text!r} has a port over 65535")
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    return Origin(scheme, host, port), match["wildcard"] is not None


class OriginPolicy:
    """Which origins may open a WebSocket: the `ws_allowed_origins` entries (None: every origin)
    and `ws_require_origin`. Built once per configuration."""

    def __init__(self, entries: Optional[Iterable[str]], require_origin: bool = False) -> None:
        self.require_origin = require_origin
        self.any_origin = entries is None
        self.same_host = False
        self.origins: Set[Origin] = set()
        self.wildcards: List[Tuple[str, str, Optional[int]]] = []  # (scheme, ".example.com", port)
        entries = [] if entries is None else [entry.strip() for entry in entries]
        if not entries and not self.any_origin:
            raise ValueError("no entries (none: no Origin policy)")
        for entry in entries:
            if entry == ANY:
                if len(entries) > 1:
                    raise ValueError("* allows every origin: give it alone")
                self.any_origin = True
            elif entry.lower() == SAME_HOST:
                self.same_host = True
            else:
                origin, wildcard = _parse(entry)
                if not wildcard:
                    self.origins.add(origin)
                elif origin.host.startswith("[") or origin.host.rsplit(".", 1)[-1].isdigit():
                    raise ValueError(f"{entry!r}: a wildcard needs a domain name, not an address")
                else:
                    self.wildcards.append((origin.scheme, "." + origin.host, origin.port))

    def check(self, headers: Sequence[Tuple[bytes, bytes]], scheme: str) -> None:
        """Pass, or raise HandshakeError(403, reason) naming the refused origin."""
        origins: List[bytes] = []
        hosts: List[bytes] = []
        for name, value in headers:
            name = name.lower()
            if name == b"origin":
                origins.append(value)
            elif name == b"host":
                hosts.append(value)
        if not origins:
            if self.require_origin:
                raise HandshakeError(403, "no Origin header (ws_require_origin)")
            return
        if len(origins) > 1:
            raise HandshakeError(403, "more than one Origin header")
        text = origins[0].decode("latin-1").strip()
        if self.any_origin:
            return
        try:
            origin = parse_origin(text)  # `null` is not scheme://host: refused here
        except ValueError:
            origin = None
        if origin is not None and self._allows(origin, hosts, scheme):
            return
        shown = repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")
        raise HandshakeError(403, f"origin {shown} is not allowed")

    def _allows(self, origin: Origin, hosts: List[bytes], scheme: str) -> bool:
        if origin in self.origins:
            return True
        for wildcard_scheme, suffix, port in self.wildcards:
            if origin.scheme == wildcard_scheme and origin.port == port and origin.host.endswith(suffix):
                return True
        if self.same_host and len(hosts) == 1:
            scheme = SCHEMES.get(scheme, scheme)
            try:
                # The Host header read against the connection's scheme: `example.com:443` on TLS
                # is `example.com`, as the Origin of an https page is.
                return origin == parse_origin(f"{scheme}://{hosts[0].decode('latin-1').strip()}")
            except ValueError:
                return False
        return False

    def __repr__(self) -> str:
        entries = ["*"] * self.any_origin + [SAME_HOST] * self.same_host + sorted(map(str, self.origins))
        entries += [f"{s}://*{h}" + ("" if p is None else f":{p}") for s, h, p in self.wildcards]
        return f"OriginPolicy({', '.join(entries)}, require_origin={self.require_origin})"


def origin_policy(entries: Optional[Iterable[str]], require_origin: bool) -> Optional[OriginPolicy]:
    """The policy for `ws_allowed_origins` and `ws_require_origin`, or None when there is nothing
    to check (neither is set: every handshake passes, as without this module)."""
    if entries is None and not require_origin:
        return None
    return OriginPolicy(entries, require_origin)
