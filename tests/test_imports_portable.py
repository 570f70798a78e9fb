"""asgiws on a platform without AF_UNIX, SIGHUP, fork or uvloop (as on Windows).

Simulated in a fresh interpreter by a sitecustomize.py that deletes those names (and makes
`import uvloop` fail) before anything else runs:
- every module imports: those names are used only where a Unix socket or the worker supervisor
  is actually started, never at import time;
- the server runs TCP on asyncio, serving HTTP and a WebSocket echo;
- --uds and --workers > 1 are refused in one line (exit status 2), not failed deep inside.
"""

import os
import subprocess
import sys
from pathlib import Path

from websockets.sync.client import connect

import httpx
from conftest import ROOT, TIMEOUT

# Imported by Python at startup when its directory is on sys.path (site's sitecustomize hook).
SITECUSTOMIZE = """
import functools, os, signal, socket, sys
# asyncio's self-pipe needs socket.socketpair(), which Windows emulates over TCP; keep Linux's,
# which defaults to AF_UNIX and would fail once the name is gone.
socket.socketpair = functools.partial(socket.socketpair, socket.AF_UNIX)
for module, names in ((socket, ["AF_UNIX"]), (os, ["fork"]),
                      (signal, ["SIGHUP", "SIGCHLD", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU"])):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
sys.modules["uvloop"] = None  # `import uvloop` raises ImportError, as where it is not installed
"""

IMPORT_ALL = """
import importlib, pkgutil, sys
import asgiws
failed = []
for info in pkgutil.walk_packages(asgiws.__path__, "asgiws."):
    if info.name == "asgiws.workers":
        continue  # gunicorn itself runs only on Unix
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""

# HTTP answers with the event loop's module (asyncio's, not uvloop's); WebSocket echoes.
APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "http":
        body = type(asyncio.get_running_loop()).__module__.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                return
"""


def portable_env(tmp_path: Path) -> dict:
    """PYTHONPATH that loads the simulation first, then the app in tmp_path and asgiws."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "portable_app.py").write_text(APP)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def test_every_module_imports_without_unix_only_names(tmp_path):
    env = dict(os.environ, **portable_env(tmp_path))
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_server_runs_tcp_on_asyncio(tmp_path, spawn_server):
    with spawn_server("portable_app:app", "--lifespan", "off", env=portable_env(tmp_path)) as proc:
        response = httpx.get(proc.url, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.text.startswith("asyncio"), response.text
        with connect(f"ws://{proc.host}:{proc.port}/", open_timeout=TIMEOUT) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=TIMEOUT) == "héllo"


def refusal(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, **portable_env(tmp_path))
    result = subprocess.run([sys.executable, "-m", "asgiws", "portable_app:app", *args], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_uds_is_refused_in_one_line(tmp_path):
    line = refusal(tmp_path, "--uds", str(tmp_path / "app.sock"))
    assert line.startswith("asgiws: error: uds: this platform has no Unix domain sockets; listen on TCP (--host/--port)")


def test_workers_are_refused_in_one_line(tmp_path):
    line = refusal(tmp_path, "--workers", "2")
    assert line.startswith("asgiws: error: workers: 2 worker processes need os.fork, which this platform lacks")
