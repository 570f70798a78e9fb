"""permessage-deflate benchmark: echo of 1 KiB JSON text messages, compressed both ways.

    python bench/deflate.py                          # asgiws and uvicorn's three, ~5 minutes
    python bench/deflate.py --quick                  # one short repeat: a smoke test
    python bench/deflate.py --servers asgiws,uvicorn --variant 'lvl1:compress_level=1'
    python bench/deflate.py --write                  # also rewrite bench/RESULTS.md's deflate block
    python bench/deflate.py zlib                     # zlib alone, in this process: settings

Browsers offer permessage-deflate on every connection (`permessage-deflate;
client_max_window_bits`); this is that case. The client (a uvloop Protocol written here: picows
does not do deflate) sends that offer, follows the parameters the server answers with, and
compresses its messages with context takeover (zlib, raw deflate, the negotiated client window,
memLevel 8 and the default level, as Chromium does). Every connection sends the same sequence
of messages, so its compressed frames are the same on every connection: they are compressed
once, by one compressor, as the first connection gets to each, and shared (the client's CPU then
goes to reading frames and inflating the server's messages, which it does for every message and
checks against what it sent).

Messages: seeded, realistic JSON objects of exactly 1024 bytes (chat messages and market data:
names, ids, ISO timestamps, prices, words), compressible the way such traffic is, not zeros.

Measured per server, each with a fresh process pinned to core 0 (the client to core 1), as in
bench/run.py (its Running, CpuWindow and helpers):
  rr   64 connections, each keeping one message in flight: round trips/s, server CPU per
       message.
  wire one more connection sends the pool of 512 messages once, one at a time (the same
       sequence for every server): TCP payload bytes per message each way, frame headers
       included, handshake excluded, as the client reads and writes them.
  mem  2000 connections, each exchanges 5 messages each way (5 KiB: more than a 12-bit window
       holds), then stays open: server RSS (whole process tree) minus RSS before they opened,
       per connection.
and the Sec-WebSocket-Extensions the server answered. Throughput is the best of --repeats runs,
memory the median; the order of the servers rotates between repeats.

Servers: asgiws with its defaults (deflate is on by default), uvicorn's three WebSocket
implementations with theirs (deflate on: uvicorn's default). `--variant name:key=value,...` adds
asgiws with other DeflateSettings (asgiws/websocket/deflate.py), set by `python bench/deflate.py
serve` — a wrapper that replaces the server's settings object before starting asgiws; bench only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
import servers as srv  # noqa: E402
from loadgen import CpuWindow, client_frame, proc_tree, rss_bytes  # noqa: E402

MESSAGE_SIZE = 1024
SEED = 7692  # RFC 7692
MARK_START = "<!-- deflate:start -->"
MARK_END = "<!-- deflate:end -->"
EMPTY_BLOCK = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: removed by the sender, put back to inflate
OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium and Firefox send

# ------------------------------------------------------------------------------- messages

_FIRST = ("Maria", "James", "Aiko", "Lukas", "Fatima", "Chen", "Olga", "Diego", "Priya", "Noah",
          "Amara", "Mateo", "Sofia", "Ivan", "Yuki", "Omar", "Elena", "Kwame", "Lea", "Arjun")
_LAST = ("Garcia", "Smith", "Tanaka", "Muller", "Khan", "Wang", "Petrova", "Silva", "Patel",
         "Brown", "Okafor", "Rossi", "Novak", "Kim", "Haddad", "Jensen", "Mensah", "Dubois")
_WORDS = ("the", "deploy", "is", "done", "can", "you", "check", "latency", "on", "staging",
          "before", "we", "ship", "it", "looks", "fine", "from", "here", "but", "p99", "went",
          "up", "after", "merge", "I", "will", "rollback", "if", "needed", "thanks", "meeting",
          "moved", "to", "tomorrow", "ok", "sounds", "good", "ticket", "updated", "customer",
          "reported", "timeout", "again", "order", "book", "price", "alert", "triggered")
_ROOMS = ("#general", "#ops", "#trading-desk", "#support", "#random", "#eng-backend")
_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "AAPL", "MSFT", "NVDA", "TSLA")
_STATUSES = ("online", "away", "busy")


def _timestamp(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _chat(rng: random.Random, i: int, clock: int) -> dict:
    user = rng.randrange(1000, 99999)
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    return {
        "type": "chat.message", "id": 900_000_000 + i * 7 + rng.randrange(7),
        "room": rng.choice(_ROOMS), "ts": _timestamp(clock),
        "user": {"id": user, "name": name, "status": rng.choice(_STATUSES),
                 "avatar": f"https://cdn.example.com/avatars/{user:08x}.png"},
        "reply_to": rng.choice((None, 900_000_000 + rng.randrange(i * 7 + 1))),
        "mentions": [f"@{rng.choice(_FIRST).lower()}" for _ in range(rng.randrange(3))],
        "reactions": {r: rng.randrange(1, 20) for r in rng.sample(("+1", "eyes", "tada", "heart"),
                                                                   rng.randrange(3))},
    }


def _market(rng: random.Random, i: int, clock: int) -> dict:
    mid = rng.uniform(10, 60000)
    return {
        "type": "book.update", "seq": 31_000_000 + i, "symbol": rng.choice(_SYMBOLS),
        "ts": _timestamp(clock), "last": {"price": f"{mid:.2f}", "size": f"{rng.uniform(0, 5):.4f}",
                                          "side": rng.choice(("buy", "sell"))},
        "bids": [[f"{mid - k * 0.05:.2f}", f"{rng.uniform(0, 20):.4f}"] for k in range(1, 6)],
        "asks": [[f"{mid + k * 0.05:.2f}", f"{rng.uniform(0, 20):.4f}"] for k in range(1, 6)],
        "volume_24h": f"{rng.uniform(1e5, 1e8):.2f}", "trader": f"{rng.choice(_FIRST)} "
                                                                f"{rng.choice(_LAST)}",
    }


def json_messages(count: int, seed: int = SEED, size: int = MESSAGE_SIZE) -> list[bytes]:
    """`count` JSON texts of exactly `size` bytes: chat messages and order-book updates in a
    seeded random mix, each padded to `size` by a field of words (text, or a note)."""
    rng = random.Random(seed)
    clock = 1_796_000_000_000  # ms, late 2026
    out = []
    for i in range(count):
        clock += rng.randrange(1, 400)
        obj = _chat(rng, i, clock) if rng.random() < 0.6 else _market(rng, i, clock)
        pad_key = "text" if obj["type"] == "chat.message" else "note"
        head = json.dumps(obj, separators=(",", ":"))
        room = size - len(head) - len(f',"{pad_key}":""')
        assert room > 0, "a message's fields alone exceed its size"
        words = _words(rng, room // 3 + 1)[:room]
        text = head[:-1] + f',"{pad_key}":"{words}"' + "}"
        data = text.encode("ascii")
        assert len(data) == size
        out.append(data)
    return out


def small_messages(count: int, size: int, seed: int = SEED) -> list[bytes]:
    """`count` short JSON events of exactly `size` (≥ 16) bytes — acks, typing and presence
    notices, what chat and trading sessions send between the larger messages: the largest of
    three forms that fits, padded with words (or spaces, for a few bytes)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(("ack", "typing", "presence"))
        event_id = 900_000_000 + rng.randrange(10**6)
        user = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        forms = ({"t": kind, "id": event_id, "user": user}, {"t": kind, "id": event_id},
                 {"t": kind})
        text = next(t for t in (json.dumps(f, separators=(",", ":")) for f in forms)
                    if len(t) <= size)
        room = size - len(text) - len(',"p":""')
        if room > 0:
            text = text[:-1] + f',"p":"{_words(rng, room // 3 + 1)[:room]}"' + "}"
        text = text[:-1] + " " * (size - len(text)) + "}"
        assert len(text) == size
        out.append(text.encode("ascii"))
    return out


# ------------------------------------------------------------------------ client framing


def parse_extension(header: str) -> dict:
    """The parameters of the accepted permessage-deflate, from Sec-WebSocket-Extensions."""
    params = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        params[name.strip()] = int(value.strip().strip('"')) if value else True
    return params


def client_text_frame(payload: bytes, compressed: bool) -> bytes:
    """One masked, final text frame (RSV1 when compressed)."""
    return client_frame(payload, 0x1, rsv1=compressed)


class ClientSequence:
    """The frames every connection sends, in order: message k of the pool compressed with
    context takeover after messages 0..k-1, computed once, when the first connection needs it."""

    def __init__(self, messages: list[bytes], params: dict):
        self.messages = messages
        self.params = params
        bits = params.get("client_max_window_bits", 15)
        self.compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, 8)
        self.frames: list[bytes] = []

    def message(self, k: int) -> bytes:
        return self.messages[k % len(self.messages)]

    def frame(self, k: int) -> bytes:
        while len(self.frames) <= k:
            data = self.message(len(self.frames))
            if self.params.get("client_no_context_takeover"):
                bits = self.params.get("client_max_window_bits", 15)
                self.compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                                                   -bits, 8)
            out = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            if out.endswith(EMPTY_BLOCK):
                out = out[:-4]
            self.frames.append(client_text_frame(out, True))
        return self.frames[k]


class Counters:
    __slots__ = ("messages", "bytes_in", "bytes_out", "bad", "uncompressed", "running")

    def __init__(self):
        self.messages = self.bytes_in = self.bytes_out = self.bad = self.uncompressed = 0
        self.running = True


class DeflateClient(asyncio.Protocol):
    """One WebSocket connection: handshake with the browser's offer, then echo round trips:
    send frame k, read the server's message, inflate and check it, send frame k+1."""

    def __init__(self, host: str, port: int, shared: dict, counters: Counters, messages: list,
                 rounds: int | None):
        self.host, self.port = host, port
        self.shared = shared  # the one ClientSequence, made by the first handshake
        self.counters = counters
        self.messages = messages
        self.rounds = rounds  # None: until told to stop; else stop after this many
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.k = 0
        self.fragments: list[bytes] = []
        self.fragment_compressed = False
        self.extensions = ""

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Extensions: {OFFER}\r\n\r\n").encode())

    def connection_lost(self, exc):
        for fut in (self.handshaken, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes):
        self.counters.bytes_in += len(data)
        self.buffer += data
        if not self.handshaken.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            self.counters.bytes_in -= end + 4  # the wire figures count frames only
            self._handshake(head)
            if not self.handshaken.done():
                return
        self._frames()

    def _handshake(self, head: str):
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self.handshaken.set_exception(ConnectionError(lines[0]))
            return
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                self.extensions = value.strip()
        if not self.extensions.startswith("permessage-deflate"):
            self.handshaken.set_exception(ConnectionError("permessage-deflate not negotiated"))
            return
        params = parse_extension(self.extensions)
        if "sequence" not in self.shared:
            self.shared["sequence"] = ClientSequence(self.messages, params)
        elif self.shared["sequence"].params != params:
            self.handshaken.set_exception(ConnectionError("connections negotiated differently"))
            return
        self.params = params
        self.sequence = self.shared["sequence"]
        server_bits = max(9, params.get("server_max_window_bits", 15))
        self.decompressor = zlib.decompressobj(wbits=-server_bits)
        self.handshaken.set_result(self.extensions)

    def send_next(self):
        frame = self.sequence.frame(self.k)
        self.counters.bytes_out += len(frame)
        self.transport.write(frame)

    def _frames(self):
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            if len(buf) - start < n:
                break
            payload = bytes(buf[start:start + n])
            pos = start + n
            opcode = b0 & 0x0F
            if opcode >= 0x8:
                if opcode == 0x8:  # a Close: the server is going away
                    self.transport.close()
                    return
                continue  # a Ping: no server pings within these runs' timeouts
            if opcode != 0:  # a message's first frame carries RSV1
                self.fragment_compressed = bool(b0 & 0x40)
            self.fragments.append(payload)
            if b0 & 0x80:
                self._message(b"".join(self.fragments), self.fragment_compressed)
                self.fragments = []
        del buf[:pos]

    def _message(self, payload: bytes, compressed: bool):
        counters = self.counters
        if compressed:
            payload = self.decompressor.decompress(payload + EMPTY_BLOCK)
            if self.params.get("server_no_context_takeover"):
                self.decompressor = zlib.decompressobj(
                    wbits=-max(9, self.params.get("server_max_window_bits", 15)))
        else:
            counters.uncompressed += 1
        if payload != self.sequence.message(self.k):
            counters.bad += 1
        counters.messages += 1
        self.k += 1
        if self.rounds is not None and self.k >= self.rounds:
            if not self.done.done():
                self.done.set_result(None)
            return
        if counters.running:
            self.send_next()


async def open_all(loop, host, port, n, shared, counters, messages, rounds, parallel=200):
    sem = asyncio.Semaphore(parallel)
    errors: list[str] = []

    async def one():
        async with sem:
            try:
                _, proto = await asyncio.wait_for(loop.create_connection(
                    lambda: DeflateClient(host, port, shared, counters, messages, rounds),
                    host, port), timeout=20)
                await asyncio.wait_for(proto.handshaken, timeout=20)
                if rounds is not None:  # exchange messages before the next handshake starts
                    proto.send_next()
                    await asyncio.wait_for(proto.done, timeout=20)
                return proto
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    protos = await asyncio.gather(*(one() for _ in range(n)))
    return [p for p in protos if p is not None], errors


async def client_rr(spec: dict) -> dict:
    loop = asyncio.get_running_loop()
    counters, shared = Counters(), {}
    messages = json_messages(spec["pool"])
    protos, errors = await open_all(loop, spec["host"], spec["port"], spec["conns"], shared,
                                    counters, messages, None)
    if len(protos) < spec["conns"]:
        return {"error": f"{spec['conns'] - len(protos)} connections failed: "
                         + "; ".join(sorted(set(errors))[:3])}
    # Bytes on the wire: one more connection sends the whole pool, one message at a time, so
    # every server compresses the same sequence (the load below covers a different stretch of
    # it for each server, as fast as each goes).
    wire = Counters()
    _, errors = await open_all(loop, spec["host"], spec["port"], 1, {}, wire, messages,
                               len(messages))
    if errors or wire.messages != len(messages):
        return {"error": f"the wire run failed: {errors[:1]}"}
    for p in protos:
        p.send_next()
    await asyncio.sleep(spec["warmup"])
    m0 = counters.messages
    window = CpuWindow(spec["server_pid"])
    await asyncio.sleep(spec["duration"])
    m1 = counters.messages
    cpu = window.stop()
    counters.running = False
    for p in protos:
        p.transport.abort()
    n = m1 - m0
    server_s = cpu["server_cpu"] / 100.0 * cpu["wall"]
    return {
        "value": n / cpu["wall"], "messages": n, **cpu,
        "per_cpu_s": n / server_s if server_s else None,
        "cpu_us_per_msg": 1e6 * server_s / n if n else None,
        "wire_in": wire.bytes_in / wire.messages,  # server -> client, bytes per message
        "wire_out": wire.bytes_out / wire.messages,  # client -> server
        "bad": counters.bad + wire.bad, "uncompressed": counters.uncompressed + wire.uncompressed,
        "extensions": protos[0].extensions,
    }


async def client_mem(spec: dict) -> dict:
    loop = asyncio.get_running_loop()
    host, port, pid = spec["host"], spec["port"], spec["server_pid"]
    messages = json_messages(spec["pool"])
    # Warm-up: let the server import and allocate what it does lazily on first connections.
    rounds = spec["rounds"]
    warm, _ = await open_all(loop, host, port, 50, {}, Counters(), messages, rounds)
    for p in warm:
        p.transport.close()
    await asyncio.sleep(1.0)
    rss0 = rss_bytes(proc_tree(pid))
    counters, shared = Counters(), {}
    protos, errors = await open_all(loop, host, port, spec["conns"], shared, counters,
                                    messages, rounds)
    await asyncio.sleep(spec.get("settle", 1.5))
    alive = sum(1 for p in protos if not p.transport.is_closing())
    rss1 = rss_bytes(proc_tree(pid))
    for p in protos:
        p.transport.abort()
    if not alive:
        return {"error": "no connection opened: " + "; ".join(sorted(set(errors))[:3])}
    return {"value": (rss1 - rss0) / alive / 1024.0, "connections": alive,
            "rss_before_mib": rss0 / 2**20, "rss_after_mib": rss1 / 2**20,
            "bad": counters.bad, "errors": sorted(set(errors))[:3]}


def client_main(spec: dict) -> None:
    import uvloop

    runner = client_rr if spec["mode"] == "rr" else client_mem
    try:
        result = uvloop.run(asyncio.wait_for(runner(spec), timeout=spec.get("timeout", 120)))
    except Exception as exc:  # noqa: BLE001 - reported to the driver as data
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------- asgiws variants


def serve_main(settings_json: str, argv: list[str]) -> None:
    """asgiws with other DeflateSettings: replace the object every connection reads, then run
    the asgiws command. Bench only: asgiws has no flags for these."""
    import asgiws.asgi.websocket as ws
    from asgiws.cli import main
    from asgiws.websocket.deflate import DeflateSettings

    ws._DEFLATE_SETTINGS = DeflateSettings(**json.loads(settings_json))
    main(argv)


def _without_deflate_flag(argv: list[str]) -> list[str]:
    """bench/servers.py turns deflate off; here every server runs with its default (on)."""
    i = argv.index("--ws-per-message-deflate")
    return argv[:i] + argv[i + 2:]


def _asgiws(settings: dict | None):
    def argv(app, port, backlog):
        base = _without_deflate_flag(srv._asgiws(app, port, backlog))
        if settings is None:
            return base
        return [srv.PYTHON, os.path.abspath(__file__), "serve", json.dumps(settings)] + base[3:]
    return argv


def _uvicorn(ws):
    def argv(app, port, backlog):
        return _without_deflate_flag(srv._uvicorn(ws)(app, port, backlog))
    return argv


SERVERS = {
    "asgiws": srv.Server("asgiws", "asgiws", "asgi", _asgiws(None)),
    "uvicorn": srv.Server("uvicorn", "uvicorn default (websockets-sansio)", "asgi",
                          _uvicorn("websockets-sansio"),
                          notes="window bits 12/12, memLevel 5, level 6 (zlib's default)"),
    "uvicorn-websockets": srv.Server("uvicorn-websockets", "uvicorn --ws websockets", "asgi",
                                     _uvicorn("websockets"),
                                     notes="window bits 15, memLevel 8, level 6"),
    "uvicorn-wsproto": srv.Server("uvicorn-wsproto", "uvicorn --ws wsproto", "asgi",
                                  _uvicorn("wsproto"), notes="window bits 15, memLevel 8, level 6"),
}


def variant_server(text: str) -> srv.Server:
    """`name:key=value,...` -> asgiws with those DeflateSettings fields."""
    name, _, fields = text.partition(":")
    settings = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        settings[key.strip()] = int(value)
    return srv.Server(f"asgiws-{name}", f"asgiws {name} ({fields})", "asgi", _asgiws(settings))


# ---------------------------------------------------------------------------------- driver


def run_client(spec: dict, logdir: str, tag: str) -> dict:
    argv = ["taskset", "-c", srv.CLIENT_CORE, srv.PYTHON, os.path.abspath(__file__), "client",
            json.dumps(spec)]
    with open(os.path.join(logdir, f"client-{tag}.log"), "wb") as err:
        try:
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, timeout=spec["timeout"]
                                 + 15, stdin=subprocess.DEVNULL).stdout
        except subprocess.TimeoutExpired:
            return {"error": "client timed out"}
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"client failed, see {logdir}/client-{tag}.log"}


def measure(server: srv.Server, mode: str, args, logdir: str, tag: str) -> dict:
    running = srv.Running(server, "echo", 4096, os.path.join(logdir, f"{tag}.log"))
    try:
        error = running.wait_ready()
        if error:
            return {"error": error}
        spec = {"mode": mode, "host": "127.0.0.1", "port": running.port,
                "server_pid": running.pid, "pool": args.pool, "timeout": 120}
        if mode == "rr":
            spec.update(conns=args.conns, warmup=args.warmup, duration=args.duration)
        else:
            spec.update(conns=args.memory_conns, rounds=args.memory_rounds)
        result = run_client(spec, logdir, tag)
        odd = srv.suspicious(running.new_log_lines())
        if odd:
            result["server_log"] = odd[:3]
        return result
    finally:
        running.stop()


def aggregate(rr_runs: list[dict], mem_runs: list[dict]) -> dict:
    good = [r for r in rr_runs if "error" not in r]
    mems = [r["value"] for r in mem_runs if "error" not in r]
    out: dict = {"errors": [r["error"] for r in rr_runs + mem_runs if "error" in r]}
    if good:
        best = max(good, key=lambda r: r["value"])
        out.update(best)
        out["per_cpu_s"] = max(r["per_cpu_s"] for r in good if r["per_cpu_s"])
        out["cpu_us_per_msg"] = min(r["cpu_us_per_msg"] for r in good if r["cpu_us_per_msg"])
        out["bad"] = sum(r["bad"] for r in good)
    out["kib_per_conn"] = statistics.median(mems) if mems else None
    return out


def paired_ratio(runs: list[dict], base_runs: list[dict]) -> float | None:
    """Median over repeats of per-CPU-second figure / uvicorn default's in the same repeat: a
    drift of the machine's speed between repeats moves it less than a ratio of two bests."""
    ratios = [r["per_cpu_s"] / b["per_cpu_s"] for r, b in zip(runs, base_runs)
              if r.get("per_cpu_s") and b.get("per_cpu_s")]
    return statistics.median(ratios) if ratios else None


def verdicts(table: dict) -> list[str]:
    """The acceptance items of the deflate scenario, asgiws (defaults) against uvicorn's."""
    a, u = table.get("asgiws"), table.get("uvicorn")
    if not a or not u or a.get("per_cpu_s") is None or u.get("per_cpu_s") is None:
        return []

    def line(label, ok, text):
        return f"- {label}: {text} — {'PASS' if ok else 'FAIL'}"

    best = a["per_cpu_s"] / u["per_cpu_s"]
    paired = a.get("paired_ratio") or 0.0
    mem = (a["kib_per_conn"] / u["kib_per_conn"]) if a.get("kib_per_conn") and \
        u.get("kib_per_conn") else None
    return [
        line("per server CPU-second ≥ 1.5× uvicorn default", best >= 1.5 and paired >= 1.5,
             f"{best:.2f}× (bests), {paired:.2f}× (median of the repeats' ratios)"),
        line("no more bytes on the wire than uvicorn default (level 6 both)",
             a["wire_in"] <= u["wire_in"] and a["wire_out"] <= u["wire_out"],
             f"{a['wire_in']:.1f} / {a['wire_out']:.1f} B/msg against "
             f"{u['wire_in']:.1f} / {u['wire_out']:.1f}"),
        line("memory per connection ≤ 0.5× uvicorn default", mem is not None and mem <= 0.5,
             f"{fmt(mem, '.2f')}×"),
    ]


def fmt(x, spec=".0f"):
    return "—" if x is None else format(x, spec)


def render(table: dict, servers: dict, meta: dict) -> str:
    base = table.get("uvicorn", {})
    lines = [f"Deflate echo, 1 KiB JSON text messages (`{meta['command']}`, {meta['date']}; "
             f"{meta['repeats']} repeats of {meta['duration']:g} s, best; wire: the pool of "
             f"{meta['pool']} messages sent once; memory: {meta['memory_conns']} connections "
             f"after {meta['memory_rounds']} messages each way, median). Ratios are to uvicorn's "
             "default in the same run.", "",
             "| server | round trips/s | per server CPU-s (ratio of bests; median of the "
             "repeats' ratios) | server µs CPU/msg | "
             "client CPU % | wire B/msg server→client | wire B/msg client→server | "
             "KiB/conn (ratio) |",
             "|---|---|---|---|---|---|---|---|"]

    def ratio(key, name):
        x, y = table[name].get(key), base.get(key)
        if not (x and y):
            return ""
        if key == "per_cpu_s" and table[name].get("paired_ratio"):
            return f" ({x / y:.2f}×; {table[name]['paired_ratio']:.2f}×)"
        return f" ({x / y:.2f}×)"

    for name, row in table.items():
        lines.append(
            f"| {servers[name].label} | {fmt(row.get('value'))} | "
            f"{fmt(row.get('per_cpu_s'))}{ratio('per_cpu_s', name)} | "
            f"{fmt(row.get('cpu_us_per_msg'), '.1f')} | {fmt(row.get('client_cpu'))} | "
            f"{fmt(row.get('wire_in'), '.1f')} | {fmt(row.get('wire_out'), '.1f')} | "
            f"{fmt(row.get('kib_per_conn'), '.1f')}{ratio('kib_per_conn', name)} |")
    lines += ["", "Negotiated (the server's Sec-WebSocket-Extensions for the browser's offer "
              f"`{OFFER}`):", ""]
    for name, row in table.items():
        lines.append(f"- {servers[name].label}: `{row.get('extensions', '?')}`"
                     + (f" — {servers[name].notes}" if servers[name].notes else ""))
    checks = verdicts(table)
    if checks:
        lines += ["", "Acceptance (asgiws with its defaults against uvicorn's default):", ""]
        lines += checks
    problems = [f"{servers[n].label}: {e}" for n, row in table.items() for e in row["errors"]]
    problems += [f"{servers[n].label}: {row['bad']} echoed messages differed"
                 for n, row in table.items() if row.get("bad")]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def driver(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="permessage-deflate echo benchmark")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--variant", action="append", default=[],
                   help="name:key=value,... asgiws with these DeflateSettings fields")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--memory-conns", type=int, default=2000)
    p.add_argument("--memory-rounds", type=int, default=5,
                   help="messages each way per connection before memory is read (5 KiB: "
                        "more than a 12-bit window)")
    p.add_argument("--pool", type=int, default=512, help="distinct messages, sent in a cycle")
    p.add_argument("--quick", action="store_true", help="one repeat of 2 s, 500 conns for memory")
    p.add_argument("--write", action="store_true", help="rewrite bench/RESULTS.md's deflate block")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.duration, args.warmup, args.memory_conns = 1, 2.0, 0.5, 500
    servers = {n: SERVERS[n] for n in args.servers.split(",") if n}
    for text in args.variant:
        server = variant_server(text)
        servers[server.name] = server
    logdir = tempfile.mkdtemp(prefix="asgiws-deflate-")
    print(f"# logs in {logdir}", file=sys.stderr)
    rr: dict[str, list] = {n: [] for n in servers}
    mem: dict[str, list] = {n: [] for n in servers}
    order = list(servers)
    for rep in range(args.repeats):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            for mode, runs in (("rr", rr), ("mem", mem)):
                result = measure(servers[name], mode, args, logdir, f"{name}-{mode}-{rep}")
                runs[name].append(result)
                print(f"# {rep} {name} {mode}: {json.dumps(result)}", file=sys.stderr)
    table = {n: aggregate(rr[n], mem[n]) for n in servers}
    for name in servers:
        table[name]["paired_ratio"] = paired_ratio(rr[name], rr.get("uvicorn", []))
    meta = {"command": "python bench/deflate.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "repeats": args.repeats, "duration": args.duration,
            "memory_conns": args.memory_conns, "memory_rounds": args.memory_rounds,
            "pool": args.pool}
    body = render(table, servers, meta)
    print(body)
    if args.write:
        run.write_results_md(os.path.join(srv.BENCH_DIR, "RESULTS.md"), body, MARK_START, MARK_END,
                             heading="permessage-deflate (bench/deflate.py)")
    return 0


# ----------------------------------------------------------------------- zlib, in-process


def _zlib_rss(kind: str, level: int, bits: int, mem_level: int) -> float:
    """KiB of RSS per zlib object after one message, in a fresh process (a freed heap is
    reused, so objects measured one after another in one process would look free)."""
    out = subprocess.run([srv.PYTHON, os.path.abspath(__file__), "zlib-rss", kind, str(level),
                          str(bits), str(mem_level)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def zlib_rss(kind: str, level: int, bits: int, mem_level: int, n: int = 2000) -> None:
    message = json_messages(1)[0]
    comp = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
    blob = comp.compress(message) + comp.flush(zlib.Z_SYNC_FLUSH)
    rss0 = rss_bytes([os.getpid()])
    keep = []
    for _ in range(n):
        if kind == "compress":
            obj = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
            obj.compress(message)
            obj.flush(zlib.Z_SYNC_FLUSH)
        else:
            obj = zlib.decompressobj(wbits=-bits)
            obj.decompress(blob)
        keep.append(obj)
    print((rss_bytes([os.getpid()]) - rss0) / n / 1024)


def _best_us(fn, items, passes: int = 5) -> float:
    """CPU µs per item of fn over items, the best of `passes` (noise only slows a pass down)."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.process_time()
        fn(items)
        best = min(best, time.process_time() - t0)
    return 1e6 * best / len(items)


def _asgiws_sender(level: int, bits: int, mem_level: int, kept: bool = False):
    """One connection's PerMessageDeflate; `kept`: among the connections that keep their
    compressor (else it primes one per message, as beyond asgiws' KEPT_COMPRESSORS)."""
    from asgiws.websocket import deflate
    from asgiws.websocket.deflate import DeflateParameters, DeflateSettings, PerMessageDeflate

    deflate.KEPT_COMPRESSORS = 128 if kept else 0

    params = DeflateParameters(server_no_context_takeover=False, client_no_context_takeover=False,
                               server_max_window_bits=bits, client_max_window_bits=bits)
    return PerMessageDeflate(params, DeflateSettings(server_max_window_bits=bits,
                                                     client_max_window_bits=bits,
                                                     mem_level=mem_level, compress_level=level))


def zlib_table(argv: list[str]) -> int:
    """zlib alone, in this process, on the benchmark's messages: what each setting costs."""
    messages = json_messages(2000)
    combos = [(6, 12, 5), (1, 12, 5), (4, 12, 5), (5, 12, 5), (9, 12, 5), (6, 12, 3), (6, 12, 4),
              (6, 12, 8), (6, 10, 5), (6, 11, 5), (6, 13, 5), (6, 15, 5), (6, 15, 8)]
    print("1 KiB JSON, context takeover, 2000 messages; CPU: best of 5 passes.\n")
    print("| level | window bits | memLevel | B/msg | µs/msg, kept compressor | µs/msg, asgiws "
          "(primed per message) | KiB RSS of a kept compressor | KiB asgiws keeps (window) |")
    print("|---|---|---|---|---|---|---|---|")
    for level, bits, mem_level in combos:
        def kept(items):
            comp = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
            return [comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH) for m in items]

        def primed(items):
            ext = _asgiws_sender(level, bits, mem_level)
            return [ext.compress(m) for m in items]

        size = sum(map(len, primed(messages))) / len(messages)
        kib = _zlib_rss("compress", level, bits, mem_level)
        print(f"| {level} | {bits} | {mem_level} | {size:.1f} | {_best_us(kept, messages):.1f} | "
              f"{_best_us(primed, messages):.1f} | {kib:.1f} | {2 ** bits / 1024:g} |")
    print("\n| decompressor window bits | KiB RSS of a kept decompressor after one message |")
    print("|---|---|")
    for bits in (15, 12, 11, 10):
        print(f"| {bits} | {_zlib_rss('decompress', 6, bits, 8):.1f} |")
    print("\nSmall messages after 1 KiB ones (level 6, 12 bits, memLevel 5): what compressing "
          "them saves and costs.\n")
    print("| message size | B compressed (payload) | µs to compress, primed | "
          "µs to compress, kept compressor |")
    print("|---|---|---|---|")
    for size in (16, 32, 64, 128, 256, 512):
        small = small_messages(500, size)
        us = {}
        for kept in (False, True):
            ext = _asgiws_sender(6, 12, 5, kept)
            for m in messages[:8]:
                ext.compress(m)
            out = sum(len(ext.compress(m)) for m in small) / len(small)
            us[kept] = _best_us(lambda items: [ext.compress(m) for m in items], small)
        print(f"| {size} | {out:.1f} | {us[False]:.1f} | {us[True]:.1f} |")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(json.loads(sys.argv[2]))
    elif sys.argv[1:2] == ["serve"]:
        serve_main(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["zlib-rss"]:
        zlib_rss(sys.argv[2], *map(int, sys.argv[3:6]))
    elif sys.argv[1:2] == ["zlib"]:
        sys.exit(zlib_table(sys.argv[2:]))
    else:
        sys.exit(driver(sys.argv[1:]))
