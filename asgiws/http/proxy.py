"""Proxy headers: who the client really is, when a trusted proxy (nginx) says so.

Behind a reverse proxy the TCP peer is the proxy, so the ASGI `client` would be the proxy's
address and `scheme` would be `http` even when the browser used `https`. A proxy reports the
original request in headers; asgiws believes them only when the TCP peer is in
`--forwarded-allow-ips`, since anyone can send them.

    apply_proxy_headers(client, scheme, headers, trusted) -> (client, scheme, headers)

is the whole logic, a pure function the HTTP protocol calls once per request, before the scope
is built (the WebSocket scope is derived from that scope: `https` becomes `wss` there).

Two header families, never mixed:

- `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` (what nginx, HAProxy, AWS ALB,
  Traefik and Caddy send). When any of them is present, `Forwarded` is ignored: a proxy that
  sets the X- headers usually passes a client's own `Forwarded` through untouched.
- `Forwarded` (RFC 7239): `for=`, `proto=`, `host=` per hop, used when no X-Forwarded-* is
  present.

Each proxy appends the address it received the request from, so the list reads client first,
nearest proxy last. asgiws walks it from the right, skipping addresses that are themselves
trusted proxies; the first untrusted one is the client (all trusted: the left-most). An entry
further left than that was written by the client or an untrusted hop, and is ignored. The
scheme and host come from the same hop: in `Forwarded` they share its element; in the X-
headers, the entry at the same position from the right as the client's in X-Forwarded-For, or
the left-most entry of a list too short for that (usually one value, set by the nearest proxy).

- `client` becomes `(address, port)`: the port is the one the proxy gave (`"[::1]:1234"`,
  `1.2.3.4:80`), else 0. An address that is not an IP (`unknown`, an obfuscated `_hidden`) is
  passed on as given, as uvicorn does.
- `scheme`: `https` or `wss` → `https`; `http` or `ws` → `http`; any other value is ignored.
- `X-Forwarded-Host` / `host=` replaces the request's `host` header (Werkzeug's ProxyFix and
  Hypercorn's ProxyFixMiddleware do the same), so Starlette's `request.url`, `url_for` and
  `TrustedHostMiddleware` see the host the client asked for. The X- and `Forwarded` headers
  themselves stay in the scope.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Client = Optional[Tuple[str, int]]
Headers = List[Tuple[bytes, bytes]]

SCHEMES = {"https": "https", "wss": "https", "http": "http", "ws": "http"}
QUOTED_PAIR = re.compile(r"\\(.)")  # RFC 9110 §5.6.4: backslash makes the next character literal


class TrustedPeers:
    """The peers whose proxy headers are believed: `--forwarded-allow-ips` parsed.

    Entries: IP addresses, networks in CIDR notation, `*` (every peer), and `unix:` (a peer on a
    Unix socket, which has no address: nginx's `proxy_pass http://unix:/run/app.sock`).
    """

    def __init__(self, networks: Sequence[Network], everyone: bool = False, unix: bool = False) -> None:
        self.networks = tuple(networks)
        self.everyone = everyone
        self.unix = unix
        self._known: Dict[str, bool] = {}  # host → trusted: parsing an address costs microseconds

    def __contains__(self, host: Optional[str]) -> bool:
        """Whether a TCP peer address (None: a Unix socket peer) is trusted."""
        if host is None:
            return self.unix or self.everyone
        if self.everyone:
            return True
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= 1024:  # bounded: X-Forwarded-For addresses come from clients
                self._known.clear()
            known = self._known[host] = self._check(host)
        return known

    def _check(self, host: str) -> bool:
        address = _ip(host)
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # "::ffff:127.0.0.1" on a dual-stack socket
        return any(address in network for network in self.networks)

    def __repr__(self) -> str:
        entries = [str(n) for n in self.networks] + ["*"] * self.everyone + ["unix:"] * self.unix
        return f"TrustedPeers({', '.join(entries)})"


@functools.lru_cache(maxsize=16)
def parse_trusted(text: str) -> TrustedPeers:
    """`"127.0.0.1, 10.0.0.0/8, unix:"` → TrustedPeers. Raises ValueError naming a bad entry."""
    networks = []
    everyone = unix = False
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if entry == "*":
            everyone = True
        elif entry.lower() == "unix:":
            unix = True
        else:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"expected IP addresses, CIDR networks, * or unix:, separated by commas; got {entry!r}"
                ) from None
    return TrustedPeers(networks, everyone, unix)


def apply_proxy_headers(client: Client, scheme: str, headers: Headers, trusted: TrustedPeers) -> Tuple[Client, str, Headers]:
    """The request's `client`, `scheme` and `headers` as the proxy saw them, if the peer
    (`client`; None on a Unix socket) is trusted; else unchanged. `headers` are lower-cased
    names, as in the ASGI scope; the list is copied only when the host is replaced."""
    if (client[0] if client else None) not in trusted:
        return client, scheme, headers

    forwarded_for: List[bytes] = []
    forwarded_proto: List[bytes] = []
    forwarded_host: List[bytes] = []
    forwarded: List[bytes] = []
    for name, value in headers:
        if name[:2] == b"x-":
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                forwarded_proto.append(value)
            elif name == b"x-forwarded-host":
                forwarded_host.append(value)
        elif name == b"forwarded":
            forwarded.append(value)

    if forwarded_for or forwarded_proto or forwarded_host:
        addresses = _split(forwarded_for)
        hop = _pick_hop(addresses, trusted)  # counted from the right, 1 = the nearest proxy's entry
        new_client = _host_and_port(addresses[-hop]) if addresses else client
        proto = _same_hop(_split(forwarded_proto), hop)
        host = _same_hop(_split(forwarded_host), hop)
    elif forwarded:
        elements = [_parse_element(element) for element in _split(forwarded, quoted=True)]
        if not elements:
            return client, scheme, headers
        hop = _pick_hop([element.get("for", "") for element in elements], trusted)
        element = elements[-hop]
        new_client = _host_and_port(element["for"]) if "for" in element else client
        proto, host = element.get("proto"), element.get("host")
    else:
        return client, scheme, headers

    if proto is not None:
        scheme = SCHEMES.get(proto.strip().lower(), scheme)
    if host:
        headers = [(b"host", host.encode("latin-1"))] + [(n, v) for n, v in headers if n != b"host"]
    return new_client, scheme, headers


# -- helpers ----------------------------------------------------------------------------------


def _ip(text: str) -> Optional[Address]:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split(values: Iterable[bytes], quoted: bool = False) -> List[str]:
    """The comma-separated entries of one or more header values (several header lines are one
    list, RFC 9110 §5.3); with `quoted`, commas inside "..." do not separate."""
    entries: List[str] = []
    for value in values:
        text = value.decode("latin-1")
        entries += _split_unquoted(text, ",") if quoted else text.split(",")
    return [entry.strip() for entry in entries if entry.strip()]


def _split_unquoted(text: str, separator: str) -> List[str]:
    """`text` split on `separator` where it is outside a quoted-string (RFC 9110 §5.6.4)."""
    if '"' not in text:
        return text.split(separator)
    parts, start, in_quotes, index = [], 0, False, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and in_quotes:
            index += 1  # a quoted-pair: the next character is literal
        elif char == '"':
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _host_and_port(node: str) -> Tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1` → (address, port or 0)."""
    if node.startswith("["):
        address, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        address, _, port = node.partition(":")
    else:
        address, port = node, ""
    return address, int(port) if port.isdigit() and int(port) <= 65535 else 0


def _pick_hop(nodes: Sequence[str], trusted: TrustedPeers) -> int:
    """Walk from the right past trusted proxies: the position (from the right, 1-based) of the
    first untrusted node, or of the left-most one when all are trusted."""
    for hop in range(1, len(nodes) + 1):
        if _host_and_port(nodes[-hop])[0] not in trusted:
            return hop
    return max(len(nodes), 1)


def _same_hop(values: List[str], hop: int) -> Optional[str]:
    if not values:
        return None
    return values[-hop] if hop <= len(values) else values[0]


def _parse_element(element: str) -> Dict[str, Any]:
    """One RFC 7239 forwarded-element, `for=1.2.3.4;proto=https;host="a:8"`, → its pairs
    (lower-cased names, unquoted values). A malformed pair is skipped."""
    pairs: Dict[str, Any] = {}
    for pair in _split_unquoted(element, ";"):
        name, equals, value = pair.partition("=")
        if not equals:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = QUOTED_PAIR.sub(r"\1", value[1:-1])
        pairs.setdefault(name.strip().lower(), value)
    return pairs

