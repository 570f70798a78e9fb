"""A raw ASGI 3 app for tests/test_nginx.py: it tells who it is and what it saw.

HTTP: /hints → an early hint (103) if the server offers them, then "the page"; any other path → JSON {"pid", "client", "scheme", "host", "path"} (the serving process's pid
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
    if scope["type"] == "http" and scope["path"] == "/hints":
        # An early hint when the server offers them (asgiws --early-hints), then the page.
        if "http.response.early_hint" in scope.get("extensions", {}):
            await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"the page"})
    elif scope["type"] == "http":
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
