"""Fixtures that run a real asgiws server for tests to talk to over real sockets.

In-process (fast, the app can share objects with the test):

    def test_x(run_server):
        with run_server(app, timeout_keep_alive=1) as server:   # any Config setting
            httpx.get(server.url + "/path")                      # server.host, .port, .ws_url

    The server runs on its own event loop in a thread, on 127.0.0.1 port 0; leaving the block
    shuts it down gracefully (Server.shutdown) and re-raises anything the server thread raised.
    Async tests use `@pytest.mark.anyio` and talk to it from their own loop.

As a subprocess (for the CLI, signals, exit codes):

    def test_y(spawn_server):
        with spawn_server("myapp:app", "--lifespan", "on", app_dir=tmp_path) as proc:
            httpx.get(proc.url)        # proc.port was read from the startup line
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package without `pip install -e` (the C codec may be unbuilt)

from asgiws.asgi.bridge import fallback_warning  # noqa: E402
from asgiws.config import IMPORT_TIME_ENV, Config  # noqa: E402
from asgiws.server import Server  # noqa: E402

TIMEOUT = 10.0  # upper bound on any single wait in the tests; a hang fails rather than blocks
STARTUP_LINE = re.compile(r"asgiws running on (?:https?://\[?([^\]\s]+?)\]?:(\d+)|unix socket (\S+))")


def pytest_report_header() -> str:
    # ASGIWS_NO_EXTENSIONS=1 runs the tests (and the servers they spawn) on the pure-Python
    # WebSocket codec and bridge.
    return "asgiws WebSocket data path: " + (fallback_warning() or "compiled extensions")


def warnings_logged(caplog: Any, asgiws_only: bool = True) -> List[logging.LogRecord]:
    """The records at WARNING or above (asgiws' own by default), but the startup announcement
    of the pure-Python fallback, which every server has in a run under ASGIWS_NO_EXTENSIONS=1."""
    announcement = fallback_warning()
    return [r for r in caplog.records if r.levelno >= logging.WARNING
            and (r.name.startswith("asgiws") or not asgiws_only) and r.getMessage() != announcement]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RunningServer:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.config = server.config
        self.loop = loop
        address = server.addresses[0]
        if isinstance(address, tuple):
            self.host, self.port = address
            self.uds: Optional[str] = None
        else:
            self.host, self.port, self.uds = None, None, address

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

    def stop(self) -> None:
        """Begin a graceful shutdown (like SIGTERM) without waiting for it."""
        self.loop.call_soon_threadsafe(self.server.handle_exit)

    def call(self, fn: Any, *args: Any) -> None:
        """Run fn(*args) on the server's loop thread."""
        self.loop.call_soon_threadsafe(fn, *args)


@contextlib.contextmanager
def run_server(app: Any, **settings: Any) -> Iterator[RunningServer]:
    """Run `app` on 127.0.0.1, port 0 (unless `uds`/`fd`/`host`/`port` say otherwise)."""
    settings.setdefault("port", 0)
    settings.setdefault("lifespan", "auto")
    settings.setdefault("loop", os.environ.get("TEST_EVENT_LOOP", "auto"))  # TEST_EVENT_LOOP=asyncio: no uvloop
    config = Config(app=app, **settings)
    server = Server(config)
    loop = config.new_event_loop()
    started = threading.Event()
    errors: List[BaseException] = []

    async def main() -> None:
        try:
            await server.startup()
        except BaseException as exc:
            errors.append(exc)
            return
        finally:
            started.set()
        await server.main_loop()
        await server.shutdown()

    def thread_main() -> None:
        from asgiws.server import run_event_loop

        try:
            run_event_loop(loop, main())
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=thread_main, name="asgiws-test-server", daemon=True)
    thread.start()
    assert started.wait(TIMEOUT), "server did not start"
    if errors:
        thread.join(TIMEOUT)
        raise errors[0]
    running = RunningServer(server, loop)
    try:
        yield running
    finally:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have just closed
                running.stop()
        thread.join(TIMEOUT + config.timeout_graceful_shutdown)
        assert not thread.is_alive(), "server did not shut down"
        if errors:
            raise errors[0]


@pytest.fixture(name="run_server")
def run_server_fixture() -> Any:
    return run_server


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, lines: "queue.Queue[Optional[str]]") -> None:
        self.proc = proc
        self._lines = lines
        self.output: List[str] = []  # stderr lines read so far
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.uds: Optional[str] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def wait_for_line(self, pattern: str, timeout: float = TIMEOUT) -> "re.Match[str]":
        """Read stderr until a line matches `pattern` (regex); fail on timeout or exit."""
        regex = re.compile(pattern)
        for line in self.output:
            match = regex.search(line)
            if match:
                return match
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; output so far:\n" + "".join(self.output))
            if line is None:
                raise AssertionError(f"process ended before {pattern!r}; output:\n" + "".join(self.output))
            self.output.append(line)
            match = regex.search(line)
            if match:
                return match

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for exit; collect the rest of stderr; return the exit status."""
        code = self.proc.wait(timeout)
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)


def spawn(args: List[str], env: Optional[dict] = None, cwd: Any = None, pass_fds: Any = ()) -> ServerProcess:
    """Start `python -m asgiws *args` with stderr captured line by line."""
    # Settings come only from the test's arguments; ASGIWS_NO_EXTENSIONS and the like pass on.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASGIWS_") or k in IMPORT_TIME_ENV}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgiws", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd, pass_fds=pass_fds,
    )  # fmt: skip
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    return ServerProcess(proc, lines)


@contextlib.contextmanager
def spawn_server(
    *args: str, env: Optional[dict] = None, app_dir: Any = None, port: bool = True, pass_fds: Any = ()
) -> Iterator[ServerProcess]:
    """A subprocess server, started and listening; SIGTERM and reaped on exit."""
    argv = list(args)
    if port and "--port" not in argv and "--uds" not in argv:
        argv += ["--port", "0"]
    if app_dir is not None:
        argv += ["--app-dir", str(app_dir)]
    server = spawn(argv, env=env, pass_fds=pass_fds)
    try:
        match = server.wait_for_line(STARTUP_LINE.pattern)
        if match.group(3):
            server.uds = match.group(3)
        else:
            server.host, server.port = match.group(1), int(match.group(2))
        yield server
    finally:
        if server.proc.poll() is None:
            server.signal(signal.SIGTERM)
            try:
                server.wait()
            except subprocess.TimeoutExpired:  # pragma: no cover
                server.proc.kill()
                server.proc.wait()


@pytest.fixture(name="spawn_server")
def spawn_server_fixture() -> Any:
    return spawn_server


@pytest.fixture(name="spawn")
def spawn_fixture() -> Any:
    return spawn


def http_get(host: str, port: int, path: str = "/") -> bytes:
    """One GET on a new connection (Connection: close), read to the end; the body. Raises on
    any failure, and asserts a 200."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data
    return body


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and its children."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (and the leader if still up)
    except ProcessLookupError:
        pass
    proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RawConnection:
    """A plain socket for sending exact bytes (malformed requests, pipelining) and reading
    HTTP/1.1 responses back one at a time."""

    def __init__(self, server: Any) -> None:
        if getattr(server, "uds", None):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(server.uds)
        else:
            self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.buffer = bytearray()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)!r}")
        return self._take(self.buffer.index(marker) + len(marker))

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError(f"closed after {len(self.buffer)} of {n} bytes")
        return self._take(n)

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        return self._take(len(self.buffer))

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def at_eof(self) -> bool:
        """True if the server closed the connection (waits up to TIMEOUT for it)."""
        if self.buffer:
            return False
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def read_response(self, head_request: bool = False) -> "Response":
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head[:-4].split("\r\n")
        status = int(status_line.split()[1])
        headers = [(n.strip().lower(), v.strip()) for n, v in (line.split(":", 1) for line in header_lines)]
        names = dict(headers)
        if head_request or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in names:
            body = self.read_exact(int(names["content-length"]))
        elif names.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self.read_until(b"\r\n")[:-2], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                self.read_exact(2)
        else:
            body = self.read_to_eof()
        return Response(status_line, status, headers, body)


class Response:
    def __init__(self, status_line: str, status: int, headers: List[tuple], body: bytes) -> None:
        self.status_line = status_line
        self.status = status
        self.header_list = headers
        self.headers = dict(headers)
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


@pytest.fixture(name="raw")
def raw_fixture() -> Any:
    return RawConnection
