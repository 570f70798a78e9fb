"""The two ceilings of the benchmark: servers that are not ASGI servers.

    python bench/ceilings.py picows --port N   picows (Cython) WebSocket server on uvloop: echo on
                                               any path, broadcast to every connection on
                                               /broadcast
    python bench/ceilings.py picows-task --port N   the same picows server with the one cost ASGI
                                               adds per message: each connection's echo is a
                                               coroutine in its own task, woken by a Future per
                                               message, receiving and sending event dicts
    python bench/ceilings.py picows-wake --port N   the same with only the task: the payload
                                               handed to the connection's task through one
                                               Future, the echo sent from the task
    python bench/ceilings.py raw --port N      raw uvloop TCP echo: a Protocol that writes back
                                               every byte it reads (no WebSocket at all; its
                                               client must reflect/count raw bytes)
    python bench/ceilings.py raw-frame --port N   raw TCP echo that stores and forwards whole
                                               WebSocket frames: each frame written back once
                                               it has all arrived (masked, as received)

All listen on 127.0.0.1 only and print "ceiling ready on 127.0.0.1:PORT" to stderr.

picows-task is a floor for ASGI servers over picows' parser, not a server: an ASGI app awaits
`receive()` for every message, so its task is woken through a Future and the event loop once per
message, which picows' callback (`on_ws_frame` sending at once) never pays. Its receive/send are
plain Python, so a server with compiled ones can go below it; what it shows is how much of
picows' lead is that contract rather than the server's code.

raw-frame is the same kind of floor for large messages. The raw echo forwards each read as it
comes (at most 256 KiB, still in cache); a server of messages cannot: an ASGI app gets a whole
message and sends a whole message, so a 1 MiB message is held until its last byte arrives and
then written in one piece. raw-frame does only that — no unmasking, no parsing beyond the frame
header, no Python per byte: it reads a large frame straight into a buffer of the frame's size
(reused while the transport holds no unsent bytes) and writes it once it is complete. Measured
against it, a WebSocket server pays for what the protocol and ASGI add, not for the shape of a
message-at-a-time exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys


def _picows_server(port: int, backlog: int, app: str = ""):
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

    class AppTask(WSListener):
        """A connection whose echo runs in its own task (`app`), as an ASGI app does: the
        messages it has not taken yet queue, and `waiter` is the Future it waits on."""

        def on_ws_connected(self, transport):
            self.transport = transport
            self.queue = collections.deque()
            self.waiter = None
            self.task = asyncio.get_running_loop().create_task(self.app())

        def on_ws_disconnected(self, transport):
            self.task.cancel()

    class TaskEcho(AppTask):
        """Echo as an ASGI app does it: `await receive()` gives an event dict (waiting on a
        Future when nothing is queued), `await send(event)` writes it. Complete messages only
        (the benchmark's); a Close ends the task."""

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

    class WakeEcho(AppTask):
        """The least a server that runs its app in a task can do per message: the payload
        handed to the waiting task through one Future (or queued, when the task is not
        waiting: pipelined messages), the task woken by the loop, the echo sent from the task.
        No event dicts, no receive/send coroutines, no limits."""

        def on_ws_frame(self, transport, frame):
            msg_type = frame.msg_type
            if msg_type in data_types:
                waiter = self.waiter
                if waiter is None:
                    self.queue.append(frame.get_payload_as_bytes())
                else:
                    self.waiter = None
                    waiter.set_result(frame.get_payload_as_bytes())
            elif msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

        async def app(self):
            loop = asyncio.get_running_loop()
            send, binary, queue = self.transport.send, WSMsgType.BINARY, self.queue
            while True:
                if queue:
                    send(binary, queue.popleft())
                    continue
                self.waiter = loop.create_future()
                send(binary, await self.waiter)

    listeners = {"": Echo, "task": TaskEcho, "wake": WakeEcho}

    def factory(request):
        if request.path.startswith(b"/broadcast"):
            return Broadcast()
        return listeners[app]()

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


class _FrameEcho(asyncio.BufferedProtocol):
    """Store-and-forward echo of WebSocket frames (see the module docstring): small frames are
    parsed out of a staging buffer and written back together once per read; a frame larger
    than that buffer is read straight into a buffer of its own and written back whole."""

    STAGING = 64 * 1024

    def connection_made(self, transport):
        self.transport = transport
        self.staging = bytearray(self.STAGING)
        self.filled = 0  # bytes of self.staging in use
        self.frame = None  # the large frame being filled, or None
        self.frame_filled = 0
        self.spare = None  # a written frame's buffer the transport no longer holds

    def get_buffer(self, sizehint):
        if self.frame is not None:
            return memoryview(self.frame)[self.frame_filled:]
        return memoryview(self.staging)[self.filled:]

    def buffer_updated(self, nbytes):
        if self.frame is not None:
            self.frame_filled += nbytes
            if self.frame_filled == len(self.frame):
                self._write_large(self.frame)
                self.frame = None
            return
        self.filled += nbytes
        data, start, end = self.staging, 0, self.filled
        large = 0  # the length of a frame too large for the staging buffer, begun at `start`
        while end - start >= 2:
            length = data[start + 1] & 0x7F
            header = 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4  # masked
            if end - start < header:
                break
            if length == 126:
                length = int.from_bytes(data[start + 2:start + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[start + 2:start + 10], "big")
            total = header + length
            if end - start >= total:
                start += total
                continue
            if total > len(data):
                large = total
            break
        if start:  # the complete frames, together
            self.transport.write(bytes(data[:start]))
        if large:  # the rest of it goes straight into a buffer of its own
            frame = self.spare if self.spare is not None and len(self.spare) == large else bytearray(large)
            self.spare = None
            frame[:end - start] = data[start:end]
            self.frame, self.frame_filled, self.filled = frame, end - start, 0
            return
        if start:
            data[:end - start] = data[start:end]
        self.filled = end - start

    def _write_large(self, frame):
        self.transport.write(frame)
        if self.transport.get_write_buffer_size() == 0:
            self.spare = frame  # written in full: nothing refers to it any more

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def _main(kind: str, port: int, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    if kind in ("picows", "picows-task", "picows-wake"):
        server = await _picows_server(port, backlog, app=kind.partition("-")[2])
    else:
        protocol = _FrameEcho if kind == "raw-frame" else _RawEcho
        server = await loop.create_server(protocol, "127.0.0.1", port, backlog=backlog)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    actual = server.sockets[0].getsockname()[1]
    print(f"ceiling ready on 127.0.0.1:{actual}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("picows", "picows-task", "picows-wake", "raw", "raw-frame"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args.kind, args.port, args.backlog))


if __name__ == "__main__":
    main()
