"""How a helper kept once per event loop refers to its loop.

The WebSocket write coalescer, the keepalive and the connection-end queue are one per event loop,
each the value of a `weakref.WeakKeyDictionary` keyed by its loop, so that the entry goes when the
loop does. A strong reference from such a value back to its key keeps the key alive as long as
the dictionary (the module's life): every loop that ever ran a WebSocket stayed in memory,
~260 KiB each with uvloop, and a process that serves, stops and serves again grew by that much
each time. So they hold their loop weakly, through LoopBound (the compiled coalescer, a cdef
class, holds a `weakref.ref` of its own for the same reason).
"""

from __future__ import annotations

import asyncio
import weakref


class LoopBound:
    """A per-loop helper: `self.loop` is its loop, held through a weak reference."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        assert loop is not None  # alive while its callbacks run
        return loop
