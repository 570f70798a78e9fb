"""Proxy headers (asgiws/http/proxy.py): the pure function driven with header lists, then the
same over real sockets (httpx, websockets) with --forwarded-allow-ips trusting 127.0.0.1 or not."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from asgiws.config import Config, ConfigError
from asgiws.http.proxy import apply_proxy_headers, parse_trusted

TIMEOUT = 10.0
PEER = ("127.0.0.1", 50000)
LOCAL = parse_trusted("127.0.0.1")


def apply(headers, client=PEER, scheme="http", trusted=LOCAL):
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers]
    return apply_proxy_headers(client, scheme, encoded, trusted)


def host_of(headers):
    hosts = [value for name, value in headers if name == b"host"]
    assert len(hosts) <= 1, hosts
    return hosts[0].decode() if hosts else None


# -- the trusted set ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, inside, outside", [
    ("127.0.0.1", ["127.0.0.1", "::ffff:127.0.0.1"], ["127.0.0.2", "::1", None, "unknown"]),
    ("10.0.0.0/8, 192.168.1.1", ["10.1.2.3", "192.168.1.1"], ["11.0.0.1", "192.168.1.2"]),
    ("::1, fd00::/8", ["::1", "fd12::1"], ["::2", "127.0.0.1"]),
    ("unix:", [None], ["127.0.0.1"]),
    ("*", ["8.8.8.8", "::1", None, "unknown"], []),
    ("", [], ["127.0.0.1", None]),
])  # fmt: skip
def test_trusted_peers(text, inside, outside):
    trusted = parse_trusted(text)
    for host in inside:
        assert host in trusted, (text, host)
    for host in outside:
        assert host not in trusted, (text, host)


@pytest.mark.parametrize("text", ["localhost", "10.0.0.0/33", "1.2.3", "unix"])
def test_bad_trusted_entries_are_refused_with_the_setting_name(text):
    with pytest.raises(ValueError):
        parse_trusted(text)
    with pytest.raises(ConfigError, match="^forwarded_allow_ips: expected IP addresses"):
        Config(forwarded_allow_ips=text)


# -- X-Forwarded-* -----------------------------------------------------------------------------


def test_untrusted_peer_headers_are_ignored():
    headers = [("Host", "internal"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "example.com")]  # fmt: skip
    client, scheme, new_headers = apply(headers, client=("192.0.2.1", 4000))
    assert (client, scheme) == (("192.0.2.1", 4000), "http")
    assert host_of(new_headers) == "internal"


def test_x_forwarded_for_proto_host_from_a_trusted_peer():
    headers = [("Host", "internal:8000"), ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "example.com"), ("Accept", "*/*")]  # fmt: skip
    client, scheme, new_headers = apply(headers)
    assert client == ("203.0.113.7", 0)
    assert scheme == "https"
    assert host_of(new_headers) == "example.com"
    # The proxy headers themselves stay; only host changed.
    assert (b"x-forwarded-for", b"203.0.113.7") in new_headers and (b"accept", b"*/*") in new_headers


def test_right_most_untrusted_address_is_the_client():
    # A client forged the first entry; nginx appended the real peer; a trusted hop appended the last.
    trusted = parse_trusted("127.0.0.1, 10.0.0.0/8")
    client, _, _ = apply([("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.1.1.1")], trusted=trusted)
    assert client == ("203.0.113.7", 0)


def test_all_trusted_gives_the_left_most_address():
    client, _, _ = apply([("X-Forwarded-For", "127.0.0.1, 127.0.0.1")])
    assert client == ("127.0.0.1", 0)
    client, _, _ = apply([("X-Forwarded-For", "1.1.1.1, 2.2.2.2")], trusted=parse_trusted("*"))
    assert client == ("1.1.1.1", 0)


def test_several_x_forwarded_for_lines_are_one_list():
    client, _, _ = apply([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.7")])
    assert client == ("203.0.113.7", 0)


@pytest.mark.parametrize("node, expected", [
    ("2001:db8::1", ("2001:db8::1", 0)),
    ("[2001:db8::1]:4711", ("2001:db8::1", 4711)),
    ("203.0.113.7:8080", ("203.0.113.7", 8080)),
    ("unknown", ("unknown", 0)),
])  # fmt: skip
def test_x_forwarded_for_address_forms(node, expected):
    assert apply([("X-Forwarded-For", node)])[0] == expected


@pytest.mark.parametrize("proto, scheme", [
    ("https", "https"), ("HTTPS", "https"), (" wss ", "https"), ("http", "http"), ("ws", "http"),
    ("gopher", "http"),
])  # fmt: skip
def test_x_forwarded_proto_values(proto, scheme):
    assert apply([("X-Forwarded-Proto", proto)])[1] == scheme


def test_proto_alone_keeps_the_peer_as_client():
    client, scheme, _ = apply([("X-Forwarded-Proto", "https")])
    assert (client, scheme) == (PEER, "https")


def test_https_connection_is_not_downgraded_by_a_bogus_proto():
    assert apply([("X-Forwarded-Proto", "nonsense")], scheme="https")[1] == "https"


def test_proto_and_host_are_read_from_the_clients_hop():
    trusted = parse_trusted("127.0.0.1, 10.0.0.0/8")
    headers = [("X-Forwarded-For", "203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https, http"),
               ("X-Forwarded-Host", "example.com, internal")]  # fmt: skip
    client, scheme, new_headers = apply(headers, trusted=trusted)
    assert client == ("203.0.113.7", 0)
    assert scheme == "https"  # what the outer proxy saw, not the inner hop
    assert host_of(new_headers) == "example.com"


def test_a_single_proto_applies_whatever_the_hop():
    trusted = parse_trusted("127.0.0.1, 10.0.0.0/8")
    headers = [("X-Forwarded-For", "203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https")]
    assert apply(headers, trusted=trusted)[:2] == (("203.0.113.7", 0), "https")


def test_host_header_added_when_missing():
    client, scheme, headers = apply([("X-Forwarded-Host", "example.com:8443")])
    assert host_of(headers) == "example.com:8443"


def test_headers_list_not_copied_without_a_host():
    headers = [(b"x-forwarded-for", b"1.2.3.4")]
    assert apply_proxy_headers(PEER, "http", headers, LOCAL)[2] is headers


# -- Forwarded (RFC 7239) ----------------------------------------------------------------------


def test_forwarded_for_proto_host():
    client, scheme, headers = apply([("Forwarded", 'for=203.0.113.7;proto=https;host="example.com:443"')])
    assert (client, scheme, host_of(headers)) == (("203.0.113.7", 0), "https", "example.com:443")


def test_forwarded_quoted_ipv6_with_port():
    client, _, _ = apply([("Forwarded", 'For="[2001:db8:cafe::17]:4711"')])
    assert client == ("2001:db8:cafe::17", 4711)


def test_forwarded_quoted_ipv6_without_port():
    assert apply([("Forwarded", 'for="[::1]"')], trusted=parse_trusted("10.0.0.0/8, 127.0.0.1"))[0] == ("::1", 0)


def test_forwarded_walks_hops_from_the_right():
    trusted = parse_trusted("127.0.0.1, 10.0.0.0/8")
    value = 'for=6.6.6.6;proto=http, for=203.0.113.7;proto=https;host=example.com, for=10.0.0.2;proto=http;host=inner'
    client, scheme, headers = apply([("Forwarded", value)], trusted=trusted)
    assert (client, scheme, host_of(headers)) == (("203.0.113.7", 0), "https", "example.com")


def test_forwarded_split_over_lines_and_commas_in_quotes():
    headers = [("Forwarded", 'for=6.6.6.6;host="a,b"'), ("Forwarded", 'for=203.0.113.7;host="x\\"y"')]
    client, _, new_headers = apply(headers)
    assert client == ("203.0.113.7", 0)
    assert host_of(new_headers) == 'x"y'


def test_forwarded_obfuscated_or_unknown_node():
    assert apply([("Forwarded", "for=unknown;proto=https")])[:2] == (("unknown", 0), "https")
    assert apply([("Forwarded", "for=_hidden")])[0] == ("_hidden", 0)


def test_forwarded_without_for_keeps_the_peer():
    assert apply([("Forwarded", "proto=https")])[:2] == (PEER, "https")


def test_forwarded_ignored_when_x_forwarded_headers_are_present():
    # nginx sets X-Forwarded-* and passes a client's own Forwarded through: the X- headers win.
    headers = [("Forwarded", "for=6.6.6.6;proto=https;host=evil"), ("X-Forwarded-For", "203.0.113.7")]
    client, scheme, new_headers = apply(headers)
    assert (client, scheme, host_of(new_headers)) == (("203.0.113.7", 0), "http", None)


def test_malformed_forwarded_is_harmless():
    for value in ["", ",,,", "for", ";;", 'for="[::1', "for=1.2.3.4;proto"]:
        client, scheme, _ = apply([("Forwarded", value)])
        assert scheme == "http"
        assert isinstance(client, tuple)


# -- Unix socket peers ------------------------------------------------------------------------


def test_unix_socket_peer_trusted_only_with_unix_entry():
    headers = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
    assert apply(headers, client=None)[:2] == (None, "http")
    assert apply(headers, client=None, trusted=parse_trusted("unix:"))[:2] == (("203.0.113.7", 0), "https")


# -- over real sockets -------------------------------------------------------------------------


async def scope_app(scope, receive, send):
    """HTTP: answers with the scope's client, scheme and host as JSON. WebSocket: accepts and
    sends the same JSON as its first message."""
    if scope["type"] == "lifespan":
        return
    info = {
        "client": list(scope["client"]) if scope["client"] else None,
        "scheme": scope["scheme"],
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
    }
    body = json.dumps(info).encode()
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    else:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close"})


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}


def test_http_from_trusted_peer(run_server):
    with run_server(scope_app) as server:
        info = httpx.get(server.url, headers=FORWARDED).json()
    assert info == {"client": ["203.0.113.7", 0], "scheme": "https", "host": "example.com"}


def test_http_from_trusted_peer_without_proxy_headers(run_server):
    with run_server(scope_app) as server:
        info = httpx.get(server.url).json()
    assert info["client"][0] == "127.0.0.1" and info["client"][1] != 0
    assert info["scheme"] == "http" and info["host"] == f"127.0.0.1:{server.port}"


def test_http_from_trusted_peer_with_forwarded(run_server):
    with run_server(scope_app) as server:
        info = httpx.get(server.url, headers={"Forwarded": 'for="[2001:db8::1]:4711";proto=https;host=example.com'}).json()
    assert info == {"client": ["2001:db8::1", 4711], "scheme": "https", "host": "example.com"}


def test_proxy_headers_apply_per_request_on_a_connection(run_server):
    with run_server(scope_app) as server, httpx.Client() as client:
        forwarded = client.get(server.url, headers=FORWARDED).json()
        direct = client.get(server.url).json()
    assert forwarded["client"] == ["203.0.113.7", 0] and forwarded["scheme"] == "https"
    assert direct["client"][0] == "127.0.0.1" and direct["client"][1] != 0 and direct["scheme"] == "http"


def test_http_from_untrusted_peer(run_server):
    with run_server(scope_app, forwarded_allow_ips="10.0.0.1") as server:
        info = httpx.get(server.url, headers=FORWARDED).json()
    assert info["client"][0] == "127.0.0.1" and info["client"][1] != 0
    assert info["scheme"] == "http"
    assert info["host"] == f"127.0.0.1:{server.port}"


def test_proxy_headers_off(run_server):
    with run_server(scope_app, proxy_headers=False) as server:
        info = httpx.get(server.url, headers=FORWARDED).json()
    assert info["client"][0] == "127.0.0.1" and info["scheme"] == "http"


def test_websocket_from_trusted_peer_is_wss(run_server):
    with run_server(scope_app, forwarded_allow_ips="127.0.0.0/8") as server:
        with connect(server.ws_url, additional_headers=FORWARDED, open_timeout=TIMEOUT) as ws:
            info = json.loads(ws.recv(TIMEOUT))
    assert info == {"client": ["203.0.113.7", 0], "scheme": "wss", "host": "example.com"}


def test_websocket_forwarded_proto_http_is_ws(run_server):
    headers = {"Forwarded": 'for="[2001:db8::1]:4711";proto=http'}
    with run_server(scope_app) as server:
        with connect(server.ws_url, additional_headers=headers, open_timeout=TIMEOUT) as ws:
            info = json.loads(ws.recv(TIMEOUT))
    assert info["client"] == ["2001:db8::1", 4711] and info["scheme"] == "ws"


def test_websocket_from_untrusted_peer(run_server):
    with run_server(scope_app, forwarded_allow_ips="10.0.0.1") as server:
        with connect(server.ws_url, additional_headers=FORWARDED, open_timeout=TIMEOUT) as ws:
            info = json.loads(ws.recv(TIMEOUT))
    assert info["client"][0] == "127.0.0.1" and info["scheme"] == "ws"


def test_unix_socket_peer(run_server, tmp_path):
    for allow, expected in (("127.0.0.1", None), ("unix:", ["203.0.113.7", 0])):
        path = str(tmp_path / f"{allow[:4]}.sock")
        with run_server(scope_app, uds=path, forwarded_allow_ips=allow):
            transport = httpx.HTTPTransport(uds=path)
            with httpx.Client(transport=transport) as client:
                info = client.get("http://proxy.test/", headers=FORWARDED).json()
        assert info["client"] == expected, allow
        assert info["scheme"] == ("http" if expected is None else "https")


def test_access_log_shows_the_forwarded_client(run_server, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="asgiws.access"):
        with run_server(scope_app) as server:
            httpx.get(server.url + "/p", headers=FORWARDED)
    lines = [r.getMessage() for r in caplog.records if r.name == "asgiws.access"]
    assert len(lines) == 1 and lines[0].startswith('203.0.113.7:0 - "GET /p HTTP/1.1" 200 '), lines
