"""The opening handshake (RFC 6455 §4.2), driven by header lists: one test per refusal."""

import base64

import pytest

from asgiws.websocket.handshake import (
    HandshakeError,
    accept_key,
    build_response,
    parse_extensions,
    validate_request,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def headers(**overrides):
    base = {
        b"host": b"example.com",
        b"upgrade": b"websocket",
        b"connection": b"Upgrade",
        b"sec-websocket-key": KEY,
        b"sec-websocket-version": b"13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-").encode()
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return list(base.items())


def test_accept_key_rfc_example():
    # RFC 6455 §1.3's worked example.
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_request():
    request = validate_request("GET", "1.1", headers(sec_websocket_protocol=b"chat, superchat"))
    assert request.key == KEY
    assert request.subprotocols == ["chat", "superchat"]


def test_tokens_are_case_insensitive_lists():
    validate_request("GET", "1.1", headers(upgrade=b"WebSocket", connection=b"keep-alive, UPGRADE"))


@pytest.mark.parametrize(
    "method, version, hdrs, status",
    [
        ("POST", "1.1", headers(), 400),
        ("GET", "1.0", headers(), 400),
        ("GET", "1.1", headers(upgrade=None), 400),
        ("GET", "1.1", headers(upgrade=b"h2c"), 400),
        ("GET", "1.1", headers(connection=b"keep-alive"), 400),
        ("GET", "1.1", headers(sec_websocket_key=None), 400),
        ("GET", "1.1", headers(sec_websocket_key=b"not base64!"), 400),
        ("GET", "1.1", headers(sec_websocket_key=base64.b64encode(b"x" * 15)), 400),
        ("GET", "1.1", headers(sec_websocket_version=None), 400),
        ("GET", "1.1", headers(sec_websocket_version=b"8"), 426),
        ("GET", "1.1", headers(sec_websocket_extensions=b"permessage-deflate; x=\"a b\""), 400),
    ],
)
def test_refusals(method, version, hdrs, status):
    with pytest.raises(HandshakeError) as info:
        validate_request(method, version, hdrs)
    assert info.value.status == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in info.value.headers


def test_two_keys_refused():
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", headers() + [(b"sec-websocket-key", KEY)])
    assert info.value.status == 400


def test_parse_extensions():
    assert parse_extensions([b'permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-foo']) == [
        ("permessage-deflate", [("client_max_window_bits", None), ("server_max_window_bits", "10")]),
        ("x-foo", []),
    ]


def test_build_response():
    response = build_response(KEY, "chat", b"permessage-deflate", [(b"x-a", b"1")])
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert b"Sec-WebSocket-Protocol: chat\r\n" in response
    assert b"Sec-WebSocket-Extensions: permessage-deflate\r\n" in response
    assert response.endswith(b"x-a: 1\r\n\r\n")
