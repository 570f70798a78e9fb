"""The demo: `asgiws asgiws.demo:app`, then open http://127.0.0.1:8000.

A plain ASGI 3 app, no framework:
    GET /     a page whose script opens a WebSocket back to /ws and echoes what you type
    /ws       WebSocket echo: text comes back as text, bytes as bytes
    lifespan  startup records when the server started; GET / shows it
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Callable, Dict

PAGE = (Path(__file__).parent / "index.html").read_text(encoding="utf-8")


async def app(scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(scope, receive, send)
    elif kind == "websocket":
        await websocket_echo(scope, receive, send)
    elif kind == "http":
        await http_page(scope, receive, send)


async def lifespan(scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started_at"] = time.time()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket_echo(scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008, "reason": "try /ws"})  # before accept: HTTP 403
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def http_page(scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    path = scope["path"][len(scope.get("root_path", "")):] or "/"
    if path == "/" and scope["method"] in ("GET", "HEAD"):
        started = scope.get("state", {}).get("started_at")
        uptime = f"up {time.time() - started:.0f} s" if started else "lifespan off"
        await respond(send, 200, PAGE.replace("{{uptime}}", html.escape(uptime)).encode(), b"text/html; charset=utf-8")
    elif path == "/ws":
        await respond(send, 426, b"This is a WebSocket endpoint: connect with ws://\n", b"text/plain; charset=utf-8",
                      [(b"upgrade", b"websocket")])  # fmt: skip
    else:
        await respond(send, 404, b"Not Found\n", b"text/plain; charset=utf-8")


async def respond(send: Callable[..., Any], status: int, body: bytes, content_type: bytes, headers: Any = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
