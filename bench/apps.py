"""ASGI apps served by every ASGI server in the benchmark (bench/run.py).

    echo            raw ASGI 3: WebSocket echo (bytes back as bytes, text back as text) on any
                    path; HTTP: "Hello, World!" text/plain on any path (the wrk plaintext test)
    broadcast       raw ASGI 3: every received WebSocket message is sent to every open connection
                    (the sender included), connections kept in a module-global dict
    starlette_echo  the same WebSocket echo as a Starlette WebSocketEndpoint on a WebSocketRoute("/")

The apps do no lifespan work (they answer lifespan.startup/shutdown so servers that run lifespan
by default are happy) and never log.
"""

from __future__ import annotations

_PLAINTEXT_BODY = b"Hello, World!"
_PLAINTEXT_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(_PLAINTEXT_BODY)).encode()),
    ],
}
_PLAINTEXT_BODY_EVENT = {"type": "http.response.body", "body": _PLAINTEXT_BODY}
_ACCEPT = {"type": "websocket.accept"}


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _plaintext(receive, send):
    # Drain the request body (none for wrk's GETs) before answering.
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    await send(_PLAINTEXT_START)
    await send(_PLAINTEXT_BODY_EVENT)


async def echo(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send(_ACCEPT)
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            data = message.get("bytes")
            if data is not None:
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": message.get("text")})
    elif kind == "http":
        await _plaintext(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)


# connection id -> that connection's ASGI send callable
BROADCAST_CONNECTIONS: dict = {}


async def broadcast(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send(_ACCEPT)
        key = object()
        BROADCAST_CONNECTIONS[key] = send
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                data = message.get("bytes")
                if data is not None:
                    event = {"type": "websocket.send", "bytes": data}
                else:
                    event = {"type": "websocket.send", "text": message.get("text")}
                for peer_send in list(BROADCAST_CONNECTIONS.values()):
                    try:
                        await peer_send(event)
                    except Exception:  # a peer that has gone away; its own task cleans up
                        pass
        finally:
            BROADCAST_CONNECTIONS.pop(key, None)
    elif kind == "http":
        await _plaintext(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)


def _make_starlette_echo():
    try:
        from starlette.applications import Starlette
        from starlette.endpoints import WebSocketEndpoint
        from starlette.routing import WebSocketRoute
    except ImportError:  # starlette is in the bench extra; the raw apps do not need it
        return None

    class Echo(WebSocketEndpoint):
        encoding = "bytes"

        async def on_receive(self, websocket, data):
            await websocket.send_bytes(data)

    return Starlette(routes=[WebSocketRoute("/", Echo)])


starlette_echo = _make_starlette_echo()
