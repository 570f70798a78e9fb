"""The `asgiws` command, run as a real process (`python -m asgiws`), plus its argument parsing."""

from __future__ import annotations

import socket
import subprocess
import sys
import re
import textwrap

import httpx
import pytest

from asgiws import __version__
from asgiws.cli import build_parser, normalise_bool_flags
from asgiws.config import Config, ConfigError, settings_from_env
from conftest import ROOT, TIMEOUT, free_port


def run_cli(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    """Run `python -m asgiws` to completion (for commands that exit by themselves)."""
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASGIWS_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "asgiws", *args], capture_output=True, text=True,
                          env=full_env, timeout=TIMEOUT)  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- informational -------------------------------------------------------------------------------


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"asgiws {__version__} ")
    assert re.search(r", masking kernel: (avx2|sse2|neon|scalar)\)$", result.stdout.strip()), result.stdout


def test_version_names_a_forced_kernel():
    result = run_cli("--version", env={"ASGIWS_MASK_KERNEL": "scalar"})
    assert result.stdout.strip().endswith(", masking kernel: scalar)"), result.stdout


def test_help_is_actionable():
    result = run_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    for expected in ("asgiws asgiws.demo:app", "asgiws myapp:app --port 8080", "--port", "ASGIWS_PORT",
                     "--no-access-log", "--ws-ping-interval", "exit status"):  # fmt: skip
        assert expected in text


def test_every_setting_has_a_flag():
    parser = build_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    from asgiws.config import SETTINGS

    for entry in SETTINGS:
        if entry.name != "app":
            assert entry.flag in flags
            if entry.is_bool:
                assert "--no-" + entry.flag[2:] in flags


# -- errors: one line, exit 1 or 2 ---------------------------------------------------------------


def test_missing_module_is_one_line(tmp_path):
    result = run_cli("no_such_module_xyz:app", "--port", "0", "--app-dir", str(tmp_path))
    assert result.returncode == 3  # STARTUP_FAILURE, as uvicorn and gunicorn
    assert 'Could not import module "no_such_module_xyz"' in one_line_error(result)


def test_missing_attribute_is_one_line(tmp_path):
    (tmp_path / "someapp.py").write_text("x = 1\n")
    result = run_cli("someapp:app", "--port", "0", "--app-dir", str(tmp_path))
    assert result.returncode == 3  # STARTUP_FAILURE, as uvicorn and gunicorn
    assert 'Attribute "app" not found in module "someapp"' in one_line_error(result)


def test_bad_import_string_is_one_line():
    result = run_cli("just_a_module", "--port", "0")
    assert result.returncode == 3  # STARTUP_FAILURE, as uvicorn and gunicorn
    assert "<module>:<attribute>" in one_line_error(result)


def test_error_inside_app_module_shows_its_traceback(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import json\nraise ZeroDivisionError('oops in user code')\n")
    result = run_cli("brokenapp:app", "--port", "0", "--app-dir", str(tmp_path))
    assert result.returncode == 3  # STARTUP_FAILURE, as uvicorn and gunicorn
    assert "ZeroDivisionError: oops in user code" in result.stderr
    assert "brokenapp.py" in result.stderr  # the user's own frame, to fix it


def test_missing_app_argument():
    result = run_cli()
    assert result.returncode == 2
    assert "missing APP" in one_line_error(result)


def test_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("asgiws.demo:app", "--port", str(port), "--lifespan", "off")
    assert result.returncode == 3  # STARTUP_FAILURE, as uvicorn and gunicorn
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and "address already in use" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "abc"], "argument --port: expected an integer, got 'abc'"),
        (["--port", "70000"], "expected a port number 0-65535"),
        (["--lifespan", "maybe"], "one of auto, on, off"),
        (["--timeout-keep-alive", "-1"], "seconds >= 0"),
        (["--ws-per-message-deflate", "perhaps"], None),  # "perhaps" is not a bool: taken as APP → extra arg
        (["--access-log=perhaps"], "expected true or false"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--ws-shutdown-close-code", "1006"], "close code"),
    ],
)
def test_bad_flag_value_is_one_line(args, message):
    result = run_cli("asgiws.demo:app", *args)
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("asgiws: error:")
    if message:
        assert message in line


def test_bad_env_value_is_one_line():
    result = run_cli("asgiws.demo:app", env={"ASGIWS_PORT": "eighty"})
    assert result.returncode == 2
    assert "ASGIWS_PORT: expected" in one_line_error(result)


# -- running -------------------------------------------------------------------------------------


def test_env_var_sets_port(spawn_server):
    port = free_port()
    with spawn_server("asgiws.demo:app", port=False, env={"ASGIWS_PORT": str(port)}) as proc:
        assert proc.port == port
        assert httpx.get(proc.url).status_code == 200


def test_flag_wins_over_env_var(spawn_server):
    with spawn_server("asgiws.demo:app", "--port", "0", env={"ASGIWS_PORT": "1"}) as proc:
        assert proc.port not in (0, 1)


def test_app_from_env_var(spawn_server):
    with spawn_server(env={"ASGIWS_APP": "asgiws.demo:app"}) as proc:
        assert httpx.get(proc.url).status_code == 200


def test_unknown_env_var_warns(spawn_server):
    with spawn_server("asgiws.demo:app", env={"ASGIWS_PROT": "8080"}) as proc:
        pass
    assert "ASGIWS_PROT" in proc.text


def test_demo_app_serves_page(spawn_server):
    with spawn_server("asgiws.demo:app") as proc:
        page = httpx.get(proc.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "new WebSocket(" in page.text and "/ws" in page.text
        assert httpx.get(proc.url + "/ws").status_code == 426
        assert httpx.get(proc.url + "/nope").status_code == 404


@pytest.mark.anyio
async def test_demo_websocket_echo(spawn_server):
    pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built yet")
    from websockets.asyncio.client import connect

    with spawn_server("asgiws.demo:app") as proc:
        async with connect(f"ws://{proc.host}:{proc.port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"


def test_factory(spawn_server, tmp_path):
    (tmp_path / "factoryapp.py").write_text(textwrap.dedent("""
        def create_app():
            async def app(scope, receive, send):
                if scope["type"] == "http":
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    await send({"type": "http.response.body", "body": b"made by factory"})
            return app
    """))  # fmt: skip
    with spawn_server("factoryapp:create_app", "--factory", app_dir=tmp_path) as proc:
        assert httpx.get(proc.url).text == "made by factory"


def test_unix_socket_startup_line(spawn_server, tmp_path):
    path = str(tmp_path / "cli.sock")
    with spawn_server("asgiws.demo:app", "--uds", path) as proc:
        assert proc.uds == path
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            assert client.get("http://localhost/").status_code == 200


def test_inherited_fd(spawn_server):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        with spawn_server("asgiws.demo:app", "--fd", str(fd), port=False, pass_fds=(fd,)) as proc:
            assert proc.port == port
            assert httpx.get(proc.url).status_code == 200


def test_run_from_python_is_the_cli(tmp_path):
    (tmp_path / "runner.py").write_text(textwrap.dedent("""
        import asgiws
        asgiws.run("asgiws.demo:app", port=0, lifespan="off")
    """))  # fmt: skip
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGIWS_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "runner.py")], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while "running on" not in line:
            assert line, "exited before listening"
            line = proc.stderr.readline()
        proc.send_signal(2)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()


# -- parsing, in-process -------------------------------------------------------------------------


def test_bool_flag_spellings():
    parse = lambda *argv: vars(build_parser().parse_args(normalise_bool_flags(list(argv))))  # noqa: E731
    assert parse("app:x", "--ws-per-message-deflate", "false")["ws_per_message_deflate"] is False
    assert parse("--ws-per-message-deflate", "app:x")["ws_per_message_deflate"] is True
    assert parse("--ws-per-message-deflate=no", "app:x")["ws_per_message_deflate"] is False
    assert parse("--no-access-log", "app:x")["access_log"] is False
    assert parse("--factory", "app:x") == {"factory": True, "app": "app:x"}


def test_none_disables_pings():
    args = vars(build_parser().parse_args(["app:x", "--ws-ping-interval", "none", "--ws-ping-timeout", "NONE"]))
    assert args["ws_ping_interval"] is None and args["ws_ping_timeout"] is None
    assert Config(app="x:y", **{k: v for k, v in args.items() if k != "app"}).ws_ping_interval is None


def test_env_parsing():
    assert settings_from_env({"ASGIWS_PORT": "8080", "ASGIWS_ACCESS_LOG": "false", "ASGIWS_LIMIT_CONCURRENCY": "none",
                              "ASGIWS_WS_PING_INTERVAL": "2.5", "OTHER": "x"}) == {  # fmt: skip
        "port": 8080, "access_log": False, "limit_concurrency": None, "ws_ping_interval": 2.5,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="ASGIWS_BACKLOG"):
        settings_from_env({"ASGIWS_BACKLOG": "0"})


def test_config_checks_python_values():
    with pytest.raises(ConfigError, match="port"):
        Config(app="x:y", port=-1)
    with pytest.raises(ConfigError, match="loop"):
        Config(app="x:y", loop="tokio")
    with pytest.raises(ConfigError, match="root_path"):
        Config(app="x:y", root_path="api/")
    assert Config(app="x:y", port="8001").port == 8001  # text, as from an env-like source
