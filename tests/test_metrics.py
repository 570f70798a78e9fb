"""--metrics-port: Prometheus metrics (asgiws.metrics), scraped over HTTP and read with
prometheus-client's own text parser, after real HTTP and WebSocket traffic; one process
in-process, `--workers 2` as a real supervisor and workers; the missing extra."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from conftest import TIMEOUT

parser = pytest.importorskip("prometheus_client.parser", reason="the test extra installs prometheus-client")

APPS = Path(__file__).resolve().parent / "apps"


def scrape(url: str) -> dict:
    """{(sample name, sorted label items): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_url(server) -> str:
    host, port = server.server.exporter.httpd.socket.getsockname()[:2]
    return f"http://{host}:{port}/metrics"


def wait_for(url: str, condition, what: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        figures = scrape(url)
        if condition(figures):
            return figures
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {figures}"
        time.sleep(0.05)


async def app(scope, receive, send):
    if scope["type"] == "http":
        status = 404 if scope["path"] == "/missing" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 10})
    elif scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})


def test_scrape_after_http_and_websocket_traffic(run_server):
    with run_server(app, metrics_port=0) as server:
        url = metrics_url(server)
        with httpx.Client() as client:
            for path in ("/", "/a", "/missing"):
                client.get(server.url + path)
            client.post(server.url + "/")
        with connect(server.ws_url + "/chat", compression=None, open_timeout=TIMEOUT) as ws:
            for text in ("one", "two", "three"):
                ws.send(text)
                assert ws.recv(TIMEOUT) == text
            open_now = scrape(url)
            assert open_now[("asgiws_connections", (("kind", "websocket"),))] == 1
        with pytest.raises(Exception):
            connect(server.ws_url + "/refuse", open_timeout=TIMEOUT)
        figures = wait_for(url, lambda f: f.get(("asgiws_websocket_sessions_total", (("outcome", "refused"),))) == 1
                           and f.get(("asgiws_connections", (("kind", "websocket"),))) == 0, "both sessions to end")
    requests = {labels: value for (name, labels), value in figures.items() if name == "asgiws_http_requests_total"}
    assert requests == {
        (("method", "GET"), ("status", "200")): 2,
        (("method", "GET"), ("status", "404")): 1,
        (("method", "POST"), ("status", "200")): 1,
    }
    assert figures[("asgiws_http_request_duration_seconds_count", ())] == 4
    assert 0 < figures[("asgiws_http_request_duration_seconds_sum", ())] < TIMEOUT
    assert figures[("asgiws_websocket_sessions_total", (("outcome", "peer"),))] == 1
    assert figures[("asgiws_websocket_handshake_duration_seconds_count", ())] == 1  # the refused one never accepted
    assert figures[("asgiws_websocket_messages_total", (("direction", "in"),))] == 3
    assert figures[("asgiws_websocket_messages_total", (("direction", "out"),))] == 3
    payload = len("one") + len("two") + len("three")
    # On the wire: each frame's header (6 B masked in, 2 B out) and the Close frames.
    assert payload + 3 * 6 <= figures[("asgiws_websocket_bytes_total", (("direction", "in"),))] < payload + 60
    assert payload + 3 * 2 <= figures[("asgiws_websocket_bytes_total", (("direction", "out"),))] < payload + 60
    assert figures[("asgiws_connections", (("kind", "http"),))] == 0  # the clients closed theirs
    assert ("process_resident_memory_bytes", ()) in figures  # prometheus-client's default registry too


def test_listener_binds_loopback_by_default(run_server):
    from asgiws.config import Config

    assert Config().metrics_host == "127.0.0.1" and Config().metrics_port is None
    with run_server(app, metrics_port=0, host="0.0.0.0") as server:
        assert server.server.exporter.httpd.socket.getsockname()[0] == "127.0.0.1"


def test_scrapes_at_once_are_bounded(run_server):
    """Connections to the metrics port that send nothing hold at most MAX_SCRAPES threads; the
    next one is closed unanswered, and a scrape gets through again once they are gone."""
    from asgiws.metrics import MAX_SCRAPES

    with run_server(app, metrics_port=0) as server:
        host, port = server.server.exporter.httpd.socket.getsockname()[:2]
        idle = [socket.create_connection((host, port), timeout=TIMEOUT) for _ in range(MAX_SCRAPES)]
        try:
            deadline = time.monotonic() + TIMEOUT
            while server.server.exporter.httpd.slots._value:  # until each idle one holds a slot
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with socket.create_connection((host, port), timeout=TIMEOUT) as extra:
                assert extra.recv(100) == b""  # closed at once, not left waiting for its request
        finally:
            for sock in idle:
                sock.close()
        # Their threads see the close and give their slots back; then scrapes get through again.
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                assert scrape(metrics_url(server))
                break
            except OSError:  # still full: closed unanswered
                assert time.monotonic() < deadline, "no slot came back"
                time.sleep(0.02)


@pytest.mark.parametrize("access_log, observed", [(False, False), (True, True)])
def test_metrics_off_is_decided_once_per_connection(run_server, caplog, access_log, observed):
    """Metrics off: nothing to serve, nothing to record into; with the access log off too, a
    connection is not `observed` at all, so no request on it is even timed."""
    caplog.set_level(logging.INFO, logger="asgiws.access")
    with run_server(app, access_log=access_log) as server:
        state = server.server.server_state
        assert server.server.exporter is None and state.metrics is None
        with httpx.Client() as client:
            assert client.get(server.url).status_code == 200
            (conn,) = [c for c in state.connections if type(c).__name__ == "HttpProtocol"]
            assert conn.observed is observed and conn._metrics is None


def test_missing_extra_is_one_line(spawn, tmp_path):
    blocker = tmp_path / "no_prometheus"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text('raise ImportError("No module named \'prometheus_client\'")\n')
    (tmp_path / "metricsapp.py").write_text("async def app(scope, receive, send):\n    pass\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    for workers in ("1", "2"):
        proc = spawn(["metricsapp:app", "--port", "0", "--app-dir", str(tmp_path), "--lifespan", "off",
                      "--metrics-port", "0", "--workers", workers], env=env)  # fmt: skip
        assert proc.wait() == 3, proc.text
        errors = [line for line in proc.text.splitlines() if line.startswith("ERROR")]
        assert errors == ["ERROR: --metrics-port needs prometheus-client: pip install 'asgiws[metrics]'"], proc.text
        assert "Traceback" not in proc.text


def get_json(server, path: str = "/") -> dict:
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])


def test_workers_figures_are_summed_and_dead_workers_gauges_go(spawn_server):
    with spawn_server("deployment:app", "--workers", "2", "--metrics-port", "0", "--lifespan", "off",
                      app_dir=APPS) as server:  # fmt: skip
        line = server.wait_for_line(r"Metrics on http://(\S+)/metrics \(the sum of the workers', kept in (\S+)\)")
        url, directory = f"http://{line[1]}/metrics", Path(line[2])
        assert directory.is_dir()
        seen, sent = set(), 0
        deadline = time.monotonic() + TIMEOUT
        while len(seen) < 2 or sent < 10:  # new connections until both workers have answered
            assert time.monotonic() < deadline, f"only {seen} answered"
            seen.add(get_json(server)["pid"])
            sent += 1
        figures = wait_for(url, lambda f: f.get(("asgiws_http_requests_total", (("method", "GET"), ("status", "200"))))
                           == sent, f"{sent} requests from {len(seen)} workers")
        assert figures[("asgiws_http_request_duration_seconds_count", ())] == sent

        # A WebSocket held open on one worker; that worker killed: its open connection goes.
        with connect(f"ws://{server.host}:{server.port}/", open_timeout=TIMEOUT, close_timeout=0.1) as ws:
            victim = json.loads(ws.recv(TIMEOUT))["pid"]
            wait_for(url, lambda f: f.get(("asgiws_connections", (("kind", "websocket"),))) == 1, "the open session")
            os.kill(victim, signal.SIGKILL)
            server.wait_for_line(rf"Worker \[{victim}\] died")
            figures = wait_for(url, lambda f: f.get(("asgiws_connections", (("kind", "websocket"),))) == 0,
                               "the dead worker's gauge to go")
        # Its counters stay in the sum: counters never go down.
        assert figures[("asgiws_http_requests_total", (("method", "GET"), ("status", "200")))] == sent
        assert sorted(p.name.split("_")[0] for p in directory.iterdir())  # the workers' files
    assert server.proc.returncode == 0, server.text
    assert not directory.exists()  # removed when the supervisor exits
