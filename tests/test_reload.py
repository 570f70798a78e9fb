"""`--reload` (asgiws.supervisors.reload): a real `asgiws --reload` process on an app in a
temporary directory, edited by the test; real sockets and a real WebSocket client.

What is asserted: an edit is served within RELOAD_BOUND seconds (the time each run took is
printed: `pytest -s` shows it); no connection attempt is refused while the server restarts; an
open WebSocket gets Close 1012 on a reload even when --ws-shutdown-close-code says otherwise; an
edit that does not import leaves the old code serving until the next change; --workers N is
refused; and the polling fallback reloads as well (run with watchfiles hidden).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asgiws.config import Config, ConfigError
from asgiws.supervisors.watch import FileFilter
from conftest import ROOT, TIMEOUT, free_port, http_get

RELOAD_BOUND = 10.0  # seconds from an edit to the first response with the new code

APP = '''
VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = VERSION.encode()
        await send({{"type": "http.response.start", "status": 200,
                     "headers": [(b"content-length", str(len(body)).encode())]}})
        await send({{"type": "http.response.body", "body": body}})
    elif scope["type"] == "websocket":
        await receive()
        await send({{"type": "websocket.accept"}})
        await send({{"type": "websocket.send", "text": VERSION}})
        while (await receive())["type"] != "websocket.disconnect":
            pass
'''


def write_app(directory: Path, version: str) -> None:
    # Written to a temporary name and renamed over app.py, as editors save: the watcher never
    # sees a half-written file.
    partial = directory / ".app.py.partial"
    partial.write_text(textwrap.dedent(APP.format(version=version)))
    partial.replace(directory / "app.py")


def get(port: int) -> bytes:
    return http_get("127.0.0.1", port)


def wait_for_body(port: int, expected: bytes, bound: float = RELOAD_BOUND) -> float:
    """Poll GET / until it answers `expected`; the seconds it took (at most `bound`)."""
    started = time.monotonic()
    while True:
        body = get(port)
        took = time.monotonic() - started
        if body == expected:
            return took
        assert took < bound, f"still {body!r} after {took:.1f}s"
        time.sleep(0.02)


class ConnectLoop:
    """A thread that opens a connection and makes one request, again and again, recording
    every failure: a refused connection above all."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0
        self.failures: List[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 6 * TIMEOUT  # bounded even if the test body fails
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                get(self.port)
                self.answered += 1
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                self.failures.append(exc)

    def __enter__(self) -> "ConnectLoop":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(TIMEOUT)


def reloading(spawn_server, directory: Path, *args: str, env: Optional[dict] = None):
    return spawn_server("app:app", "--reload", "--reload-dir", str(directory), "--lifespan", "off", *args,
                        app_dir=directory, env=env)  # fmt: skip


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    write_app(directory, "one")
    return directory


def test_an_edit_is_served_no_connection_is_refused_and_websockets_get_1012(spawn_server, app_dir):
    # 1001 for a plain shutdown, so that the 1012 seen on the reload is the restart's own.
    with reloading(spawn_server, app_dir, "--ws-shutdown-close-code", "1001") as proc:
        assert "using watchfiles" in proc.text
        assert get(proc.port) == b"one"
        with connect(f"ws://127.0.0.1:{proc.port}/", open_timeout=TIMEOUT) as websocket:
            assert websocket.recv(timeout=TIMEOUT) == "one"
            with ConnectLoop(proc.port) as clients:
                while clients.answered < 20 and not clients.failures:  # the loop is running
                    time.sleep(0.01)
                write_app(app_dir, "two (edited)")
                took = wait_for_body(proc.port, b"two (edited)")
                print(f"\nreload: the edit was served after {took:.2f}s")
                proc.wait_for_line(r"Server process \[\d+\] stopped \(exit status 0\)")
                answered = clients.answered
                while clients.answered < answered + 20 and not clients.failures:  # and still is
                    time.sleep(0.01)
            refused = [exc for exc in clients.failures if isinstance(exc, ConnectionRefusedError)]
            assert not refused, f"{len(refused)} connection attempts refused during the restart"
            assert not clients.failures, f"{len(clients.failures)} requests failed: {clients.failures[:3]}"
            assert clients.answered > 40
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=TIMEOUT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server restarting")
        proc.wait_for_line(r"Detected changes in '\S*app.py'; restarting")
        proc.wait_for_line(r"Reloaded in \d+\.\d\ds: server process \[\d+\] serves the new code")
        # A plain stop uses --ws-shutdown-close-code, and ends every process with status 0.
        with connect(f"ws://127.0.0.1:{proc.port}/", open_timeout=TIMEOUT) as websocket:
            assert websocket.recv(timeout=TIMEOUT) == "two (edited)"
            proc.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert proc.wait() == 0
        assert "Stopping reloader process" in proc.text
        with pytest.raises(ConnectionRefusedError):  # the reloader closed the socket on its way out
            socket.create_connection(("127.0.0.1", proc.port), timeout=TIMEOUT)


def test_an_edit_that_does_not_import_keeps_the_old_code_serving(spawn_server, app_dir):
    with reloading(spawn_server, app_dir) as proc:
        assert get(proc.port) == b"one"
        (app_dir / "app.py").write_text("VERSION = 'two'\ndef broken(:\n")
        proc.wait_for_line(r"Server process \[\d+\] failed to start \(exit status 1\); server process \[\d+\] "
                           r"goes on serving the previous code; waiting for the next change")  # fmt: skip
        assert "SyntaxError" in proc.text, proc.text
        assert get(proc.port) == b"one"
        write_app(app_dir, "three")
        wait_for_body(proc.port, b"three")
        assert proc.proc.poll() is None


def test_a_server_that_cannot_start_waits_for_the_fix(spawn, app_dir):
    """No process serves at first (the app does not import): a connection waits in the backlog,
    is not refused, and is answered by the fixed code."""
    (app_dir / "app.py").write_text("def broken(:\n")
    port = free_port()
    proc = spawn(["app:app", "--reload", "--reload-dir", str(app_dir), "--app-dir", str(app_dir),
                  "--lifespan", "off", "--port", str(port)])  # fmt: skip
    try:
        proc.wait_for_line(r"failed to start \(exit status 1\); waiting for the next change")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as waiting:
            waiting.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            write_app(app_dir, "fixed")
            proc.wait_for_line(rf"asgiws running on http://127\.0\.0\.1:{port}")
            data = b""
            while True:
                chunk = waiting.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"fixed"), data
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_two_edits_in_one_second_that_keep_the_size_are_both_served(spawn_server, app_dir):
    """A .pyc records its source's modification time in whole seconds and its size: had the
    server process that imported the first edit written one, the second edit (same second, same
    size) would be loaded from it, stale. Server processes run with -B; the mtimes are set by
    hand so that the test does not depend on the clock."""
    second = int(time.time()) - 10
    # Bytecode allowed in the environment (an empty value is unset), so that -B is what is tested.
    with reloading(spawn_server, app_dir, env={"PYTHONDONTWRITEBYTECODE": ""}) as proc:
        for version, offset in (("v2", 0.1), ("v3", 0.6)):
            write_app(app_dir, version)
            os.utime(app_dir / "app.py", (second + offset, second + offset))
            wait_for_body(proc.port, version.encode())
    assert not list(app_dir.glob("__pycache__/*"))


def server_pid(proc) -> int:
    """The pid of the server process serving now (the last one that started)."""
    proc.wait_for_line(r"Started server process \[(\d+)\]")
    return int(re.findall(r"Started server process \[(\d+)\]", proc.text)[-1])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its reaper counts as gone
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_ctrl_c_stops_the_reloader_and_its_server_gracefully(spawn_server, app_dir):
    with reloading(spawn_server, app_dir) as proc:
        child = server_pid(proc)
        assert get(proc.port) == b"one"
        # Ctrl+C reaches the whole process group: the server process gets SIGINT too.
        for pid in (proc.proc.pid, child):
            os.kill(pid, signal.SIGINT)
        assert proc.wait() == 0
    assert f"Server process [{child}] stopped (exit status 0)" in proc.text
    assert "forcing" not in proc.text and "Traceback" not in proc.text


def test_the_server_process_stops_when_the_reloader_is_killed(spawn_server, app_dir):
    with reloading(spawn_server, app_dir) as proc:
        child = server_pid(proc)
        proc.proc.kill()
        proc.wait()
        deadline = time.monotonic() + TIMEOUT
        while not gone(child):
            assert time.monotonic() < deadline, "the server process outlived its reloader"
            time.sleep(0.05)


def test_reload_needs_an_import_string():
    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    with pytest.raises(ConfigError, match=r"reload: needs the app as an import string"):
        Config(app=app, reload=True)


def test_polling_fallback_without_watchfiles(spawn_server, app_dir, tmp_path):
    # watchfiles hidden: a package of that name on PYTHONPATH that fails to import, as a missing
    # one does. The reloader says so once, names the extra, and polls.
    hidden = tmp_path / "hidden"
    (hidden / "watchfiles").mkdir(parents=True)
    (hidden / "watchfiles" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)])}
    with reloading(spawn_server, app_dir, "--reload-delay", "0.1", env=env) as proc:
        warnings = [line for line in proc.text.splitlines() if "watchfiles is not installed" in line]
        assert len(warnings) == 1 and "pip install 'asgiws[reload]'" in warnings[0]
        assert "using polling" in proc.text
        assert get(proc.port) == b"one"
        (app_dir / "notes.txt").write_text("not a .py file: no restart")
        write_app(app_dir, "two")
        took = wait_for_body(proc.port, b"two")
        print(f"\nreload (polling): the edit was served after {took:.2f}s")
        proc.wait_for_line(r"Detected changes in '\S*app.py'; restarting")
        assert "notes.txt" not in proc.text


@pytest.mark.parametrize("flags, message", [
    (["--workers", "2"], "reload: --reload runs one server process and does not combine with --workers 2; "
                         "use one or the other"),
    (["--metrics-port", "0"], "metrics_port: --metrics-port is not served under --reload (a development mode); "
                              "drop one of them"),
], ids=["workers", "metrics"])  # fmt: skip
def test_reload_refuses_what_it_cannot_combine_with(flags, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASGIWS_", "UVICORN_"))}
    env.pop("WEB_CONCURRENCY", None)
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "asgiws", "asgiws.demo:app", "--reload", *flags],
                            capture_output=True, text=True, env=env, timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"asgiws: error: {message} (see asgiws --help)"]


# -- which files count (FileFilter: uvicorn's rules) --------------------------------------------


def test_file_filter_defaults(tmp_path):
    counts = FileFilter()
    assert counts(tmp_path / "app.py")
    assert counts(tmp_path / "pkg" / "views.py")
    for path in ("notes.txt", ".hidden.py", "app.pyc", ".app.py.swp", "~app.py"):
        assert not counts(tmp_path / path), path
    # A directory whose name matches an exclude pattern (.*) is not watched at all.
    assert counts.prunes(tmp_path / ".venv", tmp_path) and counts.prunes(tmp_path / ".git", tmp_path)
    assert not counts.counts(tmp_path / ".venv" / "lib" / "x.py", tmp_path)
    assert counts.counts(tmp_path / "src" / "x.py", tmp_path)
    assert not counts.prunes(tmp_path, tmp_path)  # the watched directory itself, even if hidden


def test_file_filter_include_and_exclude(tmp_path):
    counts = FileFilter(includes=["*.html", ".env"], excludes=["test_*.py"])
    assert counts(tmp_path / "templates" / "index.html")
    assert counts(tmp_path / "app.py") and not counts(tmp_path / "test_app.py")
    assert counts(tmp_path / ".env")  # named outright: wins over the default .* exclude
    # An exclude that names a default include takes it out; an include, a default exclude.
    assert not FileFilter(excludes=["*.py"])(tmp_path / "app.py")
    assert FileFilter(includes=[".*"])(tmp_path / ".config.py")
    # An exclude that is a directory excludes everything under it.
    (tmp_path / "generated").mkdir()
    counts = FileFilter(excludes=[str(tmp_path / "generated")])
    assert not counts(tmp_path / "generated" / "models.py")
    assert counts.prunes((tmp_path / "generated").resolve(), tmp_path)
    assert counts(tmp_path / "app.py")
