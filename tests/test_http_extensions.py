"""The ASGI HTTP extensions asgiws offers (asgiref docs/extensions.rst): `http.response.pathsend`
(Starlette's FileResponse uses it), `http.response.trailers`, `http.response.early_hint`
(--early-hints) and `tls` — over real sockets, with httpx and raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from conftest import TIMEOUT, RawConnection
from test_tls import client_context, pki  # noqa: F401  (pki is a fixture)

starlette = pytest.importorskip("starlette")
from starlette.responses import FileResponse  # noqa: E402

from asgiws.http.filesend import FileSender  # noqa: E402

FILE_SIZE = 8 * 1024 * 1024 + 12345  # several sendfile steps and socket-buffer fills


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


def file_app(path: Path, seen: list):
    """Starlette's FileResponse, wrapped to record the message types it sends."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.append(("extensions", sorted(scope.get("extensions", {}))))

        async def recording_send(message):
            seen.append(message["type"])
            await send(message)

        await FileResponse(path)(scope, receive, recording_send)

    return app


@pytest.fixture
def sendfile_calls(monkeypatch) -> list:
    """The bytes each os.sendfile() call sent (the server runs in this process)."""
    calls: list = []
    real = os.sendfile

    def counting(out_fd, in_fd, offset, count):
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


# -- pathsend ---------------------------------------------------------------------------------


def test_file_response_goes_through_pathsend(run_server, data_file, sendfile_calls):
    seen: list = []
    with run_server(file_app(data_file, seen)) as server:
        with httpx.Client(timeout=TIMEOUT) as client:
            for _ in range(2):  # twice on one keep-alive connection
                response = client.get(server.url + "/")
                assert response.status_code == 200
                assert response.headers["content-length"] == str(FILE_SIZE)
                assert response.content == data_file.read_bytes()
    assert seen[0] == ("extensions", ["http.response.pathsend", "http.response.trailers"])
    assert seen[1:3] == ["http.response.start", "http.response.pathsend"]
    assert "http.response.body" not in seen
    assert sum(sendfile_calls) == 2 * FILE_SIZE  # in the kernel, by sendfile
    assert open_fds_to(data_file) == 0


def test_head_and_range_through_file_response(run_server, data_file):
    seen: list = []
    whole = data_file.read_bytes()
    with run_server(file_app(data_file, seen)) as server:
        with httpx.Client(timeout=TIMEOUT) as client:
            head = client.head(server.url + "/")
            assert head.status_code == 200 and head.headers["content-length"] == str(FILE_SIZE)
            assert head.content == b""
            ranged = client.get(server.url + "/", headers={"Range": "bytes=1000-2999"})
            assert ranged.status_code == 206 and ranged.content == whole[1000:3000]
            assert client.get(server.url + "/").content == whole  # the connection is still good
    # Starlette answers HEAD and a Range with body messages; the plain GET with pathsend.
    assert [m for m in seen if isinstance(m, str) and m != "http.response.start"] == [
        "http.response.body", "http.response.body", "http.response.pathsend"]


def test_raw_pathsend_without_content_length_is_framed_by_the_file_size(run_server, tmp_path, raw):
    path = tmp_path / "small.txt"
    path.write_bytes(b"hello, file\n")

    async def app(scope, receive, send):
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.pathsend", "path": str(path)})
        else:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"after"})

    with run_server(app) as server, raw(server) as conn:
        # Pipelined: the file's response, then the next, in order and correctly framed.
        conn.send(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        first = conn.read_response()
        assert first.headers["content-length"] == "12" and first.body == b"hello, file\n"
        assert conn.read_response().body == b"after"


def test_pathsend_waits_until_the_transport_has_written_what_came_before(run_server, tmp_path, sendfile_calls, raw,
                                                                          monkeypatch):
    """What the transport still holds (here a 1 MB response head, behind a small socket buffer)
    goes out before the file: sendfile starts only once the transport's buffer is empty, and
    the bytes arrive in order."""
    path = tmp_path / "one.bin"
    path.write_bytes(os.urandom(1024 * 1024))
    padding = [(b"x-pad-%04d" % i, b"y" * 1000) for i in range(1000)]
    waited = []

    async def app(scope, receive, send):
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": padding})
            await send({"type": "http.response.pathsend", "path": str(path)})  # the head is written here
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    with run_server(app) as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"ok"  # the connection is in the server's set now
        (protocol,) = server.server.server_state.connections
        # A small socket send buffer: the kernel takes the head only as the client reads it.
        protocol.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        real_wait = FileSender._wait_empty

        async def recording_wait(sender):
            waited.append(sender.transport.get_write_buffer_size())
            await real_wait(sender)
            waited.append(sender.transport.get_write_buffer_size())

        monkeypatch.setattr(FileSender, "_wait_empty", recording_wait)
        conn.send(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200 and response.body == path.read_bytes()
        assert response.headers["x-pad-0999"] == "y" * 1000
    assert sum(sendfile_calls) == len(response.body)
    assert waited[0] > 0 and waited[1] == 0, waited  # it had to wait, and sent once empty


def test_pathsend_of_a_missing_file_is_a_500(run_server, tmp_path, raw):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.pathsend", "path": str(tmp_path / "nope")})

    with run_server(app) as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 500


def test_client_leaving_mid_file_ends_it_cleanly(run_server, tmp_path):
    """A client reads a little of a large file and goes: the app's send() raises
    ClientDisconnected, its receive() returns http.disconnect, no descriptor is left open, and
    the server keeps serving."""
    path = tmp_path / "large.bin"
    path.write_bytes(b"x" * (64 * 1024 * 1024))
    outcome: dict = {}
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["path"] == "/ping":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"pong"})
            return
        await send({"type": "http.response.start", "status": 200})
        try:
            await send({"type": "http.response.pathsend", "path": str(path)})
        except OSError as exc:
            outcome["send"] = type(exc).__name__
            outcome["receive"] = (await receive())["type"]
        finally:
            done.set()

    with run_server(app) as server:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096)
        # The server is stuck on a full socket, not on the loop: others are served meanwhile.
        assert httpx.get(server.url + "/ping", timeout=TIMEOUT).text == "pong"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
        assert done.wait(TIMEOUT)
        assert outcome == {"send": "ClientDisconnected", "receive": "http.disconnect"}
        assert open_fds_to(path) == 0
        assert httpx.get(server.url + "/ping", timeout=TIMEOUT).text == "pong"


def test_a_peer_that_stops_reading_mid_file_is_dropped_after_the_write_stall(run_server, tmp_path):
    path = tmp_path / "large.bin"
    path.write_bytes(b"y" * (64 * 1024 * 1024))
    done = threading.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        try:
            await send({"type": "http.response.pathsend", "path": str(path)})
        finally:
            done.set()

    with run_server(app, timeout_write_stall=0.5) as server:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100)
        assert done.wait(TIMEOUT), "the stalled transfer was never ended"
        assert open_fds_to(path) == 0
        sock.close()


def test_file_response_over_tls_uses_the_read_and_write_fallback(run_server, data_file, pki, sendfile_calls):  # noqa: F811
    seen: list = []
    settings = {"ssl_certfile": pki["cert"], "ssl_keyfile": pki["plain_key"]}
    with run_server(file_app(data_file, seen), **settings) as server:
        url = f"https://127.0.0.1:{server.port}/"
        with httpx.Client(verify=client_context(pki), timeout=TIMEOUT) as client:
            for _ in range(2):
                assert client.get(url).content == data_file.read_bytes()
    assert "http.response.pathsend" in seen
    assert sendfile_calls == []  # TLS: the bytes go through the transport to be encrypted
    assert open_fds_to(data_file) == 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pathsend_on_either_loop_and_over_a_unix_socket(run_server, data_file, tmp_path, loop, sendfile_calls):
    seen: list = []
    with run_server(file_app(data_file, seen), loop=loop, uds=str(tmp_path / "s.sock")) as server:
        transport = httpx.HTTPTransport(uds=server.uds)
        with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
            assert client.get("http://x/").content == data_file.read_bytes()
    assert "http.response.pathsend" in seen and sum(sendfile_calls) == FILE_SIZE


# -- trailers ---------------------------------------------------------------------------------


async def trailers_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"trailer", b"x-checksum")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")], "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1"), (b"content-length", b"5")]})


def read_chunked_with_trailers(conn: RawConnection):
    head = conn.read_until(b"\r\n\r\n")
    body = b""
    while True:
        size = int(conn.read_until(b"\r\n")[:-2], 16)
        if size == 0:
            break
        body += conn.read_exact(size)
        conn.read_exact(2)
    return head, body, conn.read_until(b"\r\n\r\n")


def test_trailers_are_sent_to_a_client_that_asks_for_them(run_server, raw):
    with run_server(trailers_app) as server, raw(server) as conn:
        for _ in range(2):  # the connection stays usable after a response with trailers
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
            head, body, trailers = read_chunked_with_trailers(conn)
            assert b"transfer-encoding: chunked" in head
            assert body == b"part one, part two"
            # Framing fields are never trailers (RFC 9110 §6.5.1): content-length was dropped.
            assert trailers == b"x-checksum: abc123\r\nx-more: 1\r\n\r\n"


def test_trailers_are_dropped_without_te_trailers(run_server, raw):
    with run_server(trailers_app) as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            response = conn.read_response()
            assert response.body == b"part one, part two"
            assert response.headers["transfer-encoding"] == "chunked"
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.read_until(b"\r\n\r\n")
        # The last chunk ends the message at once: no trailer section.
        assert conn.read_until(b"0\r\n\r\n").endswith(b"part two\r\n0\r\n\r\n")


def test_trailers_on_a_single_body_use_chunked_framing(run_server, raw):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"all of it"})
        await send({"type": "http.response.trailers", "headers": [(b"x-done", b"yes")]})

    with run_server(app) as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        _, body, trailers = read_chunked_with_trailers(conn)
        assert body == b"all of it" and trailers == b"x-done: yes\r\n\r\n"
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no TE: a plain Content-Length response
        response = conn.read_response()
        assert response.headers["content-length"] == "9" and response.body == b"all of it"


# -- early hints ------------------------------------------------------------------------------


async def hints_app(scope, receive, send):
    await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.early_hint", "links": [b"</app.js>; rel=preload; as=script"]})
    await send({"type": "http.response.body", "body": json.dumps(sorted(scope["extensions"])).encode()})


def test_early_hints_when_enabled(run_server, raw):
    with run_server(hints_app, early_hints=True) as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_until(b"\r\n\r\n") == b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n"
        assert conn.read_until(b"\r\n\r\n") == b"HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload; as=script\r\n\r\n"
        response = conn.read_response()
        assert response.status == 200 and "http.response.early_hint" in json.loads(response.body)
    with run_server(hints_app, early_hints=True) as server:  # httpx skips the 103s
        assert httpx.get(server.url, timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("early_hints, request_line", [(False, b"GET / HTTP/1.1"), (True, b"GET / HTTP/1.0")],
                         ids=["off", "http-1.0-client"])
def test_no_early_hints_when_off_or_to_http_1_0(run_server, raw, early_hints, request_line):
    with run_server(hints_app, early_hints=early_hints) as server, raw(server) as conn:
        conn.send(request_line + b"\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert "http.response.early_hint" not in json.loads(response.body)


# -- tls ----------------------------------------------------------------------------------------


async def tls_app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(scope["extensions"].get("tls"))})
        await send({"type": "websocket.close"})
        return
    body = json.dumps(scope["extensions"].get("tls")).encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


def test_tls_extension_with_a_client_certificate(run_server, pki):  # noqa: F811
    settings = {"ssl_certfile": pki["cert"], "ssl_keyfile": pki["plain_key"], "ssl_ca_certs": pki["ca"]}
    with run_server(tls_app, **settings) as server:
        context = client_context(pki, with_certificate=True)
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as plain:
            with context.wrap_socket(plain, server_hostname="localhost") as tls_sock:
                tls_sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls_sock.recv(65536):
                    data += chunk
                negotiated = tls_sock.cipher()[0], tls_sock.version()
        info = json.loads(data.split(b"\r\n\r\n", 1)[1])

        async def over_wss():
            from websockets.asyncio.client import connect

            async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context, open_timeout=TIMEOUT) as ws:
                return json.loads(await ws.recv())

        ws_info = asyncio.run(over_wss())
    client_pem = Path(pki["client_cert"]).read_text()
    server_pem = Path(pki["cert"]).read_text()
    assert ssl.PEM_cert_to_DER_cert(info["client_cert_chain"][0]) == ssl.PEM_cert_to_DER_cert(client_pem)
    assert ssl.PEM_cert_to_DER_cert(info["server_cert"]) == ssl.PEM_cert_to_DER_cert(server_pem)
    assert info["client_cert_name"] == "CN=test client"
    assert info["client_cert_error"] is None
    assert info["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[negotiated[1]]
    iana = {"TLS_AES_256_GCM_SHA384": 0x1302, "TLS_AES_128_GCM_SHA256": 0x1301,
            "TLS_CHACHA20_POLY1305_SHA256": 0x1303}  # fmt: skip
    assert info["cipher_suite"] == iana[negotiated[0]]
    assert ws_info == info  # the same connection facts for wss://


def test_tls_extension_without_a_client_certificate_and_absent_on_plain_http(run_server, pki):  # noqa: F811
    settings = {"ssl_certfile": pki["cert"], "ssl_keyfile": pki["plain_key"]}
    with run_server(tls_app, **settings) as server:
        info = httpx.get(f"https://127.0.0.1:{server.port}/", verify=client_context(pki), timeout=TIMEOUT).json()
    assert info["client_cert_chain"] == [] and info["client_cert_name"] is None
    assert info["tls_version"] in (0x0303, 0x0304) and isinstance(info["cipher_suite"], int)
    with run_server(tls_app) as server:
        assert httpx.get(server.url, timeout=TIMEOUT).json() is None


def test_rfc4514_names():
    from asgiws.http.tls import rfc4514_name

    subject = ((("countryName", "FR"),), (("organizationName", "A, B+C"),),
               (("commonName", " lead"), ("emailAddress", "a@b.c")))  # fmt: skip
    assert rfc4514_name(subject) == "CN=\\ lead+emailAddress=a@b.c,O=A\\, B\\+C,C=FR"
