"""The servers of the benchmark: how each one is started, checked for readiness and stopped.

Every server runs as its own process group (start_new_session), pinned to core 0 with
`taskset -c 0`, listening on 127.0.0.1 only, with access logs off, log level warning and, where
the server has a switch for it, permessage-deflate off. (The load generator never offers
permessage-deflate, so no server can negotiate it anyway: hypercorn/wsproto only compresses when
the client offers it, granian has no WebSocket compression.)
"""

from __future__ import annotations

import base64
import importlib.util
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
PYTHON = sys.executable
SERVER_CORE = "0"
CLIENT_CORE = "1"

# app name -> "module:attribute" (bench/ is on PYTHONPATH of every server)
APPS = {"echo": "apps:echo", "broadcast": "apps:broadcast", "starlette": "apps:starlette_echo"}


@dataclass
class Server:
    name: str
    label: str
    kind: str  # "asgi", "picows" (WebSocket ceiling), "raw" (TCP ceiling)
    argv: object  # callable(app_target, port, backlog) -> list[str]
    packages: tuple = ()
    apps: tuple = ("echo", "broadcast")
    notes: str = ""
    repo: object = None  # callable() -> the checkout to run from (default: this one)
    min_size: int = 0  # message size it is meant for: scenarios with smaller messages skip it

    def command(self, app: str, port: int, backlog: int) -> list[str]:
        return list(self.argv(APPS.get(app, app), port, backlog))

    def missing(self) -> list[str]:
        """Its packages (import names) that this Python cannot import: such a server is skipped
        (socketify.py, for one, has no release since 2024 and may not build)."""
        return [name for name in self.packages if importlib.util.find_spec(name) is None]


def _asgiws(app, port, backlog):
    return [PYTHON, "-m", "asgiws", app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--ws-per-message-deflate", "false",
            "--backlog", str(backlog), "--timeout-graceful-shutdown", "1"]


def _asgiws_metrics(app, port, backlog):
    # --metrics-port 0: metrics on (a free port), everything else as the asgiws row.
    return _asgiws(app, port, backlog) + ["--metrics-port", "0"]


def _asgiws_pygc(app, port, backlog):
    # --gc-threshold none: Python's own collector thresholds (700), everything else as the asgiws row.
    return _asgiws(app, port, backlog) + ["--gc-threshold", "none"]


def _uvicorn(ws):
    def argv(app, port, backlog):
        return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-access-log", "--ws", ws,
                "--ws-per-message-deflate", "false", "--loop", "uvloop", "--http", "httptools",
                "--backlog", str(backlog), "--timeout-graceful-shutdown", "1"]
    return argv


def _hypercorn(app, port, backlog):
    # -w 0: serve in this process (hypercorn's default spawns one worker process)
    return [PYTHON, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}", "-k", "uvloop",
            "-w", "0", "--backlog", str(backlog), "--log-level", "warning",
            "--graceful-timeout", "1"]


def _granian(app, port, backlog):
    return [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--runtime-threads", "1",
            "--loop", "uvloop", "--log-level", "warning", "--no-access-log",
            "--backlog", str(backlog), "--backpressure", str(max(backlog, 16384)),
            "--workers-kill-timeout", "1", app]


def _socketify(app, port, backlog):
    # No backlog switch: uSockets listens with a fixed backlog of 512 (the load generators open
    # at most 200 connections at a time). Per-message deflate is off by default.
    return [PYTHON, "-m", "socketify", app, "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--disable-listen-log", "true"]


def _ceiling(kind):
    def argv(app, port, backlog):
        return [PYTHON, os.path.join(BENCH_DIR, "ceilings.py"), kind, "--port", str(port),
                "--backlog", str(backlog)]
    return argv


def base_dir() -> str:
    """ASGIWS_BASE_DIR: another checkout of asgiws, with its extension built in place
    (`python setup.py build_ext --inplace`), for before/after runs in one session."""
    path = os.environ.get("ASGIWS_BASE_DIR")
    if not path:
        raise SystemExit("asgiws-base needs ASGIWS_BASE_DIR: a checkout with its extension built in place")
    return os.path.abspath(path)


SERVERS = {
    "asgiws": Server("asgiws", "asgiws", "asgi", _asgiws, ("asgiws", "uvloop", "httptools"),
                     apps=("echo", "broadcast", "starlette")),
    "asgiws-metrics": Server("asgiws-metrics", "asgiws (metrics on)", "asgi", _asgiws_metrics,
                             ("asgiws", "prometheus_client"), apps=("echo", "broadcast", "starlette"),
                             notes="--metrics-port 0: the metrics-on side of a pair with asgiws (off)"),
    "asgiws-pygc": Server("asgiws-pygc", "asgiws (gc 700)", "asgi", _asgiws_pygc, ("asgiws",),
                          apps=("echo", "broadcast", "starlette"),
                          notes="--gc-threshold none: Python's collector thresholds (the "
                                "before of asgiws' --gc-threshold default)"),
    "asgiws-base": Server("asgiws-base", "asgiws (base)", "asgi", _asgiws, ("asgiws",),
                          apps=("echo", "broadcast", "starlette"), repo=base_dir,
                          notes="the checkout in ASGIWS_BASE_DIR (a before/after pair with asgiws)"),
    "uvicorn": Server("uvicorn", "uvicorn (ws auto)", "asgi", _uvicorn("auto"),
                      ("uvicorn", "websockets", "httptools", "uvloop"),
                      apps=("echo", "broadcast", "starlette"),
                      notes="--ws auto (= websockets-sansio in uvicorn >= 0.35 when websockets "
                            "is installed), --http httptools, --loop uvloop"),
    "uvicorn-websockets": Server("uvicorn-websockets", "uvicorn (ws websockets)", "asgi",
                                 _uvicorn("websockets"), ("uvicorn", "websockets"),
                                 notes="--ws websockets (websockets' legacy asyncio impl)"),
    "hypercorn": Server("hypercorn", "hypercorn", "asgi", _hypercorn, ("hypercorn", "wsproto"),
                        notes="-k uvloop -w 0 (one process)"),
    "granian": Server("granian", "granian", "asgi", _granian, ("granian",),
                      notes="--interface asgi --workers 1 --runtime-threads 1 --loop uvloop "
                            "(the Rust runtime thread shares core 0 with the Python thread)"),
    "socketify": Server("socketify", "socketify.py", "asgi", _socketify, ("socketify",),
                        apps=("echo", "broadcast", "starlette"),
                        notes="--interface asgi --workers 1 (uWebSockets in C++ under a Python "
                              "ASGI layer; its own event loop, libuv)"),
    "picows": Server("picows", "picows echo", "picows", _ceiling("picows"), ("picows",),
                     notes="ceiling, not ASGI: picows WSListener echoing frames (broadcast "
                           "on /broadcast), uvloop transports. It writes every frame with its "
                           "own transport write (one send() each), so a server that coalesces "
                           "writes can beat it when many messages are in flight (pipelined, "
                           "broadcast); it is the ceiling for request-response"),
    "picows-task": Server("picows-task", "picows + task (ASGI floor)", "picows", _ceiling("picows-task"),
                          ("picows",), apps=("echo",),
                          notes="not a server: picows' echo with the one cost ASGI adds per message "
                                "(an app task woken by a Future, event dicts; bench/ceilings.py)"),
    "picows-wake": Server("picows-wake", "picows + task wake-up only", "picows",
                          _ceiling("picows-wake"), ("picows",), apps=("echo",),
                          notes="not a server: picows' echo sent from a task woken through one "
                                "Future per message, nothing else (bench/ceilings.py): the least "
                                "any server that runs its app in a task pays"),
    "raw": Server("raw", "raw TCP echo", "raw", _ceiling("raw"), ("uvloop",), apps=("echo",),
                  notes="ceiling, not WebSocket: uvloop Protocol writing back every byte read"),
    "raw-frame": Server("raw-frame", "raw frame echo (store and forward)", "raw",
                        _ceiling("raw-frame"), ("uvloop",), apps=("echo",), min_size=1 << 20,
                        notes="not a server: the raw TCP echo holding each WebSocket frame until "
                              "it is complete, then writing it whole (as a server of messages "
                              "must; no unmasking; bench/ceilings.py), a floor for large messages"),
}
SERVER_ORDER = list(SERVERS)
# bench/run.py without --servers: asgiws and its peers. The asgiws-* variants (metrics on, Python's
# GC thresholds, another checkout) are the other halves of before/after pairs, and the FLOORS
# (bench/ceilings.py) are not peers: each is named when wanted (asgiws-base also needs
# ASGIWS_BASE_DIR).
FLOORS = ("picows-task", "picows-wake", "raw-frame")
DEFAULT_SERVERS = [name for name in SERVER_ORDER if not name.startswith("asgiws-") and name not in FLOORS]


def package_version(name: str) -> str:
    if name == "asgiws":
        try:
            out = subprocess.run([PYTHON, "-c", "import asgiws; print(asgiws.__version__)"],
                                 cwd=REPO_DIR, capture_output=True, text=True, timeout=30)
            version = out.stdout.strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            version = "?"
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "asgiws", "csrc"],
                                   cwd=REPO_DIR, capture_output=True, text=True,
                                   timeout=10).stdout.strip()
            version += f" (git {rev}{' + uncommitted changes' if dirty else ''})"
        except (OSError, subprocess.TimeoutExpired):
            pass
        return version
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unverified_tls_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: the benchmark's are self-signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _ws_handshake_ok(port: int, path: str, timeout: float, tls: bool = False) -> bool:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        if tls:
            s = stack.enter_context(unverified_tls_context().wrap_socket(s))
        s.settimeout(timeout)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        ok = data.startswith(b"HTTP/1.1 101")
        if ok:  # polite close frame (masked, code 1000), then drop
            s.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
        return ok


# A masked binary frame of 4 bytes: the raw echo reflects any bytes, raw-frame whole frames.
_RAW_PROBE = b"\x82\x84\x00\x00\x00\x00ping"


def _raw_echo_ok(port: int, timeout: float) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(_RAW_PROBE)
        echoed = b""
        while len(echoed) < len(_RAW_PROBE):
            chunk = s.recv(len(_RAW_PROBE) - len(echoed))
            if not chunk:
                return False
            echoed += chunk
        return echoed == _RAW_PROBE


class Running:
    """One server process (group) serving one app. bench/deploy.py adds arguments (--workers 2,
    --ssl-certfile ...), other cores, and tls=True for a server that speaks only TLS."""

    def __init__(self, server: Server, app: str, backlog: int, log_path: str,
                 extra_args: tuple = (), cores: str = SERVER_CORE, tls: bool = False):
        self.server = server
        self.app = app
        self.port = free_port()
        self.log_path = log_path
        self.tls = tls
        self.argv = (["taskset", "-c", cores] + server.command(app, self.port, backlog)
                     + list(extra_args))
        repo = server.repo() if server.repo is not None else REPO_DIR
        env = dict(os.environ)
        env["PYTHONPATH"] = BENCH_DIR + os.pathsep + repo
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONDEVMODE", None)
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        self.log_offset = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> str | None:
        """None when ready, else an error message."""
        deadline = time.monotonic() + timeout
        path = "/broadcast" if self.app == "broadcast" else "/"
        last = "not listening"
        while time.monotonic() < deadline:
            if not self.alive():
                return f"exited with code {self.proc.returncode}: {self.log_tail()}"
            try:
                if self.server.kind == "raw":
                    if _raw_echo_ok(self.port, 2.0):
                        return None
                elif _ws_handshake_ok(self.port, path, 2.0, self.tls):
                    time.sleep(0.2)  # let the server finish with the probe connection
                    return None
                last = "handshake refused"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        return f"not ready after {timeout:.0f}s ({last}): {self.log_tail()}"

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 600) -> str:
        return self.log_text()[-n:].strip().replace("\n", " | ")

    def new_log_lines(self) -> list[str]:
        """Lines logged since the previous call."""
        text = self.log_text()
        new, self.log_offset = text[self.log_offset:], len(text)
        return [line for line in new.splitlines() if line.strip()]

    def stop(self) -> None:
        for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                # the leader is gone; make sure no worker of its group survives
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


ERROR_PATTERN = re.compile(r"Traceback|Error|Exception|CRITICAL|ERROR|error|Killed|Segmentation",
                           re.IGNORECASE)
# Lines every server may print on a routine shutdown or that are not about the server.
BENIGN_PATTERN = re.compile(r"KeyboardInterrupt|CancelledError|Finished server process|"
                            r"Shutting down|Waiting for|Stopping worker", re.IGNORECASE)


def suspicious(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ERROR_PATTERN.search(ln) and not BENIGN_PATTERN.search(ln)]
