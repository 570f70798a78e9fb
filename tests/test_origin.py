"""The Origin policy for WebSocket handshakes (asgiws/websocket/origin.py, RFC 6455 §10.2).

Unit tests drive `OriginPolicy` with header lists; the integration tests send handshakes over
raw sockets to a real server; the last test has headless Chromium open a WebSocket from a page
on another origin (skipped where Debian's `chromium` is not installed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
import websockets

from asgiws.cli import build_parser
from asgiws.config import Config, ConfigError
from asgiws.http.proxy import apply_proxy_headers, parse_trusted
from asgiws.server import origin_policy_warning
from asgiws.websocket.handshake import HandshakeError
from asgiws.websocket.origin import Origin, OriginPolicy, origin_policy, parse_origin
from conftest import RawConnection, TIMEOUT, stop_process_group, warnings_logged
from test_demo_browser import CHROMIUM, DevTools, devtools_port, remove_profile, start_chromium


def check(entries, origin=None, host=b"example.com", scheme="http", require_origin=False, headers=None):
    """Run the policy on one handshake's headers; the refusal's reason, or None if allowed."""
    if headers is None:
        headers = [(b"host", host)] if host is not None else []
        if origin is not None:
            headers.append((b"origin", origin))
    try:
        OriginPolicy(entries, require_origin).check(headers, scheme)
    except HandshakeError as exc:
        assert exc.status == 403
        return exc.reason
    return None


def allowed(entries, origin, **kwargs) -> bool:
    return check(entries, origin, **kwargs) is None


# -- parsing and normalising origins ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://app.example.com", Origin("https", "app.example.com", None)),
        ("HTTPS://App.Example.COM", Origin("https", "app.example.com", None)),
        ("https://app.example.com:443", Origin("https", "app.example.com", None)),
        ("https://app.example.com:80", Origin("https", "app.example.com", 80)),
        ("http://localhost:80", Origin("http", "localhost", None)),
        ("http://localhost:3000", Origin("http", "localhost", 3000)),
        ("ws://example.com:80", Origin("http", "example.com", None)),
        ("wss://example.com", Origin("https", "example.com", None)),
        ("wss://example.com:443", Origin("https", "example.com", None)),
        ("http://127.0.0.1:8000", Origin("http", "127.0.0.1", 8000)),
        ("http://[0:0:0:0:0:0:0:1]:8000", Origin("http", "[::1]", 8000)),
        ("http://[::FFFF:127.0.0.1]", Origin("http", "[::ffff:7f00:1]", None)),
        ("chrome-extension://abcdef", Origin("chrome-extension", "abcdef", None)),
    ],
)  # fmt: skip
def test_origins_are_normalised(text, expected):
    assert parse_origin(text) == expected


def test_origin_prints_without_default_port():
    assert str(parse_origin("HTTPS://A.com:443")) == "https://a.com"
    assert str(parse_origin("http://a.com:8080")) == "http://a.com:8080"


@pytest.mark.parametrize(
    "text",
    ["null", "", "example.com", "https://", "https://a.com/", "https://a.com/path", "https://a.com?q",
     "https://user@a.com", "https://a.com:", "https://a.com:99999", "https://a..com", "https://.a.com",
     "https://a.com.", "https://[::1", "https://[nonsense]", "https://*.a.com", "https://a.com https://b.com",
     "https://\u00e9xample.com", "https://\u017fub.example.com", "https://\u212aey.example.com"],
)  # fmt: skip
def test_not_an_origin(text):
    with pytest.raises(ValueError):
        parse_origin(text)


# -- exact origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin, ok",
    [
        (b"https://app.example.com", True),
        (b"https://APP.example.com:443", True),
        (b"  https://app.example.com ", True),
        (b"http://app.example.com", False),  # another scheme is another origin
        (b"https://app.example.com:8443", False),
        (b"https://example.com", False),
        (b"https://x.app.example.com", False),
        (b"https://app.example.com.evil.net", False),
        (b"https://evilapp.example.com", False),
        (b"https://app.example.com/", False),  # not a serialised origin
    ],
)  # fmt: skip
def test_exact_origin(origin, ok):
    assert allowed(["https://app.example.com"], origin) is ok


def test_exact_origin_with_port_and_ws_scheme_in_the_entry():
    assert allowed(["http://localhost:3000"], b"http://localhost:3000")
    assert not allowed(["http://localhost:3000"], b"http://localhost:3001")
    assert not allowed(["http://localhost:3000"], b"http://localhost")
    assert allowed(["wss://app.example.com:443"], b"https://app.example.com")  # ws(s) entries mean http(s)


# -- wildcards --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin, ok",
    [
        (b"https://a.example.com", True),
        (b"https://A.Example.Com", True),
        (b"https://a.b.example.com", True),  # any depth
        (b"https://a.example.com:443", True),
        (b"https://example.com", False),  # the domain itself is not a subdomain
        (b"https://evilexample.com", False),
        (b"https://a.evilexample.com", False),
        (b"https://example.com.evil.net", False),
        (b"https://a.example.com.evil.net", False),
        (b"https://a.example.co", False),
        (b"https://a.example.com:8443", False),
        (b"http://a.example.com", False),
    ],
)  # fmt: skip
def test_wildcard_subdomains(origin, ok):
    assert allowed(["https://*.example.com"], origin) is ok


def test_wildcard_with_a_port():
    entries = ["http://*.dev.example.com:8080"]
    assert allowed(entries, b"http://a.dev.example.com:8080")
    assert not allowed(entries, b"http://a.dev.example.com")


@pytest.mark.parametrize(
    "entry",
    ["https://*example.com", "https://a.*.example.com", "https://*", "https://*.", "*.example.com",
     "https://**.example.com", "https://*.1.2.3", "https://*.[::1]", "example.com", "https://a.com/",
     "same-hosts", ""],
)  # fmt: skip
def test_bad_entries_are_refused(entry):
    with pytest.raises(ValueError):
        OriginPolicy([entry])


def test_star_stands_alone_and_entries_are_needed():
    with pytest.raises(ValueError, match="alone"):
        OriginPolicy(["*", "https://a.com"])
    with pytest.raises(ValueError, match="no entries"):
        OriginPolicy([])


# -- null, several Origin headers, no Origin ---------------------------------------------------------


def test_null_origin_is_refused_unless_star():
    assert check(["https://a.com", "same-host"], b"null") == "origin 'null' is not allowed"
    assert allowed(["*"], b"null")


def test_more_than_one_origin_header_is_refused_even_with_star():
    headers = [(b"host", b"a.com"), (b"origin", b"https://a.com"), (b"origin", b"https://a.com")]
    for entries in (["https://a.com"], ["*"]):
        assert check(entries, headers=headers) == "more than one Origin header"


def test_an_origin_list_in_one_header_is_refused():
    assert not allowed(["https://a.com"], b"https://a.com https://b.com")


def test_no_origin_passes_unless_the_policy_requires_one():
    assert allowed(["https://a.com"], None)
    assert check(["https://a.com"], None, require_origin=True) == "no Origin header (ws_require_origin)"
    assert allowed(["*"], None) and not allowed(["*"], None, require_origin=True)


def test_require_origin_alone_allows_any_origin_but_needs_one():
    policy = origin_policy(None, require_origin=True)
    policy.check([(b"origin", b"https://anything.example")], "http")
    with pytest.raises(HandshakeError):
        policy.check([(b"host", b"a.com")], "http")


def test_no_setting_means_no_policy():
    assert origin_policy(None, require_origin=False) is None
    assert Config(app="x:y").origin_policy is None


def test_refusal_names_the_origin_shortened():
    reason = check(["https://a.com"], b"https://" + b"x" * 500 + b".com")
    assert reason.startswith("origin 'https://xxx") and reason.endswith("x'... is not allowed")
    assert len(reason) < 150
    assert check(["https://a.com"], b"https://evil.example\x7f") == r"origin 'https://evil.example\x7f' is not allowed"


# -- same-host -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme, host, origin, ok",
    [
        ("http", b"example.com", b"http://example.com", True),
        ("http", b"example.com:80", b"http://example.com", True),  # default ports compare equal
        ("http", b"example.com", b"http://example.com:80", True),
        ("https", b"example.com:443", b"https://example.com", True),
        ("https", b"example.com", b"https://example.com:443", True),
        ("http", b"localhost:8000", b"http://localhost:8000", True),
        ("http", b"LocalHost:8000", b"http://localhost:8000", True),
        ("http", b"[::1]:8000", b"http://[::1]:8000", True),
        ("https", b"example.com", b"http://example.com", False),  # http page → wss: not the same
        ("http", b"example.com", b"https://example.com", False),  # https page → ws: not the same
        ("https", b"example.com:80", b"https://example.com:80", True),
        ("https", b"example.com:80", b"https://example.com", False),
        ("http", b"example.com:8000", b"http://example.com", False),
        ("http", b"example.com", b"http://example.com:8000", False),
        ("http", b"example.com", b"http://a.example.com", False),
        ("http", b"example.com", b"http://example.com.evil.net", False),
        ("http", b"example.com/", b"http://example.com", False),  # a malformed Host matches nothing
    ],
)  # fmt: skip
def test_same_host(scheme, host, origin, ok):
    assert allowed(["same-host"], origin, host=host, scheme=scheme) is ok


def test_same_host_needs_exactly_one_host_header():
    assert not allowed(["same-host"], b"http://example.com", host=None)
    headers = [(b"host", b"example.com"), (b"host", b"example.com"), (b"origin", b"http://example.com")]
    assert check(["same-host"], headers=headers) is not None


def test_entries_combine():
    entries = ["same-host", "https://app.example.com", "https://*.cdn.example.net"]
    assert allowed(entries, b"http://example.com")
    assert allowed(entries, b"https://app.example.com")
    assert allowed(entries, b"https://eu.cdn.example.net")
    assert not allowed(entries, b"https://example.net")


def nginx_request(peer, trusted, origin):
    """A handshake as nginx forwards it (`proxy_set_header Host $proxy_host`-style: the Host is the
    upstream's), and the scope's headers and scheme after asgiws's proxy-header handling."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin), (b"x-forwarded-for", b"203.0.113.7"),
               (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"app.example.com")]  # fmt: skip
    _, scheme, headers = apply_proxy_headers((peer, 50000), "http", headers, parse_trusted(trusted))
    return headers, scheme


def test_same_host_behind_a_trusted_proxy_uses_the_forwarded_host_and_proto():
    headers, scheme = nginx_request("127.0.0.1", "127.0.0.1", b"https://app.example.com")
    assert scheme == "https"
    assert check(["same-host"], headers=headers, scheme=scheme) is None
    headers, scheme = nginx_request("127.0.0.1", "127.0.0.1", b"http://app.example.com")
    assert check(["same-host"], headers=headers, scheme=scheme) is not None  # an http page, for wss


def test_same_host_ignores_forwarded_headers_from_an_untrusted_peer():
    headers, scheme = nginx_request("10.0.0.9", "127.0.0.1", b"https://app.example.com")
    assert scheme == "http"
    assert check(["same-host"], headers=headers, scheme=scheme) is not None


# -- the settings --------------------------------------------------------------------------------


def test_setting_from_text_and_from_python():
    assert Config(app="x:y", ws_allowed_origins="https://a.com, same-host").ws_allowed_origins == (
        "https://a.com", "same-host")  # fmt: skip
    config = Config(app="x:y", ws_allowed_origins=["https://*.a.com"], ws_require_origin=True)
    assert config.origin_policy.require_origin
    assert config.origin_policy.wildcards == [("https", ".a.com", None)]
    assert Config(app="x:y", ws_allowed_origins="none").ws_allowed_origins is None


@pytest.mark.parametrize(
    "value, problem",
    [("https://a.com/", "'https://a.com/' is not scheme://host[:port]"), ("*, https://a.com", "give it alone"),
     ("", "no entries"), (",", "no entries"), ("https://*.1.2", "needs a domain name"), (42, "separated by commas"),
     (["https://a.com", 3], "separated by commas")],
)  # fmt: skip
def test_bad_setting_is_a_one_line_config_error(value, problem):
    with pytest.raises(ConfigError) as info:
        Config(app="x:y", ws_allowed_origins=value)
    message = str(info.value)
    assert message.startswith("ws_allowed_origins: expected ") and problem in message and "\n" not in message


def test_flag_is_repeatable_and_takes_lists():
    parse = lambda *argv: vars(build_parser().parse_args(["app:x", *argv]))  # noqa: E731
    assert parse("--ws-allowed-origins", "https://a.com", "--ws-allowed-origins", "https://*.b.com,same-host")[
        "ws_allowed_origins"] == ("https://a.com", "https://*.b.com", "same-host")  # fmt: skip
    assert parse("--ws-allowed-origins", "same-host")["ws_allowed_origins"] == ("same-host",)
    assert parse("--ws-allowed-origins", "https://a.com", "--ws-allowed-origins", "none")["ws_allowed_origins"] is None
    assert "ws_allowed_origins" not in parse()
    assert parse("--ws-require-origin")["ws_require_origin"] is True


def test_bad_flag_exits_2_with_one_line(spawn):
    proc = spawn(["asgiws.demo:app", "--ws-allowed-origins", "https://a.com", "--ws-allowed-origins", "*"])
    assert proc.wait() == 2
    assert proc.text.count("\n") == 1 and "asgiws: error: ws_allowed_origins:" in proc.text and "alone" in proc.text


# -- the startup warning ----------------------------------------------------------------------------


class Bound:
    """What origin_policy_warning reads of a listening socket (the tests listen on loopback only)."""

    def __init__(self, family, address):
        self.family, self.address = family, address

    def getsockname(self):
        return self.address


@pytest.mark.parametrize(
    "sock, warned",
    [
        (Bound(socket.AF_INET, ("0.0.0.0", 8000)), True),
        (Bound(socket.AF_INET, ("192.0.2.10", 8000)), True),
        (Bound(socket.AF_INET6, ("::", 8000, 0, 0)), True),
        (Bound(socket.AF_INET, ("127.0.0.1", 8000)), False),
        (Bound(socket.AF_INET, ("127.0.1.1", 8000)), False),
        (Bound(socket.AF_INET6, ("::1", 8000, 0, 0)), False),
        (Bound(socket.AF_INET6, ("::ffff:127.0.0.1", 8000, 0, 0)), False),
        (Bound(socket.AF_UNIX, "/run/app.sock"), False),  # only a local proxy can reach it
    ],
)  # fmt: skip
def test_startup_warning_on_a_reachable_address_without_a_policy(sock, warned):
    warning = origin_policy_warning(Config(app="x:y"), [sock])
    assert (warning is not None) is warned
    if warned:
        assert "--ws-allowed-origins" in warning and "*" in warning and "\n" not in warning
    for silenced in ("*", "same-host"):
        assert origin_policy_warning(Config(app="x:y", ws_allowed_origins=silenced), [sock]) is None


def test_no_startup_warning_on_loopback(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws.error"), run_server(make_app([])):
        pass
    assert any("asgiws running on" in r.getMessage() for r in caplog.records)
    assert not warnings_logged(caplog, asgiws_only=False)


# -- over the wire -----------------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<title>origin test</title>
<script>
  window.outcome = new Promise((resolve) => {
    const ws = new WebSocket(new URLSearchParams(location.search).get("ws"));
    ws.onopen = () => ws.send("ping");
    ws.onmessage = (event) => { resolve("echo " + event.data); ws.close(); };
    ws.onclose = (event) => resolve("closed " + event.code);
    setTimeout(() => resolve("no answer"), 15000);
  });
</script>
"""


def make_app(seen: list):
    """An echo app that records every WebSocket scope it is given, and serves PAGE over HTTP."""

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8")]})  # fmt: skip
            await send({"type": "http.response.body", "body": PAGE})
        elif scope["type"] == "websocket":
            seen.append(dict(scope["headers"]).get(b"origin"))
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", "text": message.get("text") or ""})

    return app


def handshake(conn: RawConnection, origin=None, host=b"127.0.0.1", extra=b""):
    lines = [b"GET /ws HTTP/1.1", b"Host: " + host, b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]  # fmt: skip
    if origin is not None:
        lines.append(b"Origin: " + origin)
    conn.send(b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n")
    return conn.read_response()


def test_foreign_origin_gets_403_and_the_app_never_sees_it(run_server, caplog):
    seen: list = []
    with caplog.at_level(logging.INFO, logger="asgiws.error"), run_server(
        make_app(seen), ws_allowed_origins="https://app.example.com"
    ) as server:
        with RawConnection(server) as conn:
            response = handshake(conn, b"https://evil.example")
            client_port = conn.sock.getsockname()[1]
            assert response.status == 403
            assert response.body == b"origin 'https://evil.example' is not allowed\n"
            assert response.headers["connection"] == "close"
            assert conn.at_eof()
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://app.example.com").status == 101
    assert seen == [b"https://app.example.com"]
    refusals = [r.getMessage() for r in caplog.records if "Refused WebSocket handshake" in r.getMessage()]
    assert refusals == [f"Refused WebSocket handshake from 127.0.0.1:{client_port}: "
                        "origin 'https://evil.example' is not allowed"]  # fmt: skip
    assert [r.levelno for r in caplog.records if "Refused" in r.getMessage()] == [logging.INFO]


def test_allowed_origin_gets_101_and_echoes(run_server):
    seen: list = []
    with run_server(make_app(seen), ws_allowed_origins=["https://*.example.com"]) as server:
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://app.example.com").status == 101
            conn.send(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"abab")))  # masked "hi"
            assert conn.read_exact(4) == b"\x81\x02hi"
    assert seen == [b"https://app.example.com"]


def test_same_host_over_the_wire(run_server):
    seen: list = []
    with run_server(make_app(seen), ws_allowed_origins="same-host") as server:
        host = f"127.0.0.1:{server.port}".encode()
        with RawConnection(server) as conn:
            assert handshake(conn, b"http://" + host, host=host).status == 101
        with RawConnection(server) as conn:
            assert handshake(conn, b"http://localhost:%d" % server.port, host=host).status == 403
        with RawConnection(server) as conn:  # an https page may not open ws://
            assert handshake(conn, b"https://" + host, host=host).status == 403
    assert seen == [b"http://" + host]


def test_same_host_behind_a_trusted_proxy_over_the_wire(run_server):
    forwarded = b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n"
    seen: list = []
    with run_server(make_app(seen), ws_allowed_origins="same-host") as server:  # 127.0.0.1 is trusted
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://app.example.com", extra=forwarded).status == 101
    with run_server(make_app(seen), ws_allowed_origins="same-host", forwarded_allow_ips="10.0.0.1") as server:
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://app.example.com", extra=forwarded).status == 403
    assert seen == [b"https://app.example.com"]


def test_no_origin_passes_unless_required_over_the_wire(run_server):
    seen: list = []
    with run_server(make_app(seen), ws_allowed_origins="https://app.example.com") as server:
        with RawConnection(server) as conn:
            assert handshake(conn).status == 101
    with run_server(make_app(seen), ws_require_origin=True) as server:
        with RawConnection(server) as conn:
            response = handshake(conn)
            assert response.status == 403 and response.body == b"no Origin header (ws_require_origin)\n"
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://anywhere.example").status == 101
    assert seen == [None, b"https://anywhere.example"]


def test_null_and_doubled_origins_over_the_wire(run_server):
    seen: list = []
    with run_server(make_app(seen), ws_allowed_origins="same-host") as server:
        with RawConnection(server) as conn:
            assert handshake(conn, b"null").status == 403
        with RawConnection(server) as conn:
            response = handshake(conn, b"http://127.0.0.1", host=b"127.0.0.1", extra=b"Origin: http://127.0.0.1\r\n")
            assert response.status == 403 and b"more than one Origin" in response.body
    assert seen == []


def test_without_a_policy_every_origin_passes(run_server):
    seen: list = []
    with run_server(make_app(seen)) as server:
        with RawConnection(server) as conn:
            assert handshake(conn, b"https://evil.example").status == 101
    assert seen == [b"https://evil.example"]


# -- in a browser ------------------------------------------------------------------------------------


async def outcome_in_chromium(devtools_url: str, page_url: str, page_origin: str) -> str:
    """Load `page_url` and return what its WebSocket did: "echo ping" or "closed <code>"."""
    async with websockets.connect(devtools_url, max_size=None) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        await devtools.call("Page.navigate", url=page_url)
        deadline = time.monotonic() + TIMEOUT
        while True:  # until the new document's script has run
            try:
                if await devtools.evaluate(f"location.origin === {json.dumps(page_origin)} && !!window.outcome"):
                    break
            except AssertionError:  # the old document went away under the evaluation
                pass
            assert time.monotonic() < deadline, f"{page_url} did not load"
            await asyncio.sleep(0.05)
        return await devtools.evaluate("window.outcome")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
def test_chromium_cannot_open_a_websocket_from_another_origin(run_server, caplog):
    seen: list = []
    with caplog.at_level(logging.INFO, logger="asgiws.error"), run_server(make_app([])) as pages, \
            run_server(make_app(seen), ws_allowed_origins="same-host") as server:  # fmt: skip
        target = quote(f"ws://localhost:{server.port}/ws", safe="")
        own_origin = f"http://localhost:{server.port}"
        foreign_origin = f"http://127.0.0.1:{pages.port}"
        with urllib.request.urlopen(own_origin + "/", timeout=TIMEOUT) as response:
            assert b"new WebSocket(" in response.read()
        profile = Path(tempfile.mkdtemp(prefix="asgiws-chromium-"))
        chromium = start_chromium(profile)
        try:
            port = devtools_port(profile, chromium)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as r:
                devtools_url = [t for t in json.load(r) if t.get("type") == "page"][0]["webSocketDebuggerUrl"]
            same_origin = asyncio.run(outcome_in_chromium(devtools_url, f"{own_origin}/?ws={target}", own_origin))
            cross_origin = asyncio.run(
                outcome_in_chromium(devtools_url, f"{foreign_origin}/?ws={target}", foreign_origin))
        finally:
            stop_process_group(chromium)
            remove_profile(profile)
    assert same_origin == "echo ping"
    assert cross_origin == "closed 1006"  # the browser's code for a handshake that failed
    assert seen == [own_origin.encode()]
    assert any(f"origin '{foreign_origin}' is not allowed" in r.getMessage() for r in caplog.records)
