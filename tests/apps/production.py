"""A raw ASGI 3 app for the process-level tests: workers, signals, graceful shutdown, TLS, gunicorn.

What the app sees is appended, one line per event, to the file named by $PRODUCTION_EVENTS (when
set), so a test can check it from outside the server process(es): `startup <pid>`,
`shutdown <pid>`, `slow started`, `hang started`, `hang cancelled`, `burst sent <n>`,
`disconnect <code>`, `ws hang cancelled`, `sent <client port> <n>`.

HTTP:
    /pid          the serving process's pid
    /scheme       scope["scheme"]
    /slow?<s>     waits <s> seconds (default 1), then 200 "slow done"
    /hang         never answers (and records its cancellation)
    anything else 200 "ok"
WebSocket:
    /ws           echo; the text "burst <n>" is answered with n messages "0" .. "n-1";
                  "big <n> <size>" with n messages of <size> characters, each send recorded;
                  the text "scheme" with scope["scheme"]
    /ws-hang      accepts, then never receives or returns (records its cancellation)
"""

import asyncio
import os


def record(line: str) -> None:
    path = os.environ.get("PRODUCTION_EVENTS")
    if path:
        # O_APPEND and one write per line: lines from several worker processes do not mix.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        if scope["path"] == "/ws-hang":
            await websocket_hang(receive, send)
        else:
            await websocket(scope, receive, send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            record(f"startup {os.getpid()}")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record(f"shutdown {os.getpid()}")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def http(scope, receive, send):
    path = scope["path"]
    if path == "/pid":
        await respond(send, str(os.getpid()).encode())
    elif path == "/scheme":
        await respond(send, scope["scheme"].encode())
    elif path == "/slow":
        record("slow started")
        await asyncio.sleep(float(scope["query_string"] or 1))
        await respond(send, b"slow done")
    elif path == "/hang":
        record("hang started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            record("hang cancelled")
            raise
    else:
        await respond(send, b"ok")


async def websocket(scope, receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record(f"disconnect {message['code']}")
            return
        text = message.get("text")
        if text is not None and text.startswith("burst "):
            count = int(text.split()[1])
            for number in range(count):
                await send({"type": "websocket.send", "text": str(number)})
            record(f"burst sent {count}")
        elif text is not None and text.startswith("big "):
            # Sends that outrun a client that does not read: the app ends up waiting in send()
            # (backpressure) with frames in the server's buffer. Each completed send is recorded.
            count, size = map(int, text.split()[1:])
            client_port = scope["client"][1]
            for number in range(count):
                await send({"type": "websocket.send", "text": str(number).ljust(size)})
                record(f"sent {client_port} {number}")
        elif text == "scheme":
            await send({"type": "websocket.send", "text": scope["scheme"]})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def websocket_hang(receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        record("ws hang cancelled")
        raise
