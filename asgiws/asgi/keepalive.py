"""WebSocket keepalive: one timer per event loop for every open connection's Ping.

A Ping is due `ws_ping_interval` after the previous one (or after the 101). Connections wait in
slots of `tick` seconds (a quarter of the interval, at most 1 s): the ping goes out between
`interval` and `interval + tick` after the last. One timer, armed for the earliest slot, serves
them all — a TimerHandle per connection would be four more objects per idle connection for the
garbage collector to walk on every full collection (a TimerHandle, libuv's timer, a Context
and a bound method: ~400 bytes), and 10,000 timers expiring in one loop iteration would be sent
in one go. Here at most _PINGS_PER_TURN connections are pinged per loop turn; the rest wait
for the next turn.

The Pong's deadline (`ws_ping_timeout`) stays a timer of the connection's own: it exists only
while a Ping is unanswered, a few milliseconds for a live peer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Any, Dict, List, Set

from .per_loop import LoopBound

logger = logging.getLogger("asgiws.error")

# Ping timing granularity, as a fraction of the interval (capped at _MAX_TICK seconds).
_TICKS_PER_INTERVAL = 4
_MAX_TICK = 1.0
# Connections pinged per loop turn at most.
_PINGS_PER_TURN = 256
# uvloop rounds timers to the millisecond: a slot counts as reached this early.
_EARLY = 0.002


class Keepalive(LoopBound):
    """The keepalive of the connections on one loop that share one ping interval. A connection
    is a protocol with a `ping_slot` attribute (0: not waiting) and a `_send_ping()` method."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        super().__init__(loop)  # held weakly (per_loop says why)
        self.interval = interval
        self.tick = min(_MAX_TICK, interval / _TICKS_PER_INTERVAL)
        # slot number (time // tick) -> the connections whose Ping is due in it. Bound: one
        # entry per open connection; at most interval / tick + 2 slots.
        self.slots: Dict[int, Set[Any]] = {}
        self.timer: Any = None
        # Due connections not pinged yet (more than one turn's worth came due at once). While
        # there are any, _ping_some() runs each turn and the timer is not armed: one chain of
        # turns at a time, so the per-turn bound holds.
        self.due: List[Any] = []

    def add(self, protocol: Any) -> None:
        """Ping `protocol` one interval from now."""
        slot = math.ceil((self.loop.time() + self.interval) / self.tick)
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
        members.add(protocol)
        protocol.ping_slot = slot
        if self.timer is None and not self.due:
            self._arm()

    def discard(self, protocol: Any) -> None:
        slot = protocol.ping_slot
        if slot:
            protocol.ping_slot = 0
            members = self.slots.get(slot)
            if members is not None:
                members.discard(protocol)
                if not members:
                    del self.slots[slot]

    def _arm(self) -> None:
        if self.slots:
            self.timer = self.loop.call_at(min(self.slots) * self.tick, self._fire)
        else:
            self.timer = None

    def _fire(self) -> None:
        self.timer = None
        draining = bool(self.due)  # a chain of turns is already under way: it takes these too
        reached = (self.loop.time() + _EARLY) / self.tick
        for slot in sorted(slot for slot in self.slots if slot <= reached):
            for protocol in self.slots.pop(slot):
                protocol.ping_slot = 0
                self.due.append(protocol)
        if not draining:
            self._ping_some()

    def _ping_some(self) -> None:
        due = self.due
        batch, self.due = due[:_PINGS_PER_TURN], due[_PINGS_PER_TURN:]
        for protocol in batch:
            try:
                protocol._send_ping()  # may add it again, for the next interval
            except Exception:  # one broken connection must not stop the others' keepalive
                logger.exception("Error sending a WebSocket keepalive Ping")
        if self.due:
            self.loop.call_soon(self._ping_some)
        elif self.timer is None:
            self._arm()


_keepalives: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[float, Keepalive]]" = \
    weakref.WeakKeyDictionary()


def keepalive(loop: asyncio.AbstractEventLoop, interval: float) -> Keepalive:
    """The loop's Keepalive for this interval (one per server, in practice)."""
    by_interval = _keepalives.get(loop)
    if by_interval is None:
        by_interval = _keepalives[loop] = {}
    found = by_interval.get(interval)
    if found is None:
        found = by_interval[interval] = Keepalive(loop, interval)
    return found
