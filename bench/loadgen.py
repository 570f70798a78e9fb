"""Load generator of bench/run.py: one scenario against one server, a JSON result on stdout.

    python bench/loadgen.py '{"mode": "rr", "url": "ws://127.0.0.1:8000/", "conns": 64, ...}'

run.py starts it pinned to core 1 (taskset -c 1) while the server is pinned to core 0. The client
is compiled code: picows (Cython WebSocket) on uvloop. Client frames are built and masked once,
up front (fixed masking key; servers do not check key randomness), and written straight to the
TCP transport, several frames per write when the scenario allows it, so the client's per-message
work is parsing the server's frame (picows, C) plus a counter; the raw-TCP client is a uvloop
Protocol that only counts bytes.

Modes (all messages binary; the payload is `size` bytes):
  rr          request-response: each of `conns` connections keeps exactly one message in flight
  pipe        pipelined: one connection keeps `window` messages in flight; every time a read
              brings back k messages, k more are written in one write
  bcast       `conns` clients on a broadcast app; each keeps one message of its own in flight
              (the next one goes out when its own message comes back); every message that comes
              in counts as a delivery
  idle        open `conns` connections (at most 200 handshakes in flight) and keep them idle;
              reports the server's RSS delta per connection
  raw-rr / raw-pipe   as rr / pipe against a raw TCP echo: the same masked WebSocket frames are
              written and the client counts reflected bytes (a frame's length is one message)

A wss:// url is spoken over TLS without checking the certificate (the benchmark's are
self-signed). Measurement: connections are opened, then `warmup` seconds of load, then counters
and CPU times (utime+stime from /proc/PID/stat of every process in the server's process tree, and
of this process) are read at the start and end of a `duration`-second window.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
MASK = b"\x37\xfa\x21\x3d"
# ---------------------------------------------------------------------------------------- /proc


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (by scanning /proc for parent pids)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_ticks(pids) -> int:
    """utime + stime of the given processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def sched_wait_ns(pids) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for a CPU), summed over every thread of pids."""
    run = wait = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
                run += int(fields[0])
                wait += int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    return run, wait


def rss_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class CpuWindow:
    """CPU use (percent of one core) of the server tree and of this process over a window."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid
        self.pids = proc_tree(server_pid) if server_pid else []
        self.own = [os.getpid()]
        self.t0 = time.perf_counter()
        self.s0 = cpu_ticks(self.pids)
        self.c0 = self._own()
        self.sw0 = sched_wait_ns(self.pids)[1]
        self.cw0 = sched_wait_ns(self.own)[1]

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        server = (cpu_ticks(self.pids) - self.s0) / CLK_TCK
        client = self._own() - self.c0
        server_wait = (sched_wait_ns(self.pids)[1] - self.sw0) / 1e9
        client_wait = (sched_wait_ns(self.own)[1] - self.cw0) / 1e9
        return {
            # time runnable but not running (another process had the core): the machine's noise
            "server_wait": round(100.0 * server_wait / wall, 1) if self.pids else None,
            "client_wait": round(100.0 * client_wait / wall, 1),
            "wall": wall,
            "server_cpu": round(100.0 * server / wall, 1) if self.pids else None,
            "client_cpu": round(100.0 * client / wall, 1),
            "server_pids": len(self.pids),
        }


# ---------------------------------------------------------------------------------- frames


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 0x2, rsv1: bool = False) -> bytes:
    """One masked, final client frame (RSV1: a permessage-deflate compressed message)."""
    n = len(payload)
    head = bytearray([0x80 | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    head += MASK
    return bytes(head) + mask_bytes(payload, MASK)


def payload_of(size: int, tag: bytes = b"") -> bytes:
    base = tag + bytes((i * 7 + 13) & 0xFF for i in range(min(size, 4096)))
    return (base * (size // len(base) + 1))[:size] if size else b""


class Batches:
    """Writes k copies of one frame with one transport call."""

    def __init__(self, frame: bytes):
        self.frame = frame
        self.cache: dict[int, bytes] = {}

    def write(self, transport, k: int) -> None:
        if k <= 0:
            return
        if k == 1:
            transport.write(self.frame)
        elif len(self.frame) * k <= 65536:
            data = self.cache.get(k)
            if data is None:
                data = self.cache[k] = self.frame * k
            transport.write(data)
        else:
            transport.writelines([self.frame] * k)


# ---------------------------------------------------------------------------------- stats


class Stats:
    __slots__ = ("messages", "sent", "bytes", "bad", "disconnects", "running")

    def __init__(self):
        self.messages = 0
        self.sent = 0
        self.bytes = 0
        self.bad = 0
        self.disconnects = 0
        self.running = True


# ------------------------------------------------------------------------------ WS clients


def make_listeners(stats: Stats, spec: dict):
    from picows import WSListener, WSMsgType

    BINARY = WSMsgType.BINARY
    CLOSE = WSMsgType.CLOSE
    size = spec["size"]

    class Base(WSListener):
        def on_ws_connected(self, transport):
            self.transport = transport
            self.raw = transport.underlying_transport

        def on_ws_disconnected(self, transport):
            if stats.running:
                stats.disconnects += 1

        # The window bounds what is in flight; nothing to do when the socket buffer fills.
        def pause_writing(self):
            pass

        def resume_writing(self):
            pass

        def _other(self, transport, frame):
            if frame.msg_type == CLOSE:
                if stats.running:
                    stats.disconnects += 1
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class RequestResponse(Base):
        def __init__(self, frame_bytes: bytes):
            self.frame_bytes = frame_bytes

        def start(self):
            self.raw.write(self.frame_bytes)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type != BINARY:
                self._other(transport, frame)
                return
            if frame.payload_size != size:
                stats.bad += 1
            stats.messages += 1
            if stats.running:
                self.raw.write(self.frame_bytes)

    class Pipelined(Base):
        def __init__(self, batches: Batches, window: int):
            self.batches = batches
            self.window = window
            self.pending = 0

        def start(self):
            self.batches.write(self.raw, self.window)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == BINARY:
                if frame.payload_size != size:
                    stats.bad += 1
                stats.messages += 1
                self.pending += 1
            else:
                self._other(transport, frame)
            if frame.last_in_buffer and self.pending and stats.running:
                self.batches.write(self.raw, self.pending)
                self.pending = 0

    class Broadcast(Base):
        def __init__(self, tag: bytes, frame_bytes: bytes):
            self.tag = tag
            self.frame_bytes = frame_bytes

        def start(self):
            stats.sent += 1
            self.raw.write(self.frame_bytes)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type != BINARY:
                self._other(transport, frame)
                return
            stats.messages += 1
            if frame.get_payload_as_memoryview()[:4] == self.tag and stats.running:
                stats.sent += 1
                self.raw.write(self.frame_bytes)

    class Idle(Base):
        def on_ws_frame(self, transport, frame):
            if frame.msg_type != BINARY:
                self._other(transport, frame)

    return RequestResponse, Pipelined, Broadcast, Idle


async def connect_all(factories, url: str, spec: dict, parallel: int = 200):
    """Opens one connection per factory, at most `parallel` handshakes at a time."""
    from picows import ws_connect

    sem = asyncio.Semaphore(parallel)
    kwargs = {}
    # picows >= 2 uses aiofastnet transports when that package is installed; ask for uvloop's
    # own transports unless told otherwise (older picows has no such switch: uvloop's).
    import inspect

    if "use_aiofastnet" in inspect.signature(ws_connect).parameters:
        kwargs["use_aiofastnet"] = spec.get("client_transport", "uvloop") == "aiofastnet"
    if url.startswith("wss:"):
        from servers import unverified_tls_context

        kwargs["ssl_context"] = unverified_tls_context()
    errors: list[str] = []

    async def one(factory):
        async with sem:
            try:
                transport, listener = await asyncio.wait_for(
                    ws_connect(factory, url, max_frame_size=64 * 1024 * 1024,
                               websocket_handshake_timeout=10,
                               read_buffer_init_size=spec.get("read_buffer", 16 * 1024),
                               **kwargs),
                    timeout=20,
                )
                return transport, listener
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    results = await asyncio.gather(*(one(f) for f in factories))
    return [r for r in results if r is not None], errors


def _event(spec: dict, name: str) -> None:
    """With "events" in the spec, a line on stdout the moment the measured window starts and
    ends: bench/deploy.py samples the server's connections and its other processes then."""
    if spec.get("events"):
        print(json.dumps({"event": name}), flush=True)


async def measure(stats: Stats, spec: dict, server_pid: int | None) -> dict:
    await asyncio.sleep(spec["warmup"])
    m0, b0, s0 = stats.messages, stats.bytes, stats.sent
    window = CpuWindow(server_pid)
    _event(spec, "window-start")
    await asyncio.sleep(spec["duration"])
    m1, b1, s1 = stats.messages, stats.bytes, stats.sent
    cpu = window.stop()
    stats.running = False
    _event(spec, "window-end")
    if spec.get("events"):
        await asyncio.sleep(0.5)  # connections stay open while the parent counts them
    rate = (m1 - m0) / cpu["wall"]
    out = {"value": rate, "messages": m1 - m0, **cpu}
    if s1 != s0:  # broadcast: deliveries per message sent, should be the number of clients
        out["fanout"] = round((m1 - m0) / (s1 - s0), 2)
    if b1 != b0:
        out["raw_bytes_per_s"] = (b1 - b0) / cpu["wall"]
    return out


async def run_ws(spec: dict) -> dict:
    stats = Stats()
    RequestResponse, Pipelined, Broadcast, Idle = make_listeners(stats, spec)
    mode, size, conns, url = spec["mode"], spec["size"], spec["conns"], spec["url"]
    server_pid = spec.get("server_pid")

    if mode == "idle":
        return await run_idle(Idle, spec)

    if mode == "rr":
        frame = client_frame(payload_of(size))
        factories = [lambda *_: RequestResponse(frame) for _ in range(conns)]
    elif mode == "pipe":
        batches = Batches(client_frame(payload_of(size)))
        factories = [lambda *_: Pipelined(batches, spec["window"]) for _ in range(conns)]
    elif mode == "bcast":
        factories = []
        for i in range(conns):
            tag = i.to_bytes(4, "big")
            frame = client_frame(payload_of(size, tag))
            factories.append(lambda *_, tag=tag, frame=frame: Broadcast(tag, frame))
    else:
        raise SystemExit(f"unknown mode {mode}")

    connected, errors = await connect_all(factories, url, spec)
    if len(connected) < conns:
        for transport, _ in connected:
            transport.disconnect(graceful=False)
        return {"error": f"{conns - len(connected)} of {conns} connections failed: "
                         + "; ".join(sorted(set(errors))[:3])}
    for _, listener in connected:
        listener.start()
    result = await measure(stats, spec, server_pid)
    for transport, _ in connected:
        transport.disconnect(graceful=False)
    result.update(bad=stats.bad, disconnects=stats.disconnects)
    if mode == "bcast" and result.get("fanout") is not None \
            and abs(result["fanout"] - conns) > 0.1 * conns:
        result["warnings"] = [
            f"{result['fanout']} deliveries per message sent, expected {conns}"]
    if mode == "pipe":
        result["mb_per_s"] = result["value"] * size / 1e6
    return result


async def run_idle(Idle, spec: dict) -> dict:
    conns, url, server_pid = spec["conns"], spec["url"], spec["server_pid"]
    # Warm-up: let the server import and allocate whatever it does lazily on first connections.
    warm, _ = await connect_all([lambda *_: Idle() for _ in range(50)], url, spec)
    await asyncio.sleep(0.3)
    for transport, _ in warm:
        transport.disconnect()
    await asyncio.sleep(1.0)
    pids = proc_tree(server_pid)
    rss0 = rss_bytes(pids)
    t0 = time.perf_counter()
    connected, errors = await connect_all([lambda *_: Idle() for _ in range(conns)], url, spec)
    open_time = time.perf_counter() - t0
    await asyncio.sleep(spec.get("settle", 1.5))
    alive = sum(1 for transport, _ in connected if not transport.is_disconnected)
    rss1 = rss_bytes(proc_tree(server_pid))
    for transport, _ in connected:
        transport.disconnect(graceful=False)
    if alive == 0:
        return {"error": "no connection opened: " + "; ".join(sorted(set(errors))[:3])}
    out = {
        "value": (rss1 - rss0) / alive / 1024.0,  # KiB per connection
        "rss_before_mib": rss0 / 2**20,
        "rss_after_mib": rss1 / 2**20,
        "connections": alive,
        "failed": conns - len(connected),
        "open_s": round(open_time, 2),
        "server_pids": len(pids),
    }
    if errors:
        out["connect_errors"] = sorted(set(errors))[:3]
    return out


# ------------------------------------------------------------------------------ raw TCP client


async def run_raw(spec: dict) -> dict:
    """rr / pipe against the raw TCP echo: masked frames out, reflected bytes counted back."""
    stats = Stats()
    size, conns = spec["size"], spec["conns"]
    frame = client_frame(payload_of(size))
    flen = len(frame)
    batches = Batches(frame)
    pipelined = spec["mode"] == "raw-pipe"
    window = spec.get("window", 1) if pipelined else 1

    class RawClient(asyncio.BufferedProtocol):
        # The kernel reads into one reused buffer: no bytes object per read, only counting.
        def __init__(self):
            self.partial = 0
            self.buffer = memoryview(bytearray(min(4 * 1024 * 1024, max(65536, 2 * flen))))

        def connection_made(self, transport):
            self.transport = transport

        def start(self):
            batches.write(self.transport, window)

        def get_buffer(self, sizehint):
            return self.buffer

        def buffer_updated(self, nbytes):
            got = self.partial + nbytes
            k, self.partial = divmod(got, flen)
            stats.bytes += nbytes
            if k:
                stats.messages += k
                if stats.running:
                    batches.write(self.transport, k)

        def connection_lost(self, exc):
            if stats.running:
                stats.disconnects += 1

    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    clients = []
    for _ in range(conns):
        transport, proto = await asyncio.wait_for(
            loop.create_connection(RawClient, host, port), timeout=10)
        clients.append(proto)
    for c in clients:
        c.start()
    result = await measure(stats, spec, spec.get("server_pid"))
    for c in clients:
        c.transport.abort()
    result.update(bad=0, disconnects=stats.disconnects)
    if pipelined:
        result["mb_per_s"] = result["value"] * size / 1e6
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    import uvloop

    runner = run_raw if spec["mode"].startswith("raw-") else run_ws
    try:
        result = uvloop.run(asyncio.wait_for(runner(spec), timeout=spec.get("timeout", 120)))
    except Exception as exc:  # noqa: BLE001 - reported to run.py as data
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
