"""Logging: the WebSocket session line in the access log, --log-level, --log-config (JSON, YAML).

The session line is checked in-process (caplog); the command-line settings against a real
`python -m asgiws` process, since they configure the process's logging.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import textwrap
import time

import httpx
import pytest
from websockets.sync.client import connect

from conftest import TIMEOUT, free_port

# -- the WebSocket session line ----------------------------------------------------------------

SESSION_LINE = re.compile(
    r'^(?P<client>\S+) - "WebSocket (?P<path>\S*)" (?P<status>\d+) \[(?P<subprotocol>[^\]]+)\] '
    r"(?P<duration>\d+\.\d{3})s close (?P<code>\d+) by (?P<by>\w+); "
    r"in (?P<msgs_in>\d+) msgs (?P<bytes_in>\d+) B, out (?P<msgs_out>\d+) msgs (?P<bytes_out>\d+) B$"
)


async def echo_app(scope, receive, send):
    """Echo; accepts the first offered subprotocol; the text "close" closes with 4001."""
    if scope["type"] != "websocket":
        return
    await receive()
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes")}})


def records(caplog, name="asgiws.access"):
    return [r for r in caplog.records if r.name == name]


def session_line(caplog):
    lines = [r.getMessage() for r in records(caplog) if "WebSocket" in r.getMessage()]
    assert len(lines) == 1, lines
    match = SESSION_LINE.match(lines[0])
    assert match, lines[0]
    return match


def test_session_line_closed_by_the_client(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            started = time.monotonic()
            with connect(server.ws_url + "/room?id=7", subprotocols=["chat"], compression=None,
                         open_timeout=TIMEOUT) as ws:  # fmt: skip
                for _ in range(5):
                    ws.send("x" * 100)
                    assert ws.recv(TIMEOUT) == "x" * 100
                ws.send(b"\x00" * 1000)
                assert ws.recv(TIMEOUT) == b"\x00" * 1000
                port = ws.socket.getsockname()[1]
            elapsed = time.monotonic() - started
            deadline = time.monotonic() + TIMEOUT
            while not [r for r in records(caplog) if "WebSocket" in r.getMessage()] and time.monotonic() < deadline:
                time.sleep(0.01)
    match = session_line(caplog)
    assert match["client"] == f"127.0.0.1:{port}"
    assert match["path"] == "/room?id=7"  # the query string too (its credentials redacted: below)
    assert match["status"] == "101"
    assert match["subprotocol"] == "chat"
    assert 0 <= float(match["duration"]) <= elapsed + 0.5
    assert (match["code"], match["by"]) == ("1000", "peer")
    assert (match["msgs_in"], match["msgs_out"]) == ("6", "6")
    payload = 5 * 100 + 1000
    # Bytes on the wire: payloads plus frame headers (6-14 B each, masked in; 2-10 B out) and the Close.
    assert payload < int(match["bytes_in"]) < payload + 200
    assert payload < int(match["bytes_out"]) < payload + 200


def test_session_line_closed_by_the_app(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            with connect(server.ws_url + "/x", open_timeout=TIMEOUT) as ws:
                ws.send("close")
                with pytest.raises(Exception):
                    ws.recv(TIMEOUT)
    match = session_line(caplog)
    assert (match["code"], match["by"], match["subprotocol"]) == ("4001", "app", "-")
    assert (match["msgs_in"], match["msgs_out"]) == ("1", "0")


def test_session_line_when_tcp_drops(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            with connect(server.ws_url + "/gone", open_timeout=TIMEOUT, close_timeout=0.1) as ws:
                ws.send("hello")
                assert ws.recv(TIMEOUT) == "hello"
                ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                ws.socket.close()  # RST, no Close frame
            deadline = time.monotonic() + TIMEOUT
            while not [r for r in records(caplog) if "WebSocket" in r.getMessage()] and time.monotonic() < deadline:
                time.sleep(0.01)
    match = session_line(caplog)
    assert (match["code"], match["by"]) == ("1006", "network")


def test_nothing_is_logged_per_message(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
                for i in range(300):
                    ws.send(str(i))
                for i in range(300):
                    assert ws.recv(TIMEOUT) == str(i)
    asgiws_records = [r for r in caplog.records if r.name.startswith("asgiws")]
    messages = [r.getMessage() for r in asgiws_records]
    sessions = [r for r in asgiws_records if r.name == "asgiws.access" and "WebSocket" in r.getMessage()]
    assert len(sessions) == 1, messages  # the session line (not the pure-Python fallback's warning)
    assert len(asgiws_records) < 10, messages  # startup / shutdown lines, not one per message


def test_access_log_off_silences_the_session_line(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app, access_log=False) as server:
            with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
                ws.send("a")
                ws.recv(TIMEOUT)
    assert not records(caplog)


# -- named fields, redaction, refused handshakes -------------------------------------------------


def wait_for_records(caplog, count, predicate=lambda r: True):
    deadline = time.monotonic() + TIMEOUT
    while len([r for r in records(caplog) if predicate(r)]) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [r for r in records(caplog) if predicate(r)]


async def http_app(scope, receive, send):
    if scope["type"] == "http":
        if scope["path"] == "/stream":  # chunked: no Content-Length
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a" * 100, "more_body": True})
            await send({"type": "http.response.body", "body": b"b" * 23})
            return
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
    elif scope["type"] == "websocket":
        await echo_app(scope, receive, send)


def test_http_access_record_has_named_fields(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(http_app) as server:
            with httpx.Client() as client:
                assert client.post(server.url + "/p/q?x=1&token=s3cret", content=b"abc").status_code == 201
                assert client.get(server.url + "/stream").content == b"a" * 100 + b"b" * 23
    first, second = wait_for_records(caplog, 2)
    assert "s3cret" not in first.getMessage()
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "POST /p/q\?x=1&token=\[redacted\] HTTP/1\.1" 201 5 B \d+\.\dms',
                        first.getMessage())
    assert (first.type, first.method, first.path, first.query, first.http_version, first.status, first.bytes) == (
        "http", "POST", "/p/q", "x=1&token=[redacted]", "1.1", 201, 5)
    assert first.client == f"127.0.0.1:{first.client.split(':')[1]}" and first.complete is True
    assert isinstance(first.duration_ms, float) and 0 <= first.duration_ms < TIMEOUT * 1000
    assert (second.path, second.query, second.status, second.bytes) == ("/stream", "", 200, 123)  # body only


def test_session_record_keeps_the_query_with_credentials_redacted(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            url = server.ws_url + "/room?id=7&Token=abc&access_token=def&auth=ghi&authority=kept&%74oken=jkl"
            with connect(url, compression=None, open_timeout=TIMEOUT) as ws:
                ws.send("hi")
                assert ws.recv(TIMEOUT) == "hi"
            (record,) = wait_for_records(caplog, 1)
    message = record.getMessage()
    assert not any(secret in message for secret in ("abc", "def", "ghi", "jkl")), message
    query = "id=7&Token=[redacted]&access_token=[redacted]&auth=[redacted]&authority=kept&%74oken=[redacted]"
    assert f'"WebSocket /room?{query}" 101 ' in message
    assert (record.type, record.path, record.query, record.status) == ("websocket", "/room", query, 101)
    assert (record.ws_close_code, record.closed_by, record.subprotocol) == (1000, "peer", None)
    assert (record.ws_messages_in, record.ws_messages_out) == (1, 1)
    assert 2 < record.ws_bytes_in < 40 and 2 < record.ws_bytes_out < 40 and record.bytes == record.ws_bytes_out
    assert record.duration_ms >= 0


@pytest.mark.parametrize("setting, expected", [
    (["session"], "token=abc&session=[redacted]"),
    (None, "token=abc&session=xyz"),
])  # fmt: skip
def test_redacted_params_are_a_setting(run_server, caplog, setting, expected):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(http_app, log_redact_query_params=setting) as server:
            httpx.get(server.url + "/?token=abc&session=xyz")
    (record,) = wait_for_records(caplog, 1)
    assert record.query == expected and f"/?{expected} HTTP/1.1" in record.getMessage()


async def refusing_app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    if scope["path"] == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})
    elif scope["path"] == "/crash":
        raise RuntimeError("boom before accept")
    else:
        await send({"type": "websocket.close"})  # before accept: 403


@pytest.mark.parametrize("path, status, by", [
    ("/close", 403, "app"),  # websocket.close before accept
    ("/deny", 401, "app"),  # the denial response extension
    ("/crash", 500, "server"),  # the app raised before accepting
])  # fmt: skip
def test_refused_handshake_is_logged_with_its_http_status(run_server, caplog, path, status, by):
    from websockets.exceptions import InvalidStatus

    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(refusing_app) as server:
            with pytest.raises(InvalidStatus) as refused:
                connect(server.ws_url + path + "?auth=pw", open_timeout=TIMEOUT)
            assert refused.value.response.status_code == status
            (record,) = wait_for_records(caplog, 1)
    message = record.getMessage()
    assert re.fullmatch(rf'127\.0\.0\.1:\d+ - "WebSocket {path}\?auth=\[redacted\]" {status} refused by {by} '
                        r"\d+\.\d{3}s", message), message
    assert " close " not in message and "1006" not in message
    assert (record.type, record.status, record.ws_close_code, record.closed_by) == ("websocket", status, None, by)


def test_handshake_the_server_refuses_is_logged_with_its_status(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws"):
        with run_server(echo_app) as server:
            with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
                # No Sec-WebSocket-Key: 400 (RFC 6455 §4.2.1).
                sock.sendall(b"GET /ws?token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
            (record,) = wait_for_records(caplog, 1)
    assert '"WebSocket /ws?token=[redacted]" 400 refused by server' in record.getMessage()
    assert (record.status, record.ws_close_code) == (400, None)
    refusal = [r for r in caplog.records if r.name == "asgiws.error" and "Refused WebSocket handshake" in r.getMessage()]
    assert refusal and refusal[0].status == 400 and refusal[0].client.startswith("127.0.0.1:")


# -- --log-format json ---------------------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line():
    from asgiws.logging import JsonFormatter

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.getLogger("asgiws.error").makeRecord(
            "asgiws.error", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=__import__("sys").exc_info(),
            extra={"client": "1.2.3.4:5", "status": 500, "when": object()})  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "asgiws.error", "failed here")
    assert (entry["client"], entry["status"]) == ("1.2.3.4:5", 500)
    assert entry["when"].startswith("<object object")  # not JSON: its str()
    assert "ValueError: bad" in entry["exc_info"]
    assert not {"msg", "args", "levelno", "pathname", "lineno"} & set(entry)


def test_log_format_json_end_to_end(tmp_path):
    """`python -m asgiws --log-format json`: stdout (access) and stderr (error) parse line by line."""
    import os
    import sys

    from conftest import ROOT

    (tmp_path / "logapp.py").write_text(APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGIWS_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgiws", "logapp:app", "--port", str(port), "--lifespan", "off",
         "--app-dir", str(tmp_path), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/j?access_token=x&a=b").text == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/error").status_code == 500
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
    access = [json.loads(line) for line in out.splitlines()]
    errors = [json.loads(line) for line in err.splitlines()]
    assert [(entry["status"], entry["bytes"]) for entry in access] == [(200, 2), (500, len("Internal Server Error"))]
    first = access[0]
    assert (first["logger"], first["level"], first["method"], first["path"]) == ("asgiws.access", "INFO", "GET", "/j")
    assert (first["query"], first["bytes"], first["type"]) == ("access_token=[redacted]&a=b", 2, "http")
    assert isinstance(first["duration_ms"], float) and first["message"].startswith(first["client"] + ' - "GET /j?')
    assert any(e["message"].startswith("asgiws running on") for e in errors)
    crash = [e for e in errors if e["message"] == "Exception in ASGI application"]
    assert crash and crash[0]["level"] == "ERROR" and "RuntimeError: boom" in crash[0]["exc_info"]


def test_json_formatter_from_a_log_config(spawn, tmp_path):
    """The documented --log-config recipe (docs/observability.md) writes the same JSON lines."""
    access = tmp_path / "access.jsonl"
    config_file = tmp_path / "logging.json"
    config_file.write_text(json.dumps({
        "version": 1,
        "formatters": {"json": {"()": "asgiws.logging.JsonFormatter"}},
        "handlers": {"access": {"class": "logging.FileHandler", "formatter": "json", "filename": str(access)}},
        "loggers": {"asgiws.access": {"handlers": ["access"], "level": "INFO", "propagate": False}},
    }))  # fmt: skip
    server = Served(spawn, tmp_path, "--log-config", str(config_file))
    with server:
        httpx.get(server.url + "/recipe")
    (entry,) = [json.loads(line) for line in access.read_text().splitlines()]
    assert (entry["path"], entry["status"], entry["bytes"]) == ("/recipe", 200, 2)


# -- the command line: --log-level, --log-config ------------------------------------------------

APP = textwrap.dedent('''
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/error":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
''')


class Served:
    """`python -m asgiws` on a free port, whatever its logging says; stopped with SIGTERM."""

    def __init__(self, spawn, tmp_path, *args, env=None):
        (tmp_path / "logapp.py").write_text(APP)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = spawn(["logapp:app", "--port", str(self.port), "--lifespan", "off",
                           "--app-dir", str(tmp_path), *args], env=env)  # fmt: skip

    def __enter__(self):
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("server did not start:\n" + self.stop_and_output())
                time.sleep(0.05)

    def __exit__(self, *exc_info):
        self.stop_and_output()

    def stop_and_output(self):
        if self.proc.proc.poll() is None:
            self.proc.signal()
        self.proc.wait()
        return self.proc.text


def test_log_level_warning_hides_info_but_keeps_errors(spawn, tmp_path):
    server = Served(spawn, tmp_path, "--log-level", "warning")
    with server:
        assert httpx.get(server.url).text == "ok"
        assert httpx.get(server.url + "/error").status_code == 500
    output = server.proc.text
    assert "asgiws running on" not in output and '"GET / HTTP/1.1" 200' not in output
    assert "ERROR: Exception in ASGI application" in output and "RuntimeError: boom" in output


def test_log_level_debug(spawn, tmp_path):
    server = Served(spawn, tmp_path, "--log-level", "debug", "--timeout-header", "0.3")
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            sock.settimeout(TIMEOUT)
            assert sock.recv(100) == b""  # cut by the header timeout
    assert "DEBUG: 127.0.0.1:" in server.proc.text and "request head not received" in server.proc.text


def dict_config(access_file, access_level=None):
    loggers = {"asgiws.access": {"handlers": ["access"], "propagate": False}}
    if access_level:
        loggers["asgiws.access"]["level"] = access_level
    return {
        "version": 1,
        "formatters": {"custom": {"format": "CUSTOM|%(name)s|%(levelname)s|%(message)s"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "custom", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.FileHandler", "formatter": "custom", "filename": str(access_file)},
        },
        "loggers": loggers,
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def test_log_config_json(spawn, tmp_path):
    access = tmp_path / "access.log"
    config_file = tmp_path / "logging.json"
    config_file.write_text(json.dumps(dict_config(access)))
    server = Served(spawn, tmp_path, "--log-config", str(config_file))
    with server:
        httpx.get(server.url + "/hello")
    # asgiws.error has no level in the file: it gets --log-level (info) and reaches root's handler.
    assert re.search(r"^CUSTOM\|asgiws.error\|INFO\|asgiws running on http://127.0.0.1:\d+", server.proc.text, re.M)
    assert "INFO: " not in server.proc.text  # the default handler is gone
    assert re.fullmatch(r'CUSTOM\|asgiws.access\|INFO\|127.0.0.1:\d+ - "GET /hello HTTP/1.1" 200 2 B \d+\.\dms\n',
                        access.read_text())


def test_log_config_yaml_levels_win_over_log_level(spawn, tmp_path):
    pytest.importorskip("yaml")
    access = tmp_path / "access.log"
    config_file = tmp_path / "logging.yaml"
    config_file.write_text(textwrap.dedent(f"""\
        version: 1
        formatters:
          custom: {{format: "YAML|%(name)s|%(message)s"}}
        handlers:
          stderr: {{class: logging.StreamHandler, formatter: custom, stream: "ext://sys.stderr"}}
          access: {{class: logging.FileHandler, formatter: custom, filename: "{access}"}}
        loggers:
          asgiws.error: {{level: DEBUG, handlers: [stderr], propagate: false}}
          asgiws.access: {{handlers: [access], propagate: false}}
        """))
    server = Served(spawn, tmp_path, "--log-config", str(config_file), "--log-level", "warning")
    with server:
        httpx.get(server.url + "/y")
    assert "YAML|asgiws.error|asgiws running on" in server.proc.text  # the file's DEBUG won
    assert access.read_text() == ""  # no level in the file: --log-level warning applies


def test_no_access_log_wins_over_log_config(spawn, tmp_path):
    access = tmp_path / "access.log"
    config_file = tmp_path / "logging.json"
    config_file.write_text(json.dumps(dict_config(access, access_level="DEBUG")))
    server = Served(spawn, tmp_path, "--log-config", str(config_file), "--no-access-log")
    with server:
        httpx.get(server.url)
    assert access.read_text() == ""


def run_to_exit(spawn, tmp_path, *args, env=None):
    (tmp_path / "logapp.py").write_text(APP)
    proc = spawn(["logapp:app", "--port", "0", "--app-dir", str(tmp_path), *args], env=env)
    code = proc.wait()
    lines = proc.text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.text, proc.text
    return code, lines[0]


def test_yaml_without_pyyaml_is_a_clear_error(spawn, tmp_path):
    blocker = tmp_path / "no_yaml"
    blocker.mkdir()
    (blocker / "yaml.py").write_text('raise ImportError("No module named \'yaml\'")\n')
    config_file = tmp_path / "logging.yml"
    config_file.write_text("version: 1\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    code, line = run_to_exit(spawn, tmp_path, "--log-config", str(config_file), env=env)
    assert code == 2
    assert "log_config" in line and "needs PyYAML (pip install PyYAML)" in line, line


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", "{not json", "is not valid JSON"),
    ("list.json", "[1, 2]", "must hold a mapping"),
    ("logging.txt", "[loggers]\n", "expected a .json, .yaml, .yml or .ini file"),
    ("broken.ini", "[loggers]\n", "KeyError"),  # fileConfig wants [formatters] too
    ("handler.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}', "handler"),
    ("missing.json", None, "cannot read"),
])  # fmt: skip
def test_unusable_log_config_is_one_line(spawn, tmp_path, name, text, message):
    config_file = tmp_path / name
    if text is not None:
        config_file.write_text(text)
    code, line = run_to_exit(spawn, tmp_path, "--log-config", str(config_file))
    assert code == 2
    assert line.startswith("asgiws: error: log_config: ") and message in line, line
