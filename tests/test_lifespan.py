"""Lifespan: startup/shutdown events, `state`, and the three modes, in-process and as a real
process (exit codes, signals)."""

from __future__ import annotations

import logging
import signal
import textwrap

import httpx
import pytest

from asgiws.asgi import UnexpectedMessage
from asgiws.server import StartupError


def lifespan_app(events: list, *, startup_failure: str = "", raise_on_startup: bool = False):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            events.append("startup")
            if raise_on_startup:
                raise RuntimeError("no database")
            if startup_failure:
                await send({"type": "lifespan.startup.failed", "message": startup_failure})
                return
            scope["state"]["counter"] = {"n": 0}
            scope["state"]["name"] = "demo"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            state = scope["state"]
            state["counter"]["n"] += 1  # shared object: visible to later requests
            state["name"] = "changed"  # the copy is this request's own
            body = f'{state["counter"]["n"]}'.encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    return app


def test_startup_shutdown_and_state(run_server):
    events: list = []
    with run_server(lifespan_app(events), lifespan="on") as server:
        assert events == ["startup"]
        assert httpx.get(server.url).text == "1"
        assert httpx.get(server.url).text == "2"
        assert server.server.lifespan.state["name"] == "demo"  # requests got shallow copies
    assert events == ["startup", "shutdown"]


def test_auto_mode_serves_apps_without_lifespan(run_server, caplog):
    async def app(scope, receive, send):
        assert scope["type"] == "http"  # raises on the lifespan scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with caplog.at_level(logging.INFO, logger="asgiws.error"):
        with run_server(app, lifespan="auto") as server:
            assert httpx.get(server.url).text == "ok"
    unsupported = [r for r in caplog.records if "unsupported" in r.getMessage()]
    assert unsupported and unsupported[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_auto_mode_app_returning_early_is_unsupported(run_server):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with run_server(app, lifespan="auto") as server:
        assert httpx.get(server.url).status_code == 204


def test_off_mode_never_calls_lifespan(run_server):
    events: list = []

    async def app(scope, receive, send):
        events.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with run_server(app, lifespan="off") as server:
        httpx.get(server.url)
    assert events == ["http"]


def test_on_mode_exception_fails_startup(run_server):
    events: list = []
    with pytest.raises(StartupError, match="no database"):
        with run_server(lifespan_app(events, raise_on_startup=True), lifespan="on"):
            pass  # pragma: no cover


def test_startup_failed_message_fails_startup_in_auto_mode(run_server):
    with pytest.raises(StartupError, match="Application startup failed: cache unreachable"):
        with run_server(lifespan_app([], startup_failure="cache unreachable"), lifespan="auto"):
            pass  # pragma: no cover


def test_on_mode_app_returning_without_answer_fails(run_server):
    async def app(scope, receive, send):
        return

    with pytest.raises(StartupError, match="returned without answering"):
        with run_server(app, lifespan="on"):
            pass  # pragma: no cover


def test_unexpected_message_raises_in_app(run_server):
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            try:
                await send({"type": "lifespan.shutdown.complete"})  # not allowed while starting
            except UnexpectedMessage as exc:
                seen.append(exc)
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    with run_server(app, lifespan="on"):
        pass
    assert len(seen) == 1 and "lifespan.shutdown.complete" in str(seen[0])


def test_shutdown_failed_is_logged(run_server, caplog):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})

    with caplog.at_level(logging.INFO, logger="asgiws.error"):
        with run_server(app, lifespan="on"):
            pass
    assert any(r.levelno == logging.ERROR and "flush failed" in r.getMessage() for r in caplog.records)


# -- as a real process ---------------------------------------------------------------------------

APP_SOURCE = textwrap.dedent(
    """
    import asyncio
    import os

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            mode = os.environ.get("MODE", "ok")
            if mode == "failed":
                await send({"type": "lifespan.startup.failed", "message": "database is down"})
                return
            if mode == "raise":
                raise RuntimeError("exploded during startup")
            scope["state"]["ready"] = "yes"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            print("app: shutdown event", flush=True)
            if mode == "hang":
                await asyncio.Event().wait()  # a cleanup that never finishes
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": scope["state"]["ready"].encode()})
    """
)


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "lifespan_app.py").write_text(APP_SOURCE)
    return tmp_path


def test_process_startup_failed_exits_nonzero(spawn, app_dir):
    proc = spawn(["lifespan_app:app", "--port", "0", "--app-dir", str(app_dir)], env={"MODE": "failed"})
    assert proc.wait() == 3  # STARTUP_FAILURE
    assert "Application startup failed: database is down" in proc.text
    assert "running on" not in proc.text
    assert "Traceback" not in proc.text


def test_process_on_mode_exception_exits_nonzero(spawn, app_dir):
    proc = spawn(["lifespan_app:app", "--port", "0", "--lifespan", "on", "--app-dir", str(app_dir)],
                 env={"MODE": "raise"})  # fmt: skip
    assert proc.wait() == 3  # STARTUP_FAILURE
    assert "exploded during startup" in proc.text


def test_process_auto_mode_exception_still_serves(spawn_server, app_dir):
    with spawn_server("lifespan_app:app", app_dir=app_dir, env={"MODE": "raise"}) as proc:
        assert proc.proc.poll() is None
    assert "unsupported" in proc.text


def test_process_sigterm_runs_shutdown_and_exits_zero(spawn_server, app_dir):
    with spawn_server("lifespan_app:app", "--lifespan", "on", app_dir=app_dir) as proc:
        assert httpx.get(proc.url).text == "yes"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert "Application shutdown complete." in proc.text


def test_process_hung_lifespan_shutdown_is_cancelled_after_its_timeout(spawn_server, app_dir):
    with spawn_server("lifespan_app:app", "--lifespan", "on", "--timeout-lifespan-shutdown", "0.5",
                      app_dir=app_dir, env={"MODE": "hang"}) as proc:  # fmt: skip
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0  # bounded by the fixture's timeout, not by the app
    assert "Application shutdown did not finish within 0.5s; cancelling it." in proc.text


def test_process_sigint_exits_zero(spawn_server, app_dir):
    with spawn_server("lifespan_app:app", app_dir=app_dir) as proc:
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
    assert "Shutting down" in proc.text


def test_taken_address_fails_before_app_startup(run_server):
    import socket

    events: list = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StartupError, match="address already in use"):
            with run_server(lifespan_app(events), lifespan="on", port=taken.getsockname()[1]):
                pass  # pragma: no cover
    assert events == []  # the app's startup never ran
