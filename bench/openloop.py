"""Open-loop (fixed-rate) load generator: latency at a given offered load, one JSON on stdout.

    python bench/openloop.py '{"proto": "http", "host": "127.0.0.1", "port": 8000,
                               "conns": 64, "rates": [5000, 9000], "warmup": 1, "duration": 3}'
    python bench/openloop.py '{"proto": "ws", "url": "ws://127.0.0.1:8000/", "size": 32, ...}'

bench/latency.py runs it pinned to core 1 (`taskset -c 1`) against a server on core 0; it can
also be run by hand (add "server_pid" to get the server's CPU use).

What it does, like wrk2: a fixed total rate is spread over `conns` connections. Each connection
has its own schedule, one request every conns/rate seconds from a random phase, and keeps at
most one request outstanding. When a response is late the connection's next request goes out
as soon as that response arrives, and its latency is still counted from its *intended* send
time: a server that stalls is charged for every request the stall held back (coordinated
omission corrected), not only for the one it was answering. One rate after another (a "step"
each) runs on the same connections: `warmup` seconds of schedule, then `duration` seconds
whose requests are measured (by intended send time), then a drain of what is still due.

Sending on time: uvloop's timers tick in whole milliseconds, which would add up to 1 ms to every
latency, so the schedule is driven by a Linux timerfd armed at the next intended time (absolute,
CLOCK_MONOTONIC = time.monotonic(), nanoseconds), and with "realtime": true the generator runs
SCHED_FIFO (run_realtime says why). Every wake-up sends all requests that have come due. How late
those sends are against their intended time is the generator's own lag, reported
as `lag_*`; it is part of every latency, so a step whose lag p99 exceeds LAG_LIMIT_MS, or whose
generator was busy (running or waiting for its core) >= CLIENT_BUSY_LIMIT % of the window, is
flagged `client_bound`: that step measured the generator, not the server.

HTTP: an asyncio Protocol writes a keep-alive `GET /` and counts responses by Content-Length.
A server that closes an idle keep-alive connection (uvicorn's and asgiws's 5 s timeout, while
10,000 connections open) gets a new one at that connection's next request, whose latency then
includes the connect, as any client's would; `reopened` counts them. WebSocket: picows (the
client of bench/loadgen.py) sends a pre-masked binary frame of `size` bytes and waits for its
echo.

Output per step: intended, sent and achieved (responses) rate over the measured window;
latency p50/p90/p99/p99.9/max/mean in ms over the requests intended in the window; requests
still unanswered after the drain (`unfinished`, counted at the drain's end as a lower bound);
server and client CPU and core wait (bench/loadgen.py's CpuWindow); packets the kernel dropped
and TCP retransmission timeouts, machine-wide, from the window's start to the drain's end
(kernel_losses says why).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import os
import random
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loadgen import CpuWindow, client_frame, connect_all, payload_of  # noqa: E402

LAG_LIMIT_MS = 1.0  # generator lag p99 above this: the step is client-bound
CLIENT_BUSY_LIMIT = 90.0  # generator running + waiting for its core, % of the window
# A wake-up costs more than a send (a context switch, and in a VM a timer reprogrammed through
# the hypervisor): each one also sends what is due in the next EARLY_US, its latency measured
# from when it was sent, so at 20,000 requests/s a wake-up sends about five and adds no latency.
# (Measured at 12,000/s against picows: generator CPU 56 % with 0, 41 % with 250 us.)
EARLY_US = 200
DRAIN_S = 2.0  # after a step's schedule ends, how long its last responses may take
CONNECT_PARALLEL = 200  # handshakes in flight while opening connections (below any backlog)
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}

# ------------------------------------------------------------------------------- statistics


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q of all samples at or below
    it (the convention of HdrHistogram and wrk2, without their bucketing)."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def summary_ms(samples: list[float]) -> dict:
    """p50/p90/p99/p99.9/max/mean in milliseconds of latencies in seconds."""
    s = sorted(samples)
    out = {name: percentile(s, q) * 1e3 for name, q in QUANTILES.items()}
    out["max"] = s[-1] * 1e3 if s else math.nan
    out["mean"] = sum(s) / len(s) * 1e3 if s else math.nan
    return out


def kernel_losses() -> tuple[int, int]:
    """(packets the kernel dropped from a full per-CPU input backlog, TCP retransmission
    timeouts), machine-wide since boot. On a busy machine loopback packets are dropped when
    softirq work falls behind (net.core.netdev_max_backlog), and each drop stalls its
    connection for a retransmission timeout (200 ms, doubling): a step during which these
    counters moved may show the kernel's stall, not the server's."""
    dropped = timeouts = 0
    try:
        with open("/proc/net/softnet_stat") as f:
            dropped = sum(int(line.split()[1], 16) for line in f if line.strip())
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                timeouts = int(dict(zip(names.split(), values.split()))["TCPTimeouts"])
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return dropped, timeouts


# -------------------------------------------------------------------------------- timerfd


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Alarm:
    """A timerfd on CLOCK_MONOTONIC (time.monotonic()'s clock) that calls `callback` on the
    event loop at an absolute time, to the microsecond rather than uvloop's millisecond."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = os.O_NONBLOCK
    TFD_CLOEXEC = os.O_CLOEXEC
    TFD_TIMER_ABSTIME = 1

    def __init__(self, loop, callback):
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p]
        self.fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._spec = _Itimerspec()  # one struct, rewritten on every arm (no interval)
        self._ref = ctypes.byref(self._spec)
        self._callback = callback
        self._loop = loop
        loop.add_reader(self.fd, self._fired)

    def arm(self, when: float) -> None:
        """Fire at time.monotonic() == when (at once if that is past)."""
        ns = max(1, int(when * 1e9))  # 0 would disarm the timer
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:  # re-armed for later after it had already fired
            return
        self._callback()

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


# ------------------------------------------------------------------------------ the schedule


class Conn:
    """A connection's place in the schedule: it sends its k-th request of a step at
    t0 + (phase + k) * period, or when the (k-1)-th is answered if that is later."""

    # No __slots__: the WebSocket connection is also a picows WSListener (an extension type).

    def init_schedule(self, gen: "Generator") -> None:
        self.gen = gen
        self.phase = 0.0
        self.next_k = 0
        self.busy = False
        self.step = -1  # the step of the outstanding request
        self.intended = 0.0

    def write_request(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Abort the connection; from now on a close is ours, not the server's."""
        raise NotImplementedError


class Step:
    """One rate: its schedule and what was measured."""

    def __init__(self, index: int, rate: float, conns: list[Conn], t0: float, warmup: float,
                 duration: float):
        self.index = index
        self.rate = rate
        self.period = len(conns) / rate
        self.t0 = t0
        self.measure_from = t0 + warmup
        self.end = t0 + warmup + duration  # no request of this step is intended at or after it
        for conn in conns:
            conn.phase = random.random()
            conn.next_k = 0
        self.order = sorted(conns, key=lambda c: c.phase)  # the order slots come due in
        self.slot = 0  # next slot: connection order[slot % n], its request slot // n
        self.latencies: list[float] = []
        self.lags: list[float] = []  # generator lateness of sends made by the timer
        self.sent = 0  # sends within the measured window
        self.received = 0  # responses within the measured window
        self.bad = 0  # wrong responses (status, size) within the window
        self.lost = 0  # requests whose connection closed before the answer

    def intended(self, conn: Conn, k: int) -> float:
        return self.t0 + (conn.phase + k) * self.period


class Generator:
    def __init__(self, loop, conns: list[Conn], early: float):
        self.loop = loop
        self.early = early  # send what is due this soon now, rather than wake up again for it
        self.conns = conns
        self.step: Step | None = None
        self.alarm = Alarm(loop, self._due)
        self.reopened = 0

    # The hot path, per request: one call of _send (or of the catch-up in on_response), one of
    # on_response; two list appends (latency, lag); no other allocation of ours.

    def _send(self, conn: Conn, step: Step, now: float) -> None:
        conn.busy = True
        conn.step = step.index
        # Latency counts from the intended time, or from now for a request sent early.
        conn.intended = min(step.intended(conn, conn.next_k), now)
        conn.next_k += 1
        if now >= step.measure_from:
            step.sent += 1
        conn.write_request()

    def _due(self) -> None:
        """The alarm: send every request that has come due, arm for the next one."""
        step = self.step
        if step is None:
            return
        now = time.monotonic()
        horizon = now + self.early
        order, n = step.order, len(step.order)
        while True:
            conn = order[step.slot % n]
            k = step.slot // n
            when = step.intended(conn, k)
            if when > horizon:
                if when < step.end:
                    self.alarm.arm(when)
                return
            if when >= step.end:
                return
            step.slot += 1
            # A busy connection sends this request when its answer comes; one whose catch-up
            # already sent it has next_k > k.
            if not conn.busy and conn.next_k <= k:
                if when >= step.measure_from:
                    step.lags.append(now - when if now > when else 0.0)
                self._send(conn, step, now)

    def on_response(self, conn: Conn, ok: bool) -> None:
        now = time.monotonic()
        step = self.step
        conn.busy = False
        if step is None:
            return
        if conn.step == step.index:
            if conn.intended >= step.measure_from:
                step.latencies.append(now - conn.intended)
                if not ok:
                    step.bad += 1
            if now >= step.measure_from:
                step.received += 1
        # Catch up: a request that came due while this one was outstanding goes out now, its
        # latency counted from when it was due.
        when = step.intended(conn, conn.next_k)
        if when <= now and when < step.end:
            self._send(conn, step, now)

    def on_lost(self, conn: Conn) -> None:
        """The connection closed with a request outstanding: that request is lost."""
        if conn.busy:
            conn.busy = False
            if self.step is not None and conn.step == self.step.index:
                self.step.lost += 1

    async def run_step(self, index: int, rate: float, warmup: float, duration: float,
                       server_pid: int | None) -> dict:
        t0 = time.monotonic() + 0.05
        step = Step(index, rate, self.conns, t0, warmup, duration)
        self.step = step
        self.alarm.arm(t0)
        await asyncio.sleep(max(0.0, step.measure_from - time.monotonic()))
        losses0 = kernel_losses()
        window = CpuWindow(server_pid)
        await asyncio.sleep(max(0.0, step.end - time.monotonic()))
        cpu = window.stop()
        sent, received = step.sent, step.received
        drain_end = step.end + DRAIN_S
        while time.monotonic() < drain_end and not self._drained(step):
            await asyncio.sleep(0.01)
        # What is still due: the outstanding request and those held back behind it, each
        # counted with its wait so far (a lower bound of its latency).
        now = time.monotonic()
        unfinished = 0
        for conn in self.conns:
            due = []
            if conn.busy and conn.step == index:
                due.append(conn.intended)
            k = conn.next_k
            while step.intended(conn, k) < step.end:
                due.append(step.intended(conn, k))
                k += 1
            for when in due:
                if when >= step.measure_from:
                    step.latencies.append(now - when)
                    unfinished += 1
        self.step = None
        losses1 = kernel_losses()
        cpu["kernel_dropped"] = losses1[0] - losses0[0]
        cpu["tcp_timeouts"] = losses1[1] - losses0[1]
        return self._result(step, cpu, sent, received, unfinished)

    def _drained(self, step: Step) -> bool:
        return all(not (c.busy and c.step == step.index)
                   and step.intended(c, c.next_k) >= step.end for c in self.conns)

    def _result(self, step: Step, cpu: dict, sent: int, received: int, unfinished: int) -> dict:
        wall = cpu["wall"]
        lat = summary_ms(step.latencies)
        lag = summary_ms(step.lags)
        out = {
            "rate": step.rate,
            "sent_rate": sent / wall,
            "achieved_rate": received / wall,
            "samples": len(step.latencies),
            "unfinished": unfinished,
            "bad": step.bad,
            "lost": step.lost,
            **{k: round(v, 4) for k, v in lat.items()},
            "lag_p50": round(lag["p50"], 4), "lag_p99": round(lag["p99"], 4),
            "lag_max": round(lag["max"], 4),
            **cpu,
        }
        why = []
        busy = cpu["client_cpu"] + (cpu["client_wait"] or 0.0)
        if busy >= CLIENT_BUSY_LIMIT:
            why.append(f"generator busy {busy:.0f} % of the window")
        if not math.isnan(lag["p99"]) and lag["p99"] > LAG_LIMIT_MS:
            why.append(f"generator lag p99 {lag['p99']:.2f} ms")
        out["client_bound"] = bool(why)
        out["client_bound_why"] = why
        # Fewer answers than intended with the generator on time: the server fell behind.
        out["saturated"] = (not why) and received < 0.98 * step.rate * wall
        return out


# ------------------------------------------------------------------------------ HTTP client


class HttpConn(asyncio.Protocol, Conn):
    """Keep-alive GETs; a response is complete after its headers and Content-Length bytes."""

    def __init__(self, request: bytes, host: str, port: int):
        self.request = request
        self.host = host
        self.port = port
        self.transport = None
        self.buf = b""
        self.reopening = False
        self.gen = None  # set by init_schedule once every connection is open

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def connection_lost(self, exc):
        self.transport = None
        if self.gen is not None:
            self.gen.on_lost(self)

    def write_request(self) -> None:
        if self.transport is not None:
            self.transport.write(self.request)
        elif not self.reopening:
            self.reopening = True
            self.gen.loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            await self.gen.loop.create_connection(lambda: self, self.host, self.port)
            self.gen.reopened += 1
        except OSError:
            self.gen.on_lost(self)
            return
        finally:
            self.reopening = False
        if self.busy:
            self.transport.write(self.request)

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower() + b"\r\n"
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17:head.find(b"\r\n", at + 2)]) if at >= 0 else 0
            total = end + 4 + length
            if len(buf) < total:
                break
            ok = at >= 0 and buf.startswith(b"HTTP/1.1 200")
            buf = buf[total:]
            self.gen.on_response(self, ok)
        self.buf = buf

    def close(self) -> None:
        self.gen = None
        if self.transport is not None:
            self.transport.abort()


async def open_http(spec: dict) -> tuple[list[Conn], list[str]]:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    sem = asyncio.Semaphore(CONNECT_PARALLEL)
    errors: list[str] = []

    async def one():
        async with sem:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: HttpConn(request, host, port), host, port),
                    timeout=20)
                return proto
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    conns = await asyncio.gather(*(one() for _ in range(spec["conns"])))
    return [c for c in conns if c is not None], errors


# ------------------------------------------------------------------------- WebSocket client


async def open_ws(spec: dict) -> tuple[list[Conn], list[str]]:
    from picows import WSListener, WSMsgType

    binary, close = WSMsgType.BINARY, WSMsgType.CLOSE
    size = spec["size"]
    frame = client_frame(payload_of(size))

    class WsConn(WSListener, Conn):
        def __init__(self):
            super().__init__()
            self.gen = None  # set by init_schedule once every connection is open
            self.raw = None

        def on_ws_connected(self, transport):
            self.raw = transport.underlying_transport

        def on_ws_disconnected(self, transport):
            if self.gen is not None:
                self.gen.on_lost(self)

        # One frame outstanding: nothing to do when the socket buffer fills.
        def pause_writing(self):
            pass

        def resume_writing(self):
            pass

        def write_request(self) -> None:
            self.raw.write(frame)

        def close(self) -> None:
            self.gen = None
            if self.raw is not None:
                self.raw.abort()

        def on_ws_frame(self, transport, frame_):
            if frame_.msg_type == binary:
                self.gen.on_response(self, frame_.payload_size == size)
            elif frame_.msg_type == close:
                transport.send_close(frame_.get_close_code())
                transport.disconnect()

    spec = dict(spec, read_buffer=spec.get("read_buffer", 16 * 1024))
    connected, errors = await connect_all([lambda *_: WsConn() for _ in range(spec["conns"])],
                                          spec["url"], spec, parallel=CONNECT_PARALLEL)
    return [listener for _, listener in connected], errors


# ----------------------------------------------------------------------------------- main


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


async def run(spec: dict) -> dict:
    raise_nofile(spec["conns"] + 256)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    opener = open_http if spec["proto"] == "http" else open_ws
    conns, errors = await opener(spec)
    connect_s = time.monotonic() - t0
    if len(conns) < spec["conns"]:
        for conn in conns:
            conn.close()
        return {"error": f"{spec['conns'] - len(conns)} of {spec['conns']} connections failed: "
                         + "; ".join(sorted(set(errors))[:3])}
    # Let the server finish with the handshakes before the first step (a server that is still
    # busy with the last of 10,000 would charge that to the first step's warm-up).
    await asyncio.sleep(spec.get("settle", 1.0))
    gen = Generator(loop, conns, spec.get("early_us", EARLY_US) / 1e6)
    for conn in conns:
        conn.init_schedule(gen)
    steps = []
    try:
        for index, rate in enumerate(spec["rates"]):
            steps.append(await gen.run_step(index, rate, spec["warmup"], spec["duration"],
                                            spec.get("server_pid")))
    finally:
        gen.alarm.close()
        for conn in conns:
            conn.close()
    return {"conns": len(conns), "connect_s": round(connect_s, 2), "reopened": gen.reopened,
            "steps": steps}


def run_realtime() -> bool:
    """SCHED_FIFO for the generator, so it sends on time: at normal priority on a shared core a
    woken generator waits for the running task's slice, and that wait (up to several ms at p99
    here) is inside every latency it measures. It uses a fraction of its core (the rest stays
    with the other tasks; the kernel keeps 5 % for them in any case); servers keep the normal
    policy. False where this process may not."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return True
    except (OSError, AttributeError):
        return False


def main() -> None:
    spec = json.loads(sys.argv[1])
    realtime = spec.get("realtime", False) and run_realtime()
    import uvloop

    try:
        result = uvloop.run(asyncio.wait_for(run(spec), timeout=spec.get("timeout", 600)))
    except Exception as exc:  # noqa: BLE001 - reported to the driver as data
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["realtime"] = realtime
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
