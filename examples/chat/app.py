"""A FastAPI chat room that spans every worker and every instance, through Redis pub/sub.

    REDIS_URL=redis://127.0.0.1:6379/0 CHAT_INSTANCE=a CHAT_TOKENS=tok-alice=alice \
        asgiws app:app --app-dir examples/chat --workers 4

Each process (a worker of `--workers N`, or an instance of its own) holds one Redis connection
subscribed to one channel, and fans each message out to the WebSockets connected to it. A
message a client sends is published to that channel, so it reaches every client of every
process, in the order Redis received it. docs/scaling.md explains the layout and its limits
(Redis pub/sub is at-most-once), docs/fastapi.md the authentication.

The protocol, JSON text messages:
    server -> client, first:  {"type": "hello", "user", "instance", "pid"}
    client -> server:         {"text": "..."}
    server -> client, each:   {"type": "message", "sender", "seq", "text", "instance", "pid"}
where "sender" names the sending connection and "seq" counts that connection's messages from 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
from typing import Dict, Optional, Set, Tuple

from fastapi import FastAPI, WebSocket, status

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - said once, at import, instead of a traceback later
    raise SystemExit("examples/chat needs the redis client: pip install 'redis>=5' fastapi") from None

logger = logging.getLogger("chat")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = os.environ.get("CHAT_CHANNEL", "chat")
# Which instance a client reached, for the hello message (one name per asgiws instance or host).
INSTANCE = os.environ.get("CHAT_INSTANCE") or socket.gethostname()
# token=user pairs. A real app checks a signed token (a JWT, a session) here instead.
TOKENS: Dict[str, str] = dict(
    pair.split("=", 1) for pair in os.environ.get("CHAT_TOKENS", "").split(",") if "=" in pair
)

# Bounds, so that no client can make a process hold more than about 1 MiB for it:
MAX_TEXT = 4096  # characters in one message; a longer one closes the WebSocket with 1008
OUTBOX_BYTES = 1024 * 1024  # waiting for one slow client, in bytes; past that it is cut off with 1013
MESSAGE_OVERHEAD = 128  # bytes each queued message costs besides its text (the str and the tuple)

_connection_ids = itertools.count(1)


class Client:
    """One WebSocket of this process, with the queue its writer task drains."""

    def __init__(self, websocket: WebSocket, user: str) -> None:
        self.websocket = websocket
        self.user = user
        self.sender = f"{user}@{INSTANCE}/{os.getpid()}/{next(_connection_ids)}"
        # (text, cost) pairs; unbounded in count, bounded in bytes by Room._read through `queued`.
        self.outbox: asyncio.Queue[Tuple[str, int]] = asyncio.Queue()
        self.queued = 0
        self.too_slow = False


class Room:
    """This process's half of the chat: one Redis subscription, fanned out to local clients."""

    def __init__(self) -> None:
        self.redis: Optional[aioredis.Redis] = None
        self.clients: Set[Client] = set()
        self._reader: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self.redis = aioredis.from_url(REDIS_URL)  # bytes: a message's size is known before decoding
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        # Subscribe before the server accepts anyone (this runs in lifespan startup), so that a
        # client that got its hello gets every message published after it.
        await pubsub.subscribe(CHANNEL)
        self._reader = asyncio.create_task(self._read(pubsub))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.redis is not None:
            await self.redis.aclose()

    async def publish(self, client: Client, seq: int, text: str) -> None:
        message = {"type": "message", "sender": client.sender, "seq": seq, "text": text,
                   "instance": INSTANCE, "pid": os.getpid()}  # fmt: skip
        await self.redis.publish(CHANNEL, json.dumps(message))

    async def _read(self, pubsub) -> None:
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                data = message["data"]
                text, cost = data.decode(), len(data) + MESSAGE_OVERHEAD  # one decode for every client
                for client in list(self.clients):
                    if client.queued + cost > OUTBOX_BYTES:
                        # The same rule Redis applies to us (client-output-buffer-limit pubsub):
                        # a client that does not keep up is cut off, not buffered without end.
                        self.clients.discard(client)
                        client.too_slow = True
                        continue
                    client.queued += cost
                    client.outbox.put_nowait((text, cost))
        finally:
            await pubsub.aclose()


room = Room()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    await room.start()
    yield
    await room.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict:
    await room.redis.ping()  # not ready while Redis is unreachable
    return {"instance": INSTANCE, "pid": os.getpid()}


def user_for(websocket: WebSocket) -> Optional[str]:
    # Browsers cannot set headers on a WebSocket, so the token comes in the query string
    # (wss://host/ws?token=...). asgiws's access log leaves the query string out; nginx's
    # default log format does not, so use short-lived tokens.
    return TOKENS.get(websocket.query_params.get("token", ""))


@app.websocket("/ws")
async def chat(websocket: WebSocket) -> None:
    user = user_for(websocket)
    if user is None:
        # Before accept: the handshake is refused with HTTP 403 and the app never holds a
        # WebSocket for a stranger.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    client = Client(websocket, user)
    await websocket.send_json({"type": "hello", "user": user, "instance": INSTANCE, "pid": os.getpid()})
    room.clients.add(client)
    writer = asyncio.create_task(_write(client))
    try:
        seq = 0
        while (text := await _receive_text(websocket)) is not None:
            seq += 1
            await room.publish(client, seq, text)
    finally:
        room.clients.discard(client)
        writer.cancel()
        # Collect the writer's end, which may be a send to a client already gone (OSError).
        await asyncio.gather(writer, return_exceptions=True)


async def _receive_text(websocket: WebSocket) -> Optional[str]:
    """The next message's text; None once the client is gone, or closed for breaking the protocol."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    try:
        text = json.loads(message.get("text") or "")["text"]
    except (ValueError, KeyError, TypeError):
        text = None
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        # After accept, a refusal is a Close frame: 1008, policy violation.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="send {\"text\": ...} up to 4096 characters")
        return None
    return text


async def _write(client: Client) -> None:
    while not client.too_slow:
        text, cost = await client.outbox.get()
        client.queued -= cost
        # await send() waits while the client's socket is full (asgiws's backpressure); the
        # outbox above is what bounds the wait.
        await client.websocket.send_text(text)
    await client.websocket.close(code=status.WS_1013_TRY_AGAIN_LATER, reason="too slow")
