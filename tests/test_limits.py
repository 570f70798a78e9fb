"""Limits and timeouts against a real server over real sockets, where tests/test_http.py and
tests/test_websocket.py do not already cover them: a slowloris cut by the header timeout while
others are served, --limit-concurrency counting WebSocket sessions, --backlog, --gc-threshold.

Covered elsewhere: keep-alive timeout, 431 for a large head / too many headers, a silent
connection (test_http.py); the WebSocket accept deadline and close timeout (test_websocket.py).
"""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import TIMEOUT


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": message.get("text") or ""})


def test_slowloris_is_cut_while_others_are_served(run_server):
    timeout_header = 2.0
    with run_server(app, timeout_header=timeout_header) as server:
        result = {}

        def slowloris():
            sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
            started = time.monotonic()
            sent = 0
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while time.monotonic() - started < 3 * timeout_header:
                    time.sleep(0.5)
                    sock.sendall(b"a")  # a header byte every half second, never the end of the head
                    sent += 1
            except OSError:  # reset: the server closed while we were still sending
                pass
            else:
                result["alive"] = True
            try:
                sock.settimeout(1.0)
                result["eof"] = sock.recv(100) == b""
            except OSError:
                result["eof"] = True
            result["cut_after"] = time.monotonic() - started
            result["sent"] = sent
            sock.close()

        thread = threading.Thread(target=slowloris)
        thread.start()
        served = 0
        with httpx.Client(timeout=TIMEOUT) as client:
            while thread.is_alive():
                assert client.get(server.url).text == "ok"  # another client, while the slowloris dribbles
                served += 1
                time.sleep(0.1)
        thread.join()
    assert "alive" not in result, result
    assert result["eof"], result
    assert timeout_header - 0.1 <= result["cut_after"] < timeout_header + 1.5, result
    assert served >= 5


def ws_status(url):
    """The HTTP status of a WebSocket handshake: 101, or the refusal's status."""
    try:
        with connect(url, open_timeout=TIMEOUT) as ws:
            ws.send("ping")
            assert ws.recv(TIMEOUT) == "ping"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_limit_concurrency_counts_websocket_sessions(run_server):
    with run_server(app, limit_concurrency=2) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as first, connect(server.ws_url, open_timeout=TIMEOUT):
            # Two sessions live: a third handshake and a plain request are both over the limit.
            try:
                with connect(server.ws_url, open_timeout=TIMEOUT):
                    pytest.fail("a WebSocket over the limit was accepted")
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                assert exc.response.headers["connection"] == "close"
            assert httpx.get(server.url).status_code == 503
            first.close()
            deadline = time.monotonic() + TIMEOUT
            while ws_status(server.ws_url) != 101:  # once the server has seen the first one go
                assert time.monotonic() < deadline, "a slot did not free up"
                time.sleep(0.05)
        assert httpx.get(server.url).text == "ok"


def test_limit_concurrency_lets_websockets_in_under_the_limit(run_server):
    with run_server(app, limit_concurrency=3) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT), connect(server.ws_url, open_timeout=TIMEOUT):
            assert ws_status(server.ws_url) == 101  # the third session: at the limit, not over it


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read a listening socket's backlog")
def test_backlog_is_the_listen_queue_length(run_server):
    with run_server(app, backlog=37) as server:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True,
                             timeout=TIMEOUT).stdout.split()  # fmt: skip
    # State Recv-Q Send-Q Local Peer: for a listening socket, Send-Q is the backlog.
    assert out[0] == "LISTEN" and out[2] == "37", out


@pytest.mark.parametrize("setting, expected", [(12345, 12345), (None, 700)])
def test_gc_threshold_is_set_at_startup(run_server, setting, expected):
    """--gc-threshold sets the collector's generation-0 threshold (none: Python's own, kept);
    the older generations' thresholds stay as they were."""
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        with run_server(app, gc_threshold=setting) as server:
            assert httpx.get(server.url, timeout=TIMEOUT).status_code == 200
            assert gc.get_threshold() == (expected, *before[1:])
    finally:
        gc.set_threshold(*before)
