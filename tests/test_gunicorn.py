"""`gunicorn -k asgiws.workers.AsgiwsWorker app:application`: gunicorn's arbiter with asgiws
workers (asgiws/workers.py), as a real process tree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, TIMEOUT, free_port
from test_tls import client_context, pki, wss_exchange  # noqa: F401 - pki is a fixture

pytest.importorskip("gunicorn")
APPS = Path(__file__).resolve().parent / "apps"


def start_gunicorn(tmp_path: Path, *args: str):
    """gunicorn on 127.0.0.1 (a port picked free first: gunicorn binds what it is given)."""
    from gunicorn.config import Config as GunicornConfig

    port = free_port()
    argv = ["-k", "asgiws.workers.AsgiwsWorker", "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "--chdir", str(APPS), "--graceful-timeout", "5", *args]  # fmt: skip
    if "control_socket_disable" in GunicornConfig().settings:  # gunicorn >= 25: no socket in $HOME
        argv.append("--no-control-socket")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASGIWS_", "GUNICORN_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", PRODUCTION_EVENTS=str(tmp_path / "events"))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *argv, "production:app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    return proc, port


def wait_for_workers(tmp_path: Path, count: int) -> list:
    deadline = time.monotonic() + TIMEOUT
    while True:
        path = tmp_path / "events"
        started = re.findall(r"startup (\d+)", path.read_text()) if path.exists() else []
        if len(started) >= count:
            return [int(pid) for pid in started]
        assert time.monotonic() < deadline, "gunicorn workers did not start"
        time.sleep(0.05)


@pytest.mark.anyio
async def test_gunicorn_worker_class_serves_http_and_websocket(tmp_path):
    from websockets.asyncio.client import connect

    proc, port = start_gunicorn(tmp_path)
    try:
        workers = wait_for_workers(tmp_path, 2)
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.get(f"http://127.0.0.1:{port}/pid")
        assert response.status_code == 200 and int(response.text) in workers
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
            await ws.send("through gunicorn")
            assert await ws.recv() == "through gunicorn"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output = proc.stderr.read()
        proc.stderr.close()
    assert "Using worker: asgiws.workers.AsgiwsWorker" in output
    assert output.count("Application shutdown complete.") == 2, output  # each worker, gracefully
    assert sorted(re.findall(r"shutdown (\d+)", (tmp_path / "events").read_text())) == sorted(map(str, workers))


def test_gunicorn_max_requests_recycles_the_worker(tmp_path):
    proc, port = start_gunicorn(tmp_path, "--max-requests", "2", "--workers", "1")
    try:
        first = wait_for_workers(tmp_path, 1)
        for _ in range(6):
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).text == "ok"
        assert len(wait_for_workers(tmp_path, 2)) >= 2 and first
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.anyio
async def test_gunicorn_tls_settings_apply(tmp_path, pki):
    """gunicorn's --certfile / --keyfile reach the asgiws worker: https and wss, scheme included."""
    proc, port = start_gunicorn(tmp_path, "--certfile", pki["cert"], "--keyfile", pki["plain_key"])
    try:
        wait_for_workers(tmp_path, 2)
        async with httpx.AsyncClient(verify=client_context(pki), timeout=TIMEOUT) as client:
            assert (await client.get(f"https://127.0.0.1:{port}/scheme")).text == "https"
        assert await wss_exchange(port, client_context(pki)) == ["hello over TLS", "wss"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_the_command_and_run_never_import_gunicorn():
    """gunicorn is imported by asgiws.workers alone; the command, `asgiws.run()` and the --workers
    supervisor do without it (it is not a dependency)."""
    code = ("import sys, asgiws, asgiws.cli, asgiws.runner, asgiws.supervisors.multiprocess; "
            "assert 'gunicorn' not in sys.modules; import asgiws.workers; print(asgiws.workers.AsgiwsWorker)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "asgiws.workers.AsgiwsWorker" in result.stdout
