"""A raw ASGI 3 app for the hostile-peer floods (tests/floods.py, tests/test_stress.py) and the
live-server fuzzer (tests/fuzz/live.py). Plain ASGI, so asgiws and uvicorn serve the same app.

WebSocket:
    /, /echo        echoes every message (text as text, bytes as bytes) until the disconnect
    /push           accepts, then never calls receive(): sends "tick" every `every` seconds
                    (?every=S, default 1; 0: never sends) until sending fails or `seconds` pass
    /stream         accepts, then sends `size`-byte binary messages (?size=N, default 64 KiB)
                    as fast as `await send` returns, until sending fails or `seconds` pass
HTTP:
    /noread         never calls receive(): sleeps `sleep` seconds (default 600), then answers 200
    /stream         streams `size`-byte chunks (default 64 KiB) until sending fails or `seconds`
                    pass
    /upload         reads the whole body, answers 200 with its length
    anything else   reads the body, answers 200 "ok"

Every loop ends by itself (`seconds`, default 600): an app a flood left running cannot outlive
a test run by much.
"""

import asyncio
import time
import urllib.parse


def query(scope):
    text = scope["query_string"].decode("latin-1")
    return {k: v[0] for k, v in urllib.parse.parse_qs(text).items()}


def number(params, name, default):
    """A numeric query parameter; the default for a missing or malformed one (the fuzzer sends
    those, and an app error is not what it looks for)."""
    try:
        value = float(params.get(name, default))
    except ValueError:
        return default
    return value if 0 <= value < 1e9 else default


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif kind == "websocket":
        await websocket(scope, receive, send)
    elif kind == "http":
        await http(scope, receive, send)


async def websocket(scope, receive, send):
    params = query(scope)
    path = scope["path"]
    deadline = time.monotonic() + number(params, "seconds", 600)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    try:
        if path == "/push":
            every = number(params, "every", 1)
            while time.monotonic() < deadline:
                await asyncio.sleep(every if every > 0 else deadline - time.monotonic())
                if every > 0:
                    await send({"type": "websocket.send", "text": "tick"})
        elif path == "/stream":
            payload = bytes(min(int(number(params, "size", 65536)), 1 << 20))
            sent = 0
            while time.monotonic() < deadline:
                await send({"type": "websocket.send", "bytes": payload})
                sent += 1
                if sent % 16 == 0:  # a send that never has to wait never yields to the loop
                    await asyncio.sleep(0)
        else:  # /, /echo
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    except OSError:  # sent after the connection closed (asgiws: ClientDisconnected)
        return
    except Exception as exc:  # uvicorn raises its own types for a send after close
        if "closed" in str(exc).lower() or "disconnect" in type(exc).__name__.lower():
            return
        raise


async def http(scope, receive, send):
    params = query(scope)
    path = scope["path"]
    if path == "/noread":
        await asyncio.sleep(number(params, "sleep", 600))
        await respond(send, b"ok")
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if path == "/stream":
        # Some servers make `send` a no-op once the client is gone (uvicorn): watch for the
        # disconnect with a receive() beside the loop, and yield each chunk so it can arrive.
        deadline = time.monotonic() + number(params, "seconds", 600)
        chunk = bytes(min(int(number(params, "size", 65536)), 1 << 20))
        disconnected = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        try:
            while time.monotonic() < deadline and not disconnected.done():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0)
            if not disconnected.done():
                await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass
        finally:
            disconnected.cancel()
    elif path == "/upload":
        await respond(send, str(size).encode())
    else:
        await respond(send, b"ok")


async def respond(send, body):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
