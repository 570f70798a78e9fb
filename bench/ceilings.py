"""The two ceilings of the benchmark: servers that are not ASGI servers.

    python bench/ceilings.py picows --port N   picows (Cython) WebSocket server on uvloop: echo on
                                               any path, broadcast to every connection on
                                               /broadcast
    python bench/ceilings.py picows-task --port N   the same picows server with the one cost ASGI
                                               adds per message: each connection's echo is a
                                               coroutine in its own task, woken by a Future per
                                               message, receiving and sending event dicts
    python bench/ceilings.py raw --port N      raw uvloop TCP echo: a Protocol that writes back
                                               every byte it reads (no WebSocket at all; its
                                               client must reflect/count raw bytes)

All listen on 127.0.0.1 only and print "ceiling ready on 127.0.0.1:PORT" to stderr.

picows-task is a floor for ASGI servers over picows' parser, not a server: an ASGI app awaits
`receive()` for every message, so its task is woken through a Future and the event loop once per
message, which picows' callback (`on_ws_frame` sending at once) never pays. Its receive/send are
plain Python, so a server with compiled ones can go below it; what it shows is how much of
picows' lead is that contract rather than the server's code.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys


def _picows_server(port: int, backlog: int, with_task: bool = False):
    from picows import WSListener, WSMsgType, ws_create_server

    data_types = (WSMsgType.BINARY, WSMsgType.TEXT)
    peers: set = set()

    class Echo(WSListener):
        # Backpressure: stop reading while the peer does not read what we echo.
        def pause_writing(self):
            self.raw.pause_reading()

        def resume_writing(self):
            self.raw.resume_reading()

        def on_ws_connected(self, transport):
            self.raw = transport.underlying_transport

        def on_ws_frame(self, transport, frame):
            msg_type = frame.msg_type
            if msg_type in data_types or msg_type == WSMsgType.CONTINUATION:
                transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)
            elif msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    class Broadcast(WSListener):
        def pause_writing(self):
            pass

        def resume_writing(self):
            pass

        def on_ws_connected(self, transport):
            peers.add(transport)

        def on_ws_disconnected(self, transport):
            peers.discard(transport)

        def on_ws_frame(self, transport, frame):
            msg_type = frame.msg_type
            if msg_type in data_types:
                payload = frame.get_payload_as_bytes()
                for peer in list(peers):
                    peer.send(msg_type, payload)
            elif msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    class TaskEcho(WSListener):
        """Echo as an ASGI app does it: `await receive()` gives an event dict (waiting on a
        Future when nothing is queued), `await send(event)` writes it. Complete messages only
        (the benchmark's); a Close ends the task."""

        def on_ws_connected(self, transport):
            self.transport = transport
            self.queue = collections.deque()
            self.waiter = None
            self.task = asyncio.get_running_loop().create_task(self.app())

        def on_ws_disconnected(self, transport):
            self.task.cancel()

        def on_ws_frame(self, transport, frame):
            msg_type = frame.msg_type
            if msg_type in data_types:
                self.queue.append(frame.get_payload_as_bytes())
                waiter, self.waiter = self.waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

        async def receive(self):
            while not self.queue:
                self.waiter = asyncio.Future()
                await self.waiter
            return {"type": "websocket.receive", "bytes": self.queue.popleft()}

        async def send(self, event):
            self.transport.send(WSMsgType.BINARY, event["bytes"])

        async def app(self):
            while True:
                event = await self.receive()
                await self.send({"type": "websocket.send", "bytes": event["bytes"]})

    def factory(request):
        if request.path.startswith(b"/broadcast"):
            return Broadcast()
        return TaskEcho() if with_task else Echo()

    return ws_create_server(factory, "127.0.0.1", port, backlog=backlog,
                            websocket_handshake_timeout=10, max_frame_size=64 * 1024 * 1024)


class _RawEcho(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):  # the peer reads slower than it writes: stop reading
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def _main(kind: str, port: int, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    if kind in ("picows", "picows-task"):
        server = await _picows_server(port, backlog, with_task=kind == "picows-task")
    else:
        server = await loop.create_server(_RawEcho, "127.0.0.1", port, backlog=backlog)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    actual = server.sockets[0].getsockname()[1]
    print(f"ceiling ready on 127.0.0.1:{actual}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("picows", "picows-task", "raw"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args.kind, args.port, args.backlog))


if __name__ == "__main__":
    main()
