"""Every uvicorn 0.54 flag with `asgiws` in `uvicorn`'s place (docs/settings.md, "Coming from uvicorn").

uvicorn's flag list is the committed snapshot tests/data/uvicorn-0.54.0-flags.json (written by
tests/data/uvicorn_flags.py; uvicorn itself is not needed here). For each flag, one case states
what is observed: the setting reaches `Config` with uvicorn's meaning, or the command exits at
once (status 2) with a one-line error naming the asgiws equivalent. The cases parse in-process;
`--check` (parse, validate, import the app, exit) runs as a real process for a few.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from typing import Any, Dict, List, Tuple, Union

import pytest

from asgiws.cli import _Refuse, build_parser, parse_settings
from asgiws.compat import REFUSED, UVICORN_NAMES, settings_from_uvicorn_env
from asgiws.config import SETTINGS_BY_NAME, Config, ConfigError
from conftest import ROOT, TIMEOUT

SNAPSHOT = json.loads((ROOT / "tests" / "data" / "uvicorn-0.54.0-flags.json").read_text())
FLAGS = {entry["flag"]: entry for entry in SNAPSHOT["flags"]}
DOC = ROOT / "docs" / "settings.md"

# uvicorn's defaults that its click options leave to run time (the snapshot says none).
EFFECTIVE_DEFAULTS = {
    "--workers": "1",  # $WEB_CONCURRENCY or 1
    "--log-level": "info",
    "--forwarded-allow-ips": "127.0.0.1,::1",  # $FORWARDED_ALLOW_IPS or this
    "--version": "—",
}


def uvicorn_default(flag: str) -> str:
    if flag in EFFECTIVE_DEFAULTS:
        return EFFECTIVE_DEFAULTS[flag]
    value = FLAGS[flag]["default"]
    return {None: "none", True: "true", False: "false", "": '""'}.get(value, str(value)) if not isinstance(
        value, (int, float)) or isinstance(value, bool) else str(value)  # fmt: skip


def doc_table() -> Dict[str, List[str]]:
    section = DOC.read_text().split("## Coming from uvicorn", 1)[1]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(--[a-z0-9-]+)`(?: / `--no-[a-z0-9-]+`)? \|(.*)\|$", line)
        if match:
            assert match[1] not in rows, f"{match[1]} twice"
            rows[match[1]] = [cell.strip() for cell in match[2].split(" | ")]
            rows[match[1]].insert(0, line.split(" | ")[0][2:])
    return rows


# -- the table, the snapshot and the code agree ------------------------------------------------


def test_the_table_lists_every_uvicorn_flag_once():
    assert sorted(doc_table()) == sorted(FLAGS)


def test_the_table_matches_the_snapshot_and_the_code():
    actions = {option: action for action in build_parser()._actions for option in action.option_strings}
    for flag, (spelling, status, uv_default, our_default, _notes) in doc_table().items():
        entry = FLAGS[flag]
        expected_spelling = f"`{flag}`" + (f" / `{entry['no_flag']}`" if entry["no_flag"] else "")
        assert spelling == expected_spelling, flag
        assert uv_default == (uvicorn_default(flag) if flag == "--version" else f"`{uvicorn_default(flag)}`"), flag
        assert status in ("same", "mapped", "refused"), flag
        if status == "refused":
            assert flag in REFUSED and isinstance(actions[flag], _Refuse), flag
            assert our_default == "—", flag
            continue
        assert flag not in REFUSED and not isinstance(actions[flag], _Refuse), flag
        if entry["no_flag"]:
            assert entry["no_flag"] in actions, entry["no_flag"]
        if flag == "--version":
            continue
        setting = SETTINGS_BY_NAME[UVICORN_NAMES.get(entry["name"], entry["name"])]
        assert our_default == f"`{setting.default_text}`", flag
        assert setting.flag == flag


def test_every_refused_flag_is_a_uvicorn_flag():
    assert set(REFUSED) <= set(FLAGS)


def test_no_flag_is_read_as_a_prefix():
    parser = build_parser()
    assert parser.allow_abbrev is False
    with pytest.raises(SystemExit):
        parse_settings(["app:x", "--ws-max", "5"], {})
    with pytest.raises(SystemExit):
        parse_settings(["app:x", "--timeout-graceful", "5"], {})


# -- one case per uvicorn flag ------------------------------------------------------------------

Expected = Union[Dict[str, Any], str]  # Config attributes, or the one-line error (exit status 2)

CASES: Dict[str, List[Tuple[List[str], Expected]]] = {
    "--host": [(["--host", "0.0.0.0"], {"host": "0.0.0.0"})],
    "--port": [(["--port", "9001"], {"port": 9001})],
    "--uds": [(["--uds", "/tmp/x.sock"], {"uds": "/tmp/x.sock"})],
    "--fd": [(["--fd", "3"], {"fd": 3})],
    "--reload": [
        (["--reload"], {"reload": True}),
        (["--reload", "--workers", "1"], {"reload": True, "workers": 1}),
        (["--reload", "--workers", "2"], "reload: --reload runs one server process and does not combine with --workers 2"),
    ],
    "--reload-dir": [
        (["--reload", "--reload-dir", str(ROOT / "tests"), "--reload-dir", str(ROOT / "asgiws")],
         {"reload_dir": (str(ROOT / "tests"), str(ROOT / "asgiws"))}),
        (["--reload", "--reload-dir", "no/such/dir"], "reload_dir: 'no/such/dir' is not a directory"),
    ],
    "--reload-include": [(["--reload-include", "*.html", "--reload-include", "*.j2"], {"reload_include": ("*.html", "*.j2")})],
    "--reload-exclude": [(["--reload-exclude", "*.tmp"], {"reload_exclude": ("*.tmp",)})],
    "--reload-delay": [(["--reload-delay", "1"], {"reload_delay": 1.0})],
    "--workers": [(["--workers", "4"], {"workers": 4})],
    "--loop": [
        (["--loop", "asyncio"], {"loop": "asyncio"}),
        (["--loop", "uvloop"], {"loop": "uvloop"}),
        (["--loop", "none"], {"loop": "none"}),
        (["--loop", "asyncio:new_event_loop"], {"loop": "asyncio:new_event_loop"}),
        (["--loop", "zuvloop"], "'zuvloop' is not available: asgiws does not support zuvloop"),
    ],
    "--http": [
        (["--http", "httptools"], {"http": "httptools"}),
        (["--http", "auto"], {"http": "auto"}),
        (["--http", "h11"], "'h11' is not available: asgiws parses HTTP/1.1 with httptools only"),
        (["--http", "zttp"], "'zttp' is not available"),
    ],
    "--http2": [(["--http2"], "--http2: asgiws serves HTTP/1.1 only")],
    "--ws": [
        (["--ws", "none"], {"ws": "none"}),
        (["--ws", "auto"], {"ws": "auto"}),
        (["--ws", "websockets"], {"ws": "websockets"}),
        (["--ws", "websockets-sansio"], {"ws": "websockets-sansio"}),
        (["--ws", "wsproto"], {"ws": "wsproto"}),
    ],
    "--ws-max-size": [(["--ws-max-size", "1024"], {"ws_max_size": 1024})],
    "--ws-max-queue": [
        (["--ws-max-queue", "32"], {"ws_max_queue": 32, "ws_read_high_water": 1048576}),
        (["--ws-max-queue", "4"], {"ws_read_high_water": 4 * 32768}),
        (["--ws-max-queue", "4", "--ws-read-high-water", "5000"], {"ws_read_high_water": 5000}),
    ],
    "--ws-ping-interval": [(["--ws-ping-interval", "2.5"], {"ws_ping_interval": 2.5})],
    "--ws-ping-timeout": [(["--ws-ping-timeout", "3"], {"ws_ping_timeout": 3.0})],
    "--ws-per-message-deflate": [
        (["--ws-per-message-deflate", "false"], {"ws_per_message_deflate": False}),
        (["--ws-per-message-deflate", "true"], {"ws_per_message_deflate": True}),
    ],
    "--lifespan": [(["--lifespan", "off"], {"lifespan": "off"})],
    "--interface": [
        (["--interface", "asgi3"], {"interface": "asgi3"}),
        (["--interface", "asgi2"], {"interface": "asgi2"}),
        (["--interface", "wsgi"], "'wsgi' is not available: asgiws serves ASGI apps only"),
    ],
    "--env-file": [(["--env-file", ".env"], {"env_file": ".env"})],
    "--log-config": [(["--log-config", "logging.ini"], {"log_config": "logging.ini"})],
    "--log-level": [(["--log-level", "trace"], {"log_level": "trace"}), (["--log-level", "debug"], {"log_level": "debug"})],
    "--access-log": [(["--no-access-log"], {"access_log": False}), (["--access-log"], {"access_log": True})],
    "--use-colors": [(["--use-colors"], {"use_colors": True}), (["--no-use-colors"], {"use_colors": False})],
    "--proxy-headers": [(["--no-proxy-headers"], {"proxy_headers": False})],
    "--server-header": [(["--no-server-header"], {"server_header": False}), (["--server-header"], {"server_header": True})],
    "--date-header": [(["--no-date-header"], {"date_header": False}), (["--date-header"], {"date_header": True})],
    "--forwarded-allow-ips": [(["--forwarded-allow-ips", "10.0.0.1,::1"], {"forwarded_allow_ips": "10.0.0.1,::1"})],
    "--root-path": [(["--root-path", "/api"], {"root_path": "/api"})],
    "--limit-concurrency": [(["--limit-concurrency", "10"], {"limit_concurrency": 10})],
    "--backlog": [(["--backlog", "100"], {"backlog": 100})],
    "--limit-max-requests": [(["--limit-max-requests", "1000"], {"limit_max_requests": 1000})],
    "--limit-max-requests-jitter": [(["--limit-max-requests-jitter", "50"], {"limit_max_requests_jitter": 50})],
    "--timeout-keep-alive": [(["--timeout-keep-alive", "7"], {"timeout_keep_alive": 7.0})],
    "--timeout-graceful-shutdown": [(["--timeout-graceful-shutdown", "12"], {"timeout_graceful_shutdown": 12.0})],
    "--timeout-worker-healthcheck": [(["--timeout-worker-healthcheck", "2"], {"timeout_worker_healthcheck": 2.0})],
    "--ssl-keyfile": [(["--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"], {"ssl_keyfile": "k.pem"})],
    "--ssl-certfile": [(["--ssl-certfile", "c.pem"], {"ssl_certfile": "c.pem"})],
    "--ssl-keyfile-password": [(["--ssl-certfile", "c.pem", "--ssl-keyfile-password", "pw"], {"ssl_keyfile_password": "pw"})],
    "--ssl-version": [
        (["--ssl-version", "17"], {"ssl_version": 17}),
        (["--ssl-version", "5"], {"ssl_version": 5}),
        (["--ssl-version", "3"], "3 is not available: TLS 1.0 is insecure"),
    ],
    "--ssl-cert-reqs": [(["--ssl-certfile", "c.pem", "--ssl-cert-reqs", "1"], {"ssl_cert_reqs": 1})],
    "--ssl-ca-certs": [(["--ssl-certfile", "c.pem", "--ssl-ca-certs", "ca.pem"], {"ssl_ca_certs": "ca.pem"})],
    "--ssl-ciphers": [(["--ssl-certfile", "c.pem", "--ssl-ciphers", "ECDHE+AESGCM"], {"ssl_ciphers": "ECDHE+AESGCM"})],
    "--header": [
        (["--header", "X-Frame-Options: DENY", "--header", "x-list:a,b"], {"header": ("X-Frame-Options: DENY", "x-list:a,b")}),
        (["--header", "no colon"], "expected NAME:VALUE"),
    ],
    "--version": [],  # exits 0 printing the version: test_version below
    "--app-dir": [(["--app-dir", "src"], {"app_dir": "src"})],
    "--h11-max-incomplete-event-size": [(["--h11-max-incomplete-event-size", "16384"], "--limit-max-head")],
    "--reset-contextvars": [(["--reset-contextvars"], {"reset_contextvars": True})],
    "--factory": [(["--factory"], {"factory": True})],
}


def test_every_uvicorn_flag_has_a_case():
    assert sorted(CASES) == sorted(FLAGS)


def observe(argv: List[str], capsys: Any) -> Expected:
    """What `asgiws app:x ARGV` does up to the server start: the Config, or the one-line error."""
    try:
        settings, _, _ = parse_settings(["app:x", *argv], {})
        return Config(**settings)  # type: ignore[return-value]
    except ConfigError as exc:  # the CLI prints it as one line, exit status 2 (asgiws.cli.main)
        return f"asgiws: error: {exc} (see asgiws --help)"
    except SystemExit as exc:
        assert exc.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("asgiws: error: ")
        return lines[0]


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_each_uvicorn_flag(flag, capsys):
    for argv, expected in CASES[flag]:
        observed = observe(argv, capsys)
        if isinstance(expected, str):
            assert isinstance(observed, str), f"{argv} was accepted"
            assert expected in observed, (argv, observed)
        else:
            assert isinstance(observed, Config), f"{argv}: {observed}"
            assert {name: getattr(observed, name) for name in expected} == expected, argv


def test_version():
    result = run_asgiws("--version")
    assert result.returncode == 0 and result.stdout.startswith("asgiws ")


# -- uvicorn's environment variables ------------------------------------------------------------


def test_uvicorn_environment_variables():
    settings, warnings = settings_from_uvicorn_env({
        "UVICORN_PORT": "9002", "UVICORN_HEADERS": "x-a:1 x-b:2", "UVICORN_HTTP2": "true", "UVICORN_NOPE": "1",
        "WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.0.0.0/8", "UVICORN_FORWARDED_ALLOW_IPS": "*",
        "UVICORN_RELOAD": "true", "UVICORN_RELOAD_DIRS": "src lib", "UVICORN_RELOAD_INCLUDES": "*.html",
    })  # fmt: skip
    assert settings == {"port": 9002, "header": ("x-a:1", "x-b:2"), "workers": 3, "forwarded_allow_ips": "*",
                        "reload": True, "reload_dir": ("src", "lib"), "reload_include": ("*.html",)}  # fmt: skip
    assert [w.split(":")[0] for w in warnings] == ["ignoring UVICORN_HTTP2",
                                                   "ignoring UVICORN_NOPE, which is not a uvicorn setting asgiws knows"]  # fmt: skip


def test_precedence_flag_then_asgiws_then_uvicorn_then_plain():
    environ = {"WEB_CONCURRENCY": "3", "UVICORN_WORKERS": "4", "ASGIWS_WORKERS": "5"}
    assert parse_settings(["app:x"], {"WEB_CONCURRENCY": "3"})[0]["workers"] == 3
    assert parse_settings(["app:x"], {k: environ[k] for k in ("WEB_CONCURRENCY", "UVICORN_WORKERS")})[0]["workers"] == 4
    assert parse_settings(["app:x"], environ)[0]["workers"] == 5
    assert parse_settings(["app:x", "--workers", "6"], environ)[0]["workers"] == 6
    assert parse_settings(["app:x"], {"FORWARDED_ALLOW_IPS": "*"})[0]["forwarded_allow_ips"] == "*"


def test_a_refused_value_in_a_uvicorn_variable_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_settings(["app:x"], {"UVICORN_HTTP": "h11"})
    assert exc.value.code == 2
    assert "UVICORN_HTTP: 'h11' is not available" in capsys.readouterr().err


# -- as a real process: --check, the refusals, exit status 3 ------------------------------------


def run_asgiws(*args: str, env: Dict[str, str] = None, cwd: Any = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ASGIWS_", "UVICORN_"))}
    full_env.pop("WEB_CONCURRENCY", None)
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "asgiws", *args], capture_output=True, text=True,
                          env=full_env, timeout=TIMEOUT, cwd=cwd)  # fmt: skip


def test_check_imports_the_app_and_prints_what_differs():
    result = run_asgiws("asgiws.demo:app", "--check", "--port", "9003", "--ws", "wsproto",
                        env={"UVICORN_LOG_LEVEL": "trace"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["asgiws: check passed: asgiws.demo:app loads", "port = 9003",
                                          "ws = wsproto", "log_level = trace"]  # fmt: skip
    assert "--ws wsproto: asgiws has its own WebSocket implementation" in result.stderr


def test_a_refused_flag_exits_at_once_with_one_line():
    result = run_asgiws("asgiws.demo:app", "--http2", "--port", "9004")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "asgiws: error: --http2: " + REFUSED["--http2"][1] + " (see asgiws --help)"]


def test_check_fails_with_status_3_when_the_app_does_not_import(tmp_path):
    result = run_asgiws("nosuchmodule:app", "--check", cwd=tmp_path)
    assert result.returncode == 3
    assert 'Could not import module "nosuchmodule"' in result.stderr


def test_factory_detected_without_the_flag(tmp_path):
    (tmp_path / "factoryapp.py").write_text(textwrap.dedent("""
        def create_app():
            async def app(scope, receive, send):
                pass
            return app
    """))  # fmt: skip
    result = run_asgiws("factoryapp:create_app", "--check", "--app-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ASGI app factory detected. Using it, but please consider setting the --factory flag explicitly." in result.stderr


def test_env_file(tmp_path):
    pytest.importorskip("dotenv")
    (tmp_path / ".env").write_text("GREETING=hello from .env\n")
    (tmp_path / "envapp.py").write_text(textwrap.dedent("""
        import os
        assert os.environ["GREETING"] == "hello from .env", os.environ.get("GREETING")
        async def app(scope, receive, send):
            pass
    """))  # fmt: skip
    result = run_asgiws("envapp:app", "--check", "--env-file", str(tmp_path / ".env"), "--app-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr


def test_env_file_without_python_dotenv_says_how_to_install_it(tmp_path, monkeypatch):
    from asgiws.config import ConfigError, load_env_file

    (tmp_path / ".env").write_text("A=1\n")
    monkeypatch.setitem(sys.modules, "dotenv", None)  # import dotenv → ImportError
    with pytest.raises(ConfigError, match=r"needs python-dotenv: pip install 'asgiws\[dotenv\]'"):
        load_env_file(str(tmp_path / ".env"))


def test_log_config_ini(tmp_path):
    (tmp_path / "logging.ini").write_text(textwrap.dedent("""
        [loggers]
        keys=root
        [handlers]
        keys=out
        [formatters]
        keys=plain
        [logger_root]
        level=INFO
        handlers=out
        [handler_out]
        class=StreamHandler
        formatter=plain
        args=(sys.stdout,)
        [formatter_plain]
        format=INI %(levelname)s %(message)s
    """))  # fmt: skip
    result = run_asgiws("asgiws.demo:app", "--check", "--ws", "wsproto", "--log-config", str(tmp_path / "logging.ini"))
    assert result.returncode == 0, result.stderr
    assert "INI WARNING --ws wsproto" in result.stdout


def test_loop_import_path_must_make_a_loop():
    result = run_asgiws("asgiws.demo:app", "--check", "--loop", "os:getcwd")
    assert result.returncode == 3
    assert "loop: os:getcwd returned str, not an event loop" in result.stderr
    assert run_asgiws("asgiws.demo:app", "--check", "--loop", "asyncio:new_event_loop").returncode == 0


# -- what the accepted flags do, on a real server -----------------------------------------------

HANDSHAKE = (b"GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip


async def header_app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-scope-type", b"http")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.close"})  # before accept: HTTP 403
        else:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})


def response_head(port: int, request: bytes) -> Dict[str, List[str]]:
    """The status code and header fields of the first response to `request` (raw bytes)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields: Dict[str, List[str]] = {":status": [lines[0].split()[1]]}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.lower(), []).append(value.strip())
    return fields


REQUESTS = {
    "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
    "101": (HANDSHAKE % b"ws", "101"),
    "refusal": (HANDSHAKE % b"deny", "403"),
    "server error response": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400"),
}


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_header_flags_reach_every_response(run_server, kind):
    request, status = REQUESTS[kind]
    with run_server(header_app, header=("X-Frame-Options: DENY", "x-list: a, b"), lifespan="off") as server:
        head = response_head(server.port, request)
        assert head[":status"] == [status]
        assert head["x-frame-options"] == ["DENY"] and head["x-list"] == ["a, b"]
        assert head["server"] == ["asgiws"] and len(head["date"]) == 1
    with run_server(header_app, server_header=False, date_header=False, lifespan="off") as server:
        head = response_head(server.port, request)
        assert head[":status"] == [status]
        assert "server" not in head and "date" not in head
    with run_server(header_app, server_header=False, header=("Server: edge",), lifespan="off") as server:
        assert response_head(server.port, request)["server"] == ["edge"]


def test_ws_none_serves_an_upgrade_as_plain_http(run_server):
    with run_server(header_app, ws="none", lifespan="off") as server:
        head = response_head(server.port, HANDSHAKE % b"ws")
    assert head[":status"] == ["200"] and head["x-scope-type"] == ["http"]


def test_reset_contextvars(tmp_path):
    """A context variable set where the server runs reaches the app's tasks, unless
    --reset-contextvars gives each an empty context."""
    import asyncio
    import contextvars
    import threading

    import httpx

    from asgiws.server import Server, run_event_loop

    var: contextvars.ContextVar = contextvars.ContextVar("var")
    seen: List[str] = []

    async def app(scope, receive, send):
        seen.append(var.get("unset"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for reset in (False, True):
        server = Server(Config(app=app, port=0, lifespan="off", reset_contextvars=reset))
        started = threading.Event()

        async def main() -> None:
            var.set("set around the server")
            await server.startup()
            started.set()
            await server.main_loop()
            await server.shutdown()

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=run_event_loop, args=(loop, main()), daemon=True)
        thread.start()
        assert started.wait(TIMEOUT)
        httpx.get(f"http://127.0.0.1:{server.addresses[0][1]}/", timeout=TIMEOUT)
        loop.call_soon_threadsafe(server.handle_exit)
        thread.join(TIMEOUT)
    assert seen == ["set around the server", "unset"]


def test_limit_max_requests_jitter_is_drawn_per_server():
    from asgiws.server import Server

    limits = {Server(Config(app="x:y", limit_max_requests=10, limit_max_requests_jitter=5)).server_state.request_limit
              for _ in range(200)}  # fmt: skip
    assert limits == set(range(10, 16))


def test_use_colors_colours_the_level_name(capsys):
    import logging

    from asgiws.logging import configure_logging

    try:
        configure_logging(use_colors=True)
        logging.getLogger("asgiws.error").warning("coloured")
        assert "\x1b[33mWARNING\x1b[0m: coloured" in capsys.readouterr().err
        configure_logging(use_colors=False)
        logging.getLogger("asgiws.error").warning("plain")
        assert "WARNING: plain" in capsys.readouterr().err
    finally:
        configure_logging()
