"""A raw ASGI 3 app for tests/test_backpressure.py: it sends or receives a lot, slowly or not at
all, and reports how far it got over plain HTTP, so a test can watch it from outside the server
process (whose memory it reads from /proc).

HTTP:
    /stats         JSON: {"sent": messages whose `await send` returned, "send_done": bool,
                   "received": messages, "received_bytes": bytes, "receiving": bool}
    /release       lets /sink start receiving
WebSocket:
    /firehose?count=N&size=S   sends N binary messages of S bytes as fast as `await send` allows,
                               then closes (1000)
    /sink?count=N&delay=D      waits for /release without receiving, then receives N messages
                               (sleeping D seconds after each), answers "done <N> <bytes>", closes
"""

import asyncio
import json
import os
import urllib.parse

stats = {"sent": 0, "send_done": False, "received": 0, "received_bytes": 0, "receiving": False}
release = None  # asyncio.Event, made on the server's loop


def query(scope):
    return {k: v[0] for k, v in urllib.parse.parse_qs(scope["query_string"].decode()).items()}


async def app(scope, receive, send):
    global release
    if release is None:
        release = asyncio.Event()
    if scope["type"] == "http":
        if scope["path"] == "/release":
            release.set()
        body = json.dumps(stats).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        params = query(scope)
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if scope["path"] == "/firehose":
            payload = os.urandom(int(params.get("size", 65536)))  # incompressible, made once
            stats["send_done"] = False
            for _ in range(int(params["count"])):
                await send({"type": "websocket.send", "bytes": payload})
                stats["sent"] += 1
            stats["send_done"] = True
            await send({"type": "websocket.close", "code": 1000})
        elif scope["path"] == "/sink":
            count, delay = int(params["count"]), float(params.get("delay", 0))
            await release.wait()
            stats["receiving"] = True
            while stats["received"] < count:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                stats["received"] += 1
                stats["received_bytes"] += len(message.get("bytes") or b"")
                if delay:
                    await asyncio.sleep(delay)
            await send({"type": "websocket.send", "text": f"done {stats['received']} {stats['received_bytes']}"})
            await send({"type": "websocket.close", "code": 1000})
