"""Sending a file as a response body: the `http.response.pathsend` extension.

uvloop has no `loop.sendfile`, so the file is sent by hand, in one of two ways:

- **sendfile** (plain TCP and Unix sockets): once the transport's write buffer is empty (the
  response head and anything before it must reach the socket first), `os.sendfile` copies from
  the file to the socket inside the kernel. The socket is non-blocking; each step sends at most
  SENDFILE_STEP bytes, and when the socket is full the next step waits for it to be writable
  (`loop.add_writer`, on a duplicate of the socket's descriptor: the loop refuses a descriptor
  its transport owns). Copies: none in user space.
- **read and write** (TLS, where the bytes must be encrypted by the transport, and wherever
  sendfile is refused): `os.pread` into a bytes object of at most FALLBACK_CHUNK, handed to
  `transport.write`, pacing on the write high-water mark as `await send()` does. Copies: one per
  chunk (the read), besides what TLS does.

Both keep what the HTTP layer guarantees: the loop is never blocked on the socket and one file
gets a bounded share of each loop turn; a peer that reads nothing for --timeout-write-stall is
dropped; a peer that goes away ends the transfer at once (`abort()`), the descriptors are closed
whatever happens, and the app's `send()` raises `ClientDisconnected`. Reading the file itself is
a plain `read` / `sendfile` on the loop: instant from the page cache, a disk's latency when not
(as nginx without `aio threads`): keep files served this way on local storage.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any, Callable, Optional

from asgiws.asgi import ClientDisconnected
from asgiws.stall import WriteStallWatch

# Bytes one sendfile() call may send: the socket's buffer usually takes less, and then the next
# call waits for it to drain. Bounds the kernel's work (page-cache copy) per loop turn.
SENDFILE_STEP = 1 << 20
# The read-and-write fallback reads this much at a time: no more than the write high-water mark
# (64 KiB), so a chunk never lands far above it.
FALLBACK_CHUNK = 65536
# The fallback yields the loop after this many bytes even when the transport keeps up.
FALLBACK_TURN = 1 << 20

# sendfile() errors that mean "not on this kind of descriptor": use read and write instead.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.EBADF}


class FileSender:
    """Send `count` bytes of the open file `fd` from `offset` on the connection's transport.

    `run()` returns once every byte is out of user space (in the kernel's socket buffer or the
    transport's); raises ClientDisconnected when the connection is lost first, RuntimeError when
    the file turns out shorter than `count` (it was truncated while being sent).
    """

    def __init__(self, conn: Any, fd: int, offset: int, count: int,
                 on_stall: Callable[[int], None], stall_timeout: Optional[float]) -> None:  # fmt: skip
        self.conn = conn
        self.transport: asyncio.Transport = conn.transport
        self.loop = asyncio.get_running_loop()
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.on_stall = on_stall
        self.stall_timeout = stall_timeout
        self._waiter: Optional[asyncio.Future[None]] = None  # run() waits on it; set by a step or abort()
        self._error: Optional[BaseException] = None
        self._stall: Optional[WriteStallWatch] = None  # --timeout-write-stall, while waiting for the socket
        self._sock_fd = -1  # our duplicate of the socket's descriptor, while sendfile runs

    def abort(self) -> None:
        """The connection is lost: end the transfer (called by the request cycle's wake())."""
        self._finish(ClientDisconnected("the HTTP connection is closed"))

    async def run(self) -> None:
        if self.remaining <= 0:
            return
        sock = self.transport.get_extra_info("socket")
        use_sendfile = (
            hasattr(os, "sendfile") and sock is not None and self.transport.get_extra_info("sslcontext") is None
        )
        if use_sendfile:
            await self._wait_empty()
            if await self._run_sendfile(sock.fileno()):
                return
        await self._run_fallback()

    # -- sendfile ------------------------------------------------------------------------------

    async def _wait_empty(self) -> None:
        """Wait until the transport has written everything it holds: sendfile must not overtake
        it. A high-water mark of 0 makes the transport call pause_writing now and resume_writing
        when its buffer is empty: the connection's own drain() then waits for exactly that."""
        transport = self.transport
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            await self.conn.drain()
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)
        self._check_open()

    async def _run_sendfile(self, sock_fd: int) -> bool:
        """Send with os.sendfile; False if the kernel refuses it on this socket before the first
        byte (then the fallback sends it all)."""
        self._check_open()
        try:
            sent = os.sendfile(sock_fd, self.fd, self.offset, min(self.remaining, SENDFILE_STEP))
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            if exc.errno in _NO_SENDFILE:
                return False
            self._lost(exc)
            raise ClientDisconnected(str(exc)) from None
        else:
            if sent == 0:
                raise RuntimeError("File shorter than its response's Content-Length (changed while sent?).")
        self._advance(sent)
        if self.remaining <= 0:
            return True
        # The socket took less than asked, or nothing: wait for writability, step by step.
        self._sock_fd = os.dup(sock_fd)  # the loop refuses add_writer on a transport's own fd
        if self.stall_timeout is not None:
            self._stall = WriteStallWatch(self.loop, self.transport, self.stall_timeout, self.on_stall)
            self._stall.start()
        try:
            self._waiter = self.loop.create_future()
            self.loop.add_writer(self._sock_fd, self._sendfile_step)
            await self._waiter
            if self._error is not None:
                raise self._error
        finally:
            if self._stall is not None:
                self._stall.stop()
                self._stall = None
            self.loop.remove_writer(self._sock_fd)
            os.close(self._sock_fd)
            self._sock_fd = -1
            self._waiter = None
        return True

    def _sendfile_step(self) -> None:
        """The socket is writable: one sendfile() call, bounded by SENDFILE_STEP."""
        if self.transport.is_closing():
            self._finish(ClientDisconnected("the HTTP connection is closed"))
            return
        try:
            sent = os.sendfile(self._sock_fd, self.fd, self.offset, min(self.remaining, SENDFILE_STEP))
        except BlockingIOError:
            return
        except OSError as exc:  # EPIPE, ECONNRESET: the peer is gone
            self._lost(exc)
            self._finish(ClientDisconnected(str(exc)))
            return
        if sent == 0:
            self._finish(RuntimeError("File shorter than its response's Content-Length (changed while sent?)."))
            return
        self._advance(sent)
        if self.remaining <= 0:
            self._finish(None)
        elif self._stall is not None:
            # Progress: the stall clock restarts from what is unsent now. (The watch alone would
            # see the kernel's queue refilled by each step and take a steady reader for a stall.)
            self._stall.stop()
            self._stall.start()

    # -- read and write ------------------------------------------------------------------------

    async def _run_fallback(self) -> None:
        transport, conn = self.transport, self.conn
        since_yield = 0
        while self.remaining > 0:
            self._check_open()
            # Copies: one, the read into a new bytes object (handed to the transport as it is).
            data = os.pread(self.fd, min(self.remaining, FALLBACK_CHUNK), self.offset)
            if not data:
                raise RuntimeError("File shorter than its response's Content-Length (changed while sent?).")
            transport.write(data)
            self._advance(len(data))
            since_yield += len(data)
            if conn.write_paused:
                await conn.drain()  # the connection's stall watch bounds this wait
                since_yield = 0
            elif since_yield >= FALLBACK_TURN:
                await asyncio.sleep(0)  # a fast reader: still let the other connections run
                since_yield = 0
        self._check_open()

    # -- shared --------------------------------------------------------------------------------

    def _advance(self, sent: int) -> None:
        self.offset += sent
        self.remaining -= sent

    def _check_open(self) -> None:
        if self.transport.is_closing() or self._error is not None:
            raise ClientDisconnected("the HTTP connection is closed")

    def _lost(self, exc: OSError) -> None:
        """The socket failed under sendfile (the peer reset it): the transport must learn too."""
        if not self.transport.is_closing():
            self.transport.abort()

    def _finish(self, error: Optional[BaseException]) -> None:
        if self._error is None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._sock_fd >= 0:
            self.loop.remove_writer(self._sock_fd)
