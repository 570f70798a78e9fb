"""The loop's WebSocket Keepalive (asgiws/asgi/keepalive.py), on a real event loop: when Pings
go out, how many per loop turn, and that a closed connection leaves it."""

import asyncio
import gc
import weakref

import pytest
import uvloop

from asgiws.asgi import keepalive as keepalive_module
from asgiws.asgi.keepalive import Keepalive


class Peer:
    """Stands for a WebSocketProtocol: what the Keepalive uses of one."""

    def __init__(self, log, again=None):
        self.ping_slot = 0
        self.log = log
        self.again = again

    def _send_ping(self):
        self.log.append((self, asyncio.get_running_loop().time()))
        if self.again is not None:
            self.again.add(self)


class FrozenClock:
    """The loop, with time() read once."""

    def __init__(self, loop):
        self._loop = loop
        self._now = loop.time()

    def time(self):
        return self._now

    def __getattr__(self, name):
        return getattr(self._loop, name)


def run(coroutine):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coroutine, 10))
    finally:
        loop.close()


def test_a_ping_goes_out_between_one_interval_and_one_tick_later():
    async def main():
        loop = asyncio.get_running_loop()
        keepalive = Keepalive(loop, 0.2)
        log = []
        started = loop.time()
        peer = Peer(log, again=keepalive)
        keepalive.add(peer)
        while len(log) < 3:
            await asyncio.sleep(0.01)
        keepalive.discard(peer)
        return started, [t for _, t in log], keepalive.tick
    started, times, tick = run(main())
    previous = started
    for t in times:
        assert 0.2 - 0.003 <= t - previous <= 0.2 + tick + 0.05
        previous = t


@pytest.mark.parametrize("again", [False, True], ids=["once", "rescheduled"])
def test_connections_due_together_are_pinged_a_batch_per_loop_turn(again):
    """Also when each Ping schedules the next (as WebSocketProtocol._send_ping does): the timer
    is not armed again while due connections wait, so one chain of turns runs at a time."""
    async def main():
        loop = asyncio.get_running_loop()
        keepalive = Keepalive(loop, 0.05)
        turn = [0]
        log = []

        def next_turn():  # counts loop turns until every peer is pinged
            turn[0] += 1
            if len(log) < 1000:
                loop.call_soon(next_turn)

        class TurnPeer(Peer):
            def _send_ping(self):
                if len(self.log) < 1000:
                    self.log.append((self, turn[0]))
                    if again:
                        keepalive.add(self)

        peers = [TurnPeer(log) for _ in range(1000)]
        # The same clock reading for every add: on a loaded machine 1000 adds can straddle a
        # slot boundary (a tick is 12.5 ms here), and two groups would come due, not one.
        frozen = FrozenClock(loop)
        keepalive._loop = lambda: frozen  # (it holds its loop through a weak reference)
        for peer in peers:
            keepalive.add(peer)
        keepalive._loop = weakref.ref(loop)
        loop.call_soon(next_turn)
        while len(log) < len(peers):
            await asyncio.sleep(0.01)
        return log
    log = run(main())
    assert len({peer for peer, _ in log}) == 1000
    per_turn = {}
    for _, turn in log:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) == keepalive_module._PINGS_PER_TURN
    assert len(per_turn) == -(-1000 // keepalive_module._PINGS_PER_TURN)


def test_a_discarded_connection_is_not_pinged_and_leaves_no_slot():
    async def main():
        loop = asyncio.get_running_loop()
        keepalive = Keepalive(loop, 0.05)
        log = []
        kept, dropped = Peer(log), Peer(log)
        keepalive.add(kept)
        keepalive.add(dropped)
        keepalive.discard(dropped)
        assert dropped.ping_slot == 0
        while not log:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        return log, keepalive.slots
    log, slots = run(main())
    assert [peer for peer, _ in log] == [log[0][0]] and log[0][0].ping_slot == 0
    assert slots == {}


@pytest.mark.parametrize("make_loop", [uvloop.new_event_loop, asyncio.new_event_loop],
                         ids=["uvloop", "asyncio"])
def test_the_per_loop_helpers_let_their_loop_go(make_loop):
    """The write coalescer (compiled and pure), the keepalive and the connection ends are one per
    loop, in dictionaries keyed weakly by the loop: none of them may hold its loop strongly, or
    the entry would keep a closed loop alive for good (~260 KiB each with uvloop) — a process
    that serves, stops and serves again would grow by that much every time."""
    from asgiws.asgi import _bridge_py, websocket
    from asgiws.asgi.bridge import coalescer_for_loop
    from asgiws.asgi.keepalive import keepalive

    loop = make_loop()
    helpers = [coalescer_for_loop(loop), _bridge_py.coalescer_for_loop(loop),
               keepalive(loop, 20.0), websocket.connection_ends(loop)]
    assert all(helper is not None for helper in helpers)
    loop.close()
    gone = weakref.ref(loop)
    del loop, helpers
    gc.collect()
    assert gone() is None
