"""A raw ASGI 3 app for tests/test_nginx.py: it tells who it is and what it saw.

HTTP: any path → JSON {"pid", "client", "scheme", "host", "path"} (the serving process's pid
tells the instances of an upstream apart).
WebSocket: accepts, sends that JSON as its first message, then echoes every message.
"""

import json
import os


def describe(scope):
    headers = dict(scope["headers"])
    return json.dumps({
        "pid": os.getpid(),
        "client": list(scope["client"]) if scope["client"] else None,
        "scheme": scope["scheme"],
        "host": headers.get(b"host", b"").decode("latin-1"),
        "path": scope["path"],
    })


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": describe(scope).encode()})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": describe(scope)})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
