"""Spreading connections over `--workers N` that accept from one listening socket.

Every worker waits on the same listening socket, and libuv accepts until the queue is empty, so
the worker that runs first when a burst of connects arrives takes all of it; on a busy machine
the others may not run at all before the queue is drained (bench/RESULTS.md, the deploy table:
64 WebSockets on one worker, 0 on the other). Short HTTP exchanges even out; long-lived
WebSockets keep the imbalance for as long as they are open.

So each worker writes how many connections it holds into its slot of a small table in shared
memory (`ConnectionTable`, made by the supervisor before the first fork), and a worker that holds
more than its share stops accepting for a moment: it closes its listener, a duplicate of the
shared socket, so the socket and its queue stay and the other workers serve them; it listens again
once it is back within its share.

    share  = connections held by all workers / N
    margin = max(MARGIN_MIN, share × MARGIN_FRACTION)
    pause when mine > share + margin; listen again when mine ≤ share + margin / 2

A pause is bounded: after MAX_PAUSE in which the other workers took no new connection, the
worker listens again whatever its share (one that is stopped, or stuck in a handler that holds
its loop, must not leave the queue unserved), and then does not pause for COOLDOWN. The worst
case is the shared queue as it was, plus MAX_PAUSE in the backlog for the connects that arrived
meanwhile. While the others do take connections (a worker just started beside one that holds a
thousand WebSockets), the pause goes on, MAX_PAUSE at a time, until the shares meet.

Why not a listening socket per worker with SO_REUSEPORT: the kernel's hash spreads connects evenly
but cannot see how busy a worker is, and a connection queued on one worker's socket waits for
that worker (stopped, or being replaced: reset when its socket closes), where a shared queue is
served by whichever worker is free.

The check runs as each connection is made (connection_made, after libuv's accept loop):
connects already queued when the workers wake go to whichever worker's accept() wins each, which
spreads them when the workers run at once (64 queued while both were stopped, then continued:
31/33, 28/36), and a worker that runs alone pauses at its next connection after the margin.

Counts are published when a connection is made (where the decision is taken) and every
PUBLISH_INTERVAL (so closed connections are seen); a reader may see a count a moment old, which
the margin absorbs. One writer per slot and aligned 8-byte stores: no lock.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
from typing import Any, Callable, Optional

logger = logging.getLogger("asgiws.error")

MARGIN_MIN = 4  # connections: small counts never pause
MARGIN_FRACTION = 0.125
MAX_PAUSE = 0.25  # seconds
COOLDOWN = 1.0  # seconds without pausing after a pause that ran out
CHECK_INTERVAL = 0.005  # seconds between checks while paused
PUBLISH_INTERVAL = 0.25  # seconds between counts published while accepting


class ConnectionTable:
    """Open connections per worker slot, in memory shared by the supervisor's forks."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, 8 * slots)  # anonymous and MAP_SHARED: forks see one table
        self._counts = memoryview(self._memory).cast("q")

    def set(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def clear(self, slot: int) -> None:
        """The supervisor, for a worker that exited: its connections are gone."""
        self._counts[slot] = 0

    def total(self) -> int:
        return sum(self._counts)


def margin(share: float) -> float:
    return max(MARGIN_MIN, share * MARGIN_FRACTION)


class AcceptBalance:
    """One worker's side: publish its count, pause and resume its listeners (module docstring).

    Given to its `asgiws.server.Server`, which calls `start(server)` once it listens, and whose
    protocols call `connection_opened()`; it pauses and resumes the server's listeners with
    `Server.pause_accepting()` / `resume_accepting()`."""

    def __init__(self, table: ConnectionTable, slot: int, workers: int) -> None:
        self.table = table
        self.slot = slot
        self.workers = workers
        self.server: Any = None
        self.loop: Any = None
        self.paused_at: Optional[float] = None
        self.others_at_pause = 0  # the other workers' connections when the pause (re)started
        self.cooldown_until = 0.0
        self._timer: Optional[asyncio.TimerHandle] = None
        self.stopped = False

    def start(self, server: Any) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self._publish_later()

    def stop(self) -> None:
        """Shutting down: no more pausing or resuming; the slot is the supervisor's to clear."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _count(self) -> int:
        return len(self.server.server_state.connections)

    def connection_opened(self) -> None:
        """Called by the protocol as each connection is made (the one place connections grow)."""
        if self.server is None or self.stopped:
            return
        mine = self._count()
        self.table.set(self.slot, mine)
        if self.paused_at is not None or self.loop.time() < self.cooldown_until:
            return
        total = self.table.total()
        share = total / self.workers
        if mine > share + margin(share):
            logger.debug("Worker [%d] holds %d connections, its share %.1f: not accepting for up to %gs",
                         os.getpid(), mine, share, MAX_PAUSE)  # fmt: skip
            self.paused_at = self.loop.time()
            self.others_at_pause = total - mine
            self.server.pause_accepting()
            self._schedule(CHECK_INTERVAL, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.stopped or self.paused_at is None:
            return
        mine = self._count()
        self.table.set(self.slot, mine)
        total = self.table.total()
        share = total / self.workers
        now = self.loop.time()
        if mine <= share + margin(share) / 2:
            logger.debug("Worker [%d] holds %d connections, its share %.1f: accepting again",
                         os.getpid(), mine, share)  # fmt: skip
        elif now - self.paused_at >= MAX_PAUSE and total - mine > self.others_at_pause:
            # The others are taking connections: keep leaving them the queue.
            self.paused_at, self.others_at_pause = now, total - mine
            self._schedule(CHECK_INTERVAL, self._check)
            return
        elif now - self.paused_at >= MAX_PAUSE:
            # The others did not take the queue: one may be stopped or busy. Serve it.
            logger.debug("Worker [%d] holds %d connections, its share %.1f, after %gs: accepting again "
                         "(not pausing for %gs)", os.getpid(), mine, share, MAX_PAUSE, COOLDOWN)  # fmt: skip
            self.cooldown_until = now + COOLDOWN
        else:
            self._schedule(CHECK_INTERVAL, self._check)
            return
        self.paused_at = None
        self.server.resume_accepting()
        self._publish_later()

    def _publish(self) -> None:
        self._timer = None
        if self.stopped or self.paused_at is not None:
            return
        self.table.set(self.slot, self._count())
        self._publish_later()

    def _publish_later(self) -> None:
        self._schedule(PUBLISH_INTERVAL, self._publish)

    def _schedule(self, delay: float, callback: Callable[[], Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, callback)
