"""Fuzz a live asgiws process over real sockets: mutated HTTP requests, mutated WebSocket
upgrade requests, and mutated frame streams after a valid handshake, while a healthy side
client keeps echoing beside them.

    .venv/bin/python tests/fuzz/live.py --minutes 30 --seed 7        # the long run
    .venv/bin/python tests/fuzz/live.py --seconds 45 --seed 1        # what tests/test_live_fuzz.py runs
    .venv/bin/python tests/fuzz/live.py --seed 7 --replay 1234       # input 1234 of seed 7 again, shown

The server (tests/apps/hostile.py, `python -m asgiws` pinned like tests/floods.py does) runs
with short timeouts, so that every input ends quickly one way or another:
`--timeout-header 1 --ws-close-timeout 1 --ws-accept-timeout 1 --timeout-write-stall 1
--timeout-keep-alive 1`.

Input N of seed S is made by `random.Random(f"{S}:{N}")` alone, so it is the same whatever ran
before it or beside it: a valid message from a small corpus, then structural mutations (header
lines duplicated, dropped or swollen; Content-Length and chunk sizes rewritten; frame length
fields rewritten, control frames interleaved, flags and opcodes flipped, masks dropped,
fragments lost or doubled) and byte-level ones (bit flips, overwrites, truncation, duplication,
splices from another corpus item), then random TCP segmentation with small pauses.

For every input the server must, within the timeouts (it is given 2.5 s of silence, or 10 s in
all, after the last byte): answer with RFC 9110 statuses and/or an RFC 6455 close code it may
send, or close; or, if it legitimately waits for more (an open WebSocket, a body still
announced), close once we half-close (2 s). Outcomes are counted in a histogram. Besides that:
the server never exits, never logs an error or a traceback, its RSS stays within 64 MiB of the
start, and a fresh WebSocket still echoes at the end. The side client's echo p99 is reported;
the command (not the suite's short run) also requires it under 50 ms.

Exit status: 0 when nothing was violated, 1 otherwise (the violations are listed, each with the
command that replays it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for floods

import floods  # noqa: E402
from floods import (  # noqa: E402
    CONNECT_TIMEOUT, MiB, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, FrameReader,
    STATUS_LINE, deflate_message, frame_header, handshake_request, mask_payload, read_head,
)

SERVER_ARGS = ("--timeout-header", "1", "--ws-close-timeout", "1", "--ws-accept-timeout", "1",
               "--timeout-write-stall", "1", "--timeout-keep-alive", "1")
OPTIONAL_ARGS = ("--timeout-write-stall", "1")  # new in issue 13: dropped (with a note) for older builds
QUIET = 2.5  # seconds of silence after the last byte before we call the connection "waiting"
HARD = 10.0  # the most an input may take after its last byte before we half-close
AFTER_FIN = 2.0  # after our half-close, the server must close within this
RSS_LIMIT_MIB = 64
P99_LIMIT_MS = 50.0

# RFC 9110 status codes a server may answer with (and 101 for the upgrade).
STATUSES = {100, 101, 200, 400, 403, 404, 405, 408, 411, 413, 414, 417, 426, 431, 500, 501, 503, 505}


def close_code_allowed(code: int) -> bool:
    """Codes an endpoint may send (RFC 6455 §7.4; 1012-1014 from the IANA registry). 1005 is our
    reader's name for an empty Close, which answers an empty one."""
    return code in (1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Input:
    index: int
    family: str  # "http", "upgrade", "frames"
    data: bytes  # what goes on the wire (after the handshake, for "frames")
    segments: List[Tuple[int, float]]  # (end offset, pause before sending the next one)
    handshake: Optional[bytes] = None  # sent first and answered with 101, for "frames"
    steps: List[str] = field(default_factory=list)  # the mutations applied, for the replay


HTTP_CORPUS = [
    b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /echo?x=1&y=%20z HTTP/1.1\r\nHost: fuzz\r\nUser-Agent: live-fuzz\r\nAccept: */*\r\n"
    b"Connection: keep-alive\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
    b"POST /upload HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\nPOST /upload HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 3\r\n\r\nabc"
    b"GET / HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
]

# A push endpoint that never calls receive(), so it cannot learn that its client left; it ends
# after 5 s, so that the RSS bound measures the server rather than apps outliving their
# connections (each such app keeps its protocol and task, ~15 KiB, for as long as it runs).
PUSH = "/push?every=0&seconds=5"

EXTENSION_OFFERS = [
    "permessage-deflate", "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9, permessage-deflate", "x-webkit-deflate-frame",
]


def upgrade_request(rng: random.Random) -> bytes:
    extra = []
    if rng.random() < 0.5:
        extra.append("Sec-WebSocket-Extensions: " + rng.choice(EXTENSION_OFFERS))
    if rng.random() < 0.3:
        extra.append("Sec-WebSocket-Protocol: chat, superchat")
    if rng.random() < 0.3:
        extra.append("Origin: http://fuzz")
    path = rng.choice(["/", "/echo", "/echo?a=1", PUSH])
    return handshake_request(path, host="fuzz", extra=extra, nonce=rng.randbytes(16))


# Frames are built as (fin, rsv, opcode, payload, masked) and encoded at the end, so that
# structural mutations can rewrite their headers.
FrameSpec = Tuple[bool, int, int, bytes, bool]

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 16 * MiB, 16 * MiB + 1, 2**63 - 1, 2**64 - 1]


def encode(spec: FrameSpec, length: Optional[int] = None) -> bytes:
    fin, rsv, opcode, payload, masked = spec
    mask = bytes([0x5A, 0xC3, 0x0F, 0x96]) if masked else None
    real = len(payload)
    length = real if length is None else length
    header = frame_header(opcode, min(length, 2**64 - 1), fin, False, mask)
    header = bytes([header[0] | rsv << 4]) + header[1:]
    return header + (mask_payload(payload, mask) if mask else payload)


def text_payload(rng: random.Random, characters: int) -> bytes:
    """Valid UTF-8 with 1- to 4-byte characters."""
    return "".join(rng.choice("aé€😀 z") for _ in range(characters)).encode()


def frame_stream(rng: random.Random, deflate: bool) -> List[FrameSpec]:
    """A valid client stream: messages (some fragmented, some compressed), pings and pongs, and
    usually a Close at the end."""
    frames: List[FrameSpec] = []
    for _ in range(rng.randint(1, 8)):
        size = rng.choice([0, 1, 5, 60, 125, 126, 300, 2000, 70000])
        kind = rng.choice(["text", "binary", "fragmented", "ping", "pong", "compressed"])
        if kind == "text":
            frames.append((True, 0, OP_TEXT, text_payload(rng, min(size, 2000)), True))
        elif kind == "binary":
            frames.append((True, 0, OP_BINARY, rng.randbytes(size), True))
        elif kind == "fragmented":
            opcode = rng.choice([OP_TEXT, OP_BINARY])
            pieces = rng.randint(2, 5)
            for piece in range(pieces):
                payload = b"frag" * rng.randint(0, 3) if opcode == OP_BINARY else "é€".encode() * rng.randint(0, 3)
                frames.append((piece == pieces - 1, 0, opcode if piece == 0 else OP_CONT, payload, True))
                if rng.random() < 0.3 and piece < pieces - 1:
                    frames.append((True, 0, OP_PING, b"between", True))  # allowed between fragments
        elif kind in ("ping", "pong"):
            frames.append((True, 0, OP_PING if kind == "ping" else OP_PONG, rng.randbytes(min(size, 125)), True))
        elif deflate:
            frames.append((True, 4, OP_TEXT, deflate_message(b"compressed " * (size // 11 + 1)), True))
    if rng.random() < 0.7:
        code = rng.choice([1000, 1001, 3000, 4999])
        frames.append((True, 0, OP_CLOSE, struct.pack("!H", code) + b"bye", True))
    return frames


def mutate_frames(rng: random.Random, frames: List[FrameSpec], steps: List[str]) -> bytes:
    """Structural mutations on the frame list; returns the encoded stream."""
    lengths: Dict[int, int] = {}
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        if not frames:
            break
        i = rng.randrange(len(frames))
        fin, rsv, opcode, payload, masked = frames[i]
        op = rng.choice(["length", "control", "control", "flags", "opcode", "unmask", "utf8",
                         "drop", "duplicate", "fin"])
        steps.append(f"{op}@{i}")
        if op == "length":
            lengths[i] = rng.choice(LENGTHS)
        elif op == "control":
            control = rng.choice([
                (True, 0, OP_PING, b"p" * rng.choice([0, 125, 126]), True),  # 126: too long
                (True, 0, OP_PONG, b"unsolicited", True),
                (False, 0, OP_PING, b"fragmented ping", True),
                (True, 0, OP_CLOSE, struct.pack("!H", rng.choice([999, 1004, 1005, 1006, 1015, 2999, 5000])), True),
                (True, 0, OP_CLOSE, b"\x03", True),  # a 1-byte Close payload
                (True, 0, OP_CLOSE, b"\x03\xe8\xff\xfe", True),  # reason not UTF-8
                (True, 0, OP_CLOSE, b"", True),
            ])
            frames.insert(i, control)
        elif op == "flags":
            frames[i] = (fin, rsv | rng.choice([1, 2, 4]), opcode, payload, masked)
        elif op == "opcode":
            frames[i] = (fin, rsv, rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xF]), payload, masked)
        elif op == "unmask":
            frames[i] = (fin, rsv, opcode, payload, False)
        elif op == "utf8":
            bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
            frames[i] = (fin, rsv, OP_TEXT if opcode not in (OP_CONT, OP_CLOSE) else opcode,
                         payload[:3] + bad + payload[3:], masked)
        elif op == "drop":
            del frames[i]
        elif op == "duplicate":
            frames.insert(i, frames[i])
        else:
            frames[i] = (not fin, rsv, opcode, payload, masked)
    return b"".join(encode(spec, lengths.get(i)) for i, spec in enumerate(frames))


def mutate_http(rng: random.Random, data: bytes, steps: List[str]) -> bytes:
    """Header-level mutations of an HTTP request (or upgrade request)."""
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        head_end = data.find(b"\r\n\r\n")
        lines = data[:head_end].split(b"\r\n") if head_end > 0 else [data]
        rest = data[head_end:] if head_end > 0 else b""
        op = rng.choice(["dup_header", "drop_crlf", "lf_only", "huge_header", "many_headers", "fold",
                         "bad_char", "version", "method", "content_length", "chunk_size",
                         "transfer_encoding", "drop_header"])
        steps.append(op)
        i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
        if op == "dup_header" and len(lines) > 1:
            lines.insert(i, lines[i])
        elif op == "drop_header" and len(lines) > 1:
            del lines[i]
        elif op == "drop_crlf":
            joined = b"\r\n".join(lines) + rest
            spots = [k for k in range(len(joined)) if joined.startswith(b"\r\n", k)]
            if spots:
                k = rng.choice(spots)
                data = joined[:k] + joined[k + 2:]
                continue
        elif op == "lf_only":
            data = (b"\r\n".join(lines) + rest).replace(b"\r\n", b"\n")
            continue
        elif op == "huge_header":
            lines.insert(i or 1, b"X-Big: " + b"a" * rng.choice([100, 8000, 70000]))
        elif op == "many_headers":
            lines[i + 1:i + 1] = [b"X-H%d: v" % n for n in range(rng.choice([50, 101, 150]))]
        elif op == "fold":
            lines.insert(i or 1, b" folded continuation")
        elif op == "bad_char":
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice([b"\x00", b"\x7f", b"\xff", b" ", b":", b"\t", b"\r"]) + line[k:]
        elif op == "version":
            lines[0] = lines[0].replace(b"HTTP/1.1", rng.choice([b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9",
                                                                b"HTTP/1.1x", b"HTTP/11", b""]))
        elif op == "method":
            lines[0] = rng.choice([b"get", b"G\x00T", b"CONNECT", b"PRI", b"X" * 300]) + b" " + \
                lines[0].partition(b" ")[2]
        elif op == "content_length":
            value = rng.choice([b"-1", b"0", b"99999999999999999999", b"1e3", b"0x10", b" 5", b"5, 5", b"", b"+4"])
            lines.insert(i or 1, b"Content-Length: " + value)
        elif op == "chunk_size":
            rest = rest.replace(b"\r\n5\r\n", b"\r\n" + rng.choice([b"ffffffffffffffffff", b"-5", b"5;ext=1",
                                                                    b"zz", b"", b"5 "]) + b"\r\n", 1)
        elif op == "transfer_encoding":
            lines.insert(i or 1, b"Transfer-Encoding: " + rng.choice([b"chunked", b"chunked, chunked",
                                                                     b"gzip", b"Chunked", b"identity"]))
        data = b"\r\n".join(lines) + rest
    return data


def mutate_bytes(rng: random.Random, data: bytes, corpus: List[bytes], steps: List[str]) -> bytes:
    stream = bytearray(data)
    for _ in range(rng.choice([0, 0, 1, 2])):
        if not stream:
            break
        op = rng.choice(["bitflip", "overwrite", "truncate", "duplicate", "splice"])
        steps.append(op)
        where = rng.randrange(len(stream))
        if op == "bitflip":
            stream[where] ^= 1 << rng.randrange(8)
        elif op == "overwrite":
            stream[where] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x0D, 0x0A, 0x3A, 0x20, rng.randrange(256)])
        elif op == "truncate":
            del stream[where:]
        elif op == "duplicate":
            stream[where:where] = stream[where:where + rng.randint(1, 64)]
        else:
            other = rng.choice(corpus)
            start = rng.randrange(len(other))
            stream[where:where] = other[start:start + rng.randint(1, 200)]
    return bytes(stream)


def segments(rng: random.Random, length: int) -> List[Tuple[int, float]]:
    """Where the stream is cut into sends, and the pause after each (at most 1 s in all)."""
    if length == 0:
        return [(0, 0.0)]
    if length <= 64 and rng.random() < 0.15:
        cuts = list(range(1, length + 1))
    else:
        count = rng.choice([1, 1, 2, 3, 5, 10, 50])
        cuts = sorted({rng.randint(1, length) for _ in range(count - 1)} | {length})
    pauses = [rng.choice([0.0, 0.0, 0.0, 0.001, 0.005, 0.02]) for _ in cuts]
    scale = min(1.0, 1.0 / sum(pauses)) if sum(pauses) else 1.0
    return [(cut, pause * scale) for cut, pause in zip(cuts, pauses)]


FRAME_CORPUS = [b"".join(encode(spec) for spec in frame_stream(random.Random(k), False)) for k in range(3)]


def make_input(seed: int, index: int) -> Input:
    rng = random.Random(f"{seed}:{index}")
    family = rng.choice(["http", "upgrade", "frames", "frames"])
    steps: List[str] = []
    if family == "http":
        data = mutate_http(rng, rng.choice(HTTP_CORPUS), steps)
        data = mutate_bytes(rng, data, HTTP_CORPUS, steps)
        return Input(index, family, data, segments(rng, len(data)), steps=steps)
    if family == "upgrade":
        request = mutate_http(rng, upgrade_request(rng), steps)
        request = mutate_bytes(rng, request, HTTP_CORPUS, steps)
        follow = b""
        if rng.random() < 0.5:  # frames right behind the request (a client should wait for the 101)
            follow = b"".join(encode(spec) for spec in frame_stream(rng, deflate=False))
        data = request + follow
        return Input(index, family, data, segments(rng, len(data)), steps=steps)
    deflate = rng.random() < 0.4
    handshake = handshake_request(rng.choice(["/echo", "/", PUSH]), deflate=deflate, host="fuzz",
                                  nonce=rng.randbytes(16))
    frames = frame_stream(rng, deflate)
    data = mutate_frames(rng, frames, steps)
    data = mutate_bytes(rng, data, FRAME_CORPUS, steps)
    return Input(index, family, data, segments(rng, len(data)), handshake=handshake, steps=steps)


# ---------------------------------------------------------------------------------------------
# Running one input


@dataclass
class Outcome:
    label: str
    violation: Optional[str] = None
    seconds: float = 0.0  # from the last byte sent to the end


def run_input(port: int, item: Input) -> Outcome:
    started = time.monotonic()
    try:
        sock = floods.connect(port, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        return Outcome("connect failed", f"could not connect: {exc!r}")
    received = bytearray()
    upgraded = False
    try:
        if item.handshake is not None:
            try:
                sock.sendall(item.handshake)
                head, rest = read_head(sock, time.monotonic() + CONNECT_TIMEOUT)
            except (OSError, EOFError) as exc:
                return Outcome("handshake failed", f"a valid handshake failed: {exc!r}")
            if not head.startswith(b"HTTP/1.1 101"):
                return Outcome("handshake refused", f"a valid handshake got {head[:60]!r}")
            upgraded = True
            received += rest
        position = 0
        for end, pause in item.segments:
            try:
                sock.sendall(item.data[position:end])
            except OSError:  # the server already closed: what it said is read below
                break
            position = end
            if pause:
                time.sleep(pause)
        sent_at = time.monotonic()
        end = read_until_closed(sock, received, QUIET, HARD)
        if end == "waiting":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            end = read_until_closed(sock, received, AFTER_FIN, AFTER_FIN)
            end = "HANG" if end == "waiting" else f"{end} on our FIN"
        elapsed = time.monotonic() - sent_at
    except (OSError, EOFError) as exc:
        return Outcome("harness error", f"{exc!r}")
    finally:
        sock.close()
    return classify(bytes(received), upgraded, end, elapsed)


def read_until_closed(sock: socket.socket, received: bytearray, quiet: float, hard: float) -> str:
    """Read until EOF ("closed"), a reset ("reset"), `quiet` s without a byte or `hard` s in all
    ("waiting")."""
    deadline = time.monotonic() + hard
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        remaining = min(quiet, deadline - time.monotonic())
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return "waiting"
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return "reset"
        if not data:
            return "closed"
        if len(received) < 4 * MiB:
            received += data


def classify(received: bytes, upgraded: bool, end: str, elapsed: float) -> Outcome:
    """The outcome's label (what the server answered, how the connection ended) and the rule it
    broke, if any."""
    violation = None
    frames_data = received if upgraded else b""
    statuses: List[int] = []
    if not upgraded:
        if received and not received.startswith(b"HTTP/1."):
            looks_like_a_frame = received[0] & 0x7F in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
            what = "WebSocket frames before (or without) a 101" if looks_like_a_frame else "an answer that is not HTTP"
            violation = f"{what}: {received[:24]!r}"
        switch = received.find(b"HTTP/1.1 101 ")  # after other responses, if requests came first
        if switch >= 0:
            head_end = received.find(b"\r\n\r\n", switch)
            frames_data = received[head_end + 4:] if head_end >= 0 else b""
            statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(received[:switch])] + [101]
            upgraded = True
        else:
            statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(received)]
    bad = [code for code in statuses if code not in STATUSES]
    if bad:
        violation = f"status {bad} is not one we may send"
    if upgraded:
        reader = FrameReader(keep=125)
        reader.feed(frames_data)
        if reader.error:
            violation = f"the server sent a bad frame: {reader.error}"
        unknown = set(reader.counts) - {OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING, OP_PONG}
        if unknown:
            violation = f"the server sent opcodes {sorted(unknown)}"
        code = reader.close_code
        if code is not None and not close_code_allowed(code):
            violation = f"close code {code} may not be sent"
        answer = f"ws close {code}" if code is not None else "ws, no close"
    elif statuses:
        answer = "http " + "+".join(str(code) for code in sorted(set(statuses)))
    else:
        answer = "no answer"
    if end == "HANG":
        violation = violation or f"still open {HARD:g} s after the last byte and {AFTER_FIN:g} s after our FIN"
    return Outcome(f"{answer}, {end}", violation, elapsed)


# ---------------------------------------------------------------------------------------------
# The run


def server_errors(server: floods.Server) -> List[str]:
    """Lines of the server's log that report an error or a traceback (a peer's doing must be
    logged at info or debug)."""
    server.log.flush()
    server.log.seek(0)
    return [line.rstrip() for line in server.log if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line]


def fuzz(seed: int, seconds: float, workers: int = 16, log=print) -> dict:
    """Run inputs 0, 1, 2... of `seed` for `seconds` against a fresh server; returns the report."""
    histogram: Counter = Counter()
    families: Counter = Counter()
    violations: List[dict] = []
    lock = threading.Lock()
    next_index = [0]
    stop = threading.Event()
    report: dict = {"seed": seed, "seconds": seconds, "workers": workers, "server_args": list(SERVER_ARGS)}
    floods.raise_nofile()
    server, note = floods.start_server("asgiws", SERVER_ARGS, optional=OPTIONAL_ARGS)
    report["server_args"] = server.args
    if note:
        report["note"] = note
    with server:
        floods.warm_up(server.port)
        with floods.Probe(server.port) as probe:
            rss_start = floods.wait_until_still(server.rss_kib, quiet=0.3, timeout=3)
            probe.reset()
            with floods.Monitor(server, interval=0.05) as monitor:

                def worker() -> None:
                    while not stop.is_set():
                        with lock:
                            index = next_index[0]
                            next_index[0] += 1
                        item = make_input(seed, index)
                        try:
                            outcome = run_input(server.port, item)
                        except Exception as exc:  # the harness's own bug: reported, not fatal
                            outcome = Outcome("harness error", f"{exc!r}")
                        with lock:
                            histogram[f"{item.family}: {outcome.label}"] += 1
                            families[item.family] += 1
                            if outcome.violation:
                                violations.append({"index": index, "family": item.family,
                                                   "label": outcome.label, "violation": outcome.violation,
                                                   "steps": item.steps,
                                                   "replay": f"tests/fuzz/live.py --seed {seed} --replay {index}"})
                        if not server.alive():
                            stop.set()

                threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
                began = time.monotonic()
                for thread in threads:
                    thread.start()
                last_log = began
                while time.monotonic() - began < seconds and not stop.is_set():
                    time.sleep(0.2)
                    if time.monotonic() - last_log >= 60:
                        last_log = time.monotonic()
                        log(f"{int(last_log - began)} s: {sum(families.values())} inputs, "
                            f"{len(violations)} violations, RSS peak +{(monitor.peak_kib - rss_start) / 1024:.1f} MiB")
                stop.set()
                for thread in threads:
                    thread.join(HARD + AFTER_FIN + CONNECT_TIMEOUT + 5)
            side = probe.stop()
        alive = server.alive()
        growth_mib = (monitor.peak_kib - rss_start) / 1024
        errors = server_errors(server)
        serving = alive and floods.liveness(server.port)
    echo = side.get("echo") or {}
    report.update(
        inputs=sum(families.values()), families=dict(families),
        histogram=dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        violations=violations, server_alive=alive, serving_after=serving,
        rss_start_mib=round(rss_start / 1024, 1), rss_peak_growth_mib=round(growth_mib, 1),
        server_error_lines=errors[:20], side_client=side,
    )
    problems = [f"{len(violations)} inputs broke a rule"] if violations else []
    if not alive:
        problems.append(f"the server exited ({server.proc.returncode})")
    elif not serving:
        problems.append("the server did not serve a new WebSocket at the end")
    if growth_mib > RSS_LIMIT_MIB:
        problems.append(f"RSS grew {growth_mib:.1f} MiB (limit {RSS_LIMIT_MIB})")
    if errors:
        problems.append(f"{len(errors)} error lines in the server's log")
    if side.get("error") or echo.get("errors"):
        problems.append(f"the side client failed: {side.get('error') or echo}")
    report["problems"] = problems
    report["side_p99_ms"] = echo.get("p99_ms")
    return report


def print_report(report: dict, out=sys.stdout) -> None:
    echo = report["side_client"].get("echo") or {}
    connect = report["side_client"].get("connect") or {}
    print(f"seed {report['seed']}: {report['inputs']} inputs in {report['seconds']:g} s "
          f"({', '.join(f'{k} {v}' for k, v in sorted(report['families'].items()))}); "
          f"RSS {report['rss_start_mib']} MiB, peak +{report['rss_peak_growth_mib']} MiB; "
          f"side echo p50/p99/max {echo.get('p50_ms')}/{echo.get('p99_ms')}/{echo.get('max_ms')} ms, "
          f"connect max {connect.get('max_ms')} ms", file=out)
    if report.get("note"):
        print(f"note: {report['note']}", file=out)
    print("outcomes:", file=out)
    for label, count in report["histogram"].items():
        print(f"  {count:6}  {label}", file=out)
    for violation in report["violations"][:50]:
        print(f"VIOLATION input {violation['index']} ({violation['family']}, {' '.join(violation['steps'])}): "
              f"{violation['violation']} [{violation['label']}]  -> {violation['replay']}", file=out)
    for line in report["server_error_lines"]:
        print(f"SERVER LOG: {line}", file=out)
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}", file=out)


def replay(seed: int, index: int) -> int:
    item = make_input(seed, index)
    print(f"input {index} of seed {seed}: {item.family}, mutations: {' '.join(item.steps) or 'none'}")
    if item.handshake:
        print(f"handshake: {item.handshake!r}")
    shown = item.data if len(item.data) <= 2000 else item.data[:2000] + b"..."
    print(f"{len(item.data)} bytes in {len(item.segments)} sends: {shown!r}")
    server, note = floods.start_server("asgiws", SERVER_ARGS, optional=OPTIONAL_ARGS)
    if note:
        print(note)
    with server:
        outcome = run_input(server.port, item)
        print(f"outcome: {outcome.label} after {outcome.seconds:.2f} s; violation: {outcome.violation}")
        errors = server_errors(server)
        for line in errors:
            print(f"SERVER LOG: {line}")
    return 1 if outcome.violation or errors else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=16, help="inputs in flight at once")
    parser.add_argument("--replay", type=int, default=None, help="run this input alone and show it")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--asgiws-tree", default=None, help="run asgiws from this built source tree")
    parser.add_argument("--no-latency-check", action="store_true",
                        help=f"report the side client's p99 without requiring it under {P99_LIMIT_MS:g} ms")
    args = parser.parse_args(argv)
    if args.asgiws_tree:
        os.environ["FLOODS_ASGIWS_TREE"] = args.asgiws_tree
    if args.replay is not None:
        return replay(args.seed, args.replay)
    seconds = args.seconds if args.seconds is not None else (args.minutes or 1) * 60
    report = fuzz(args.seed, seconds, args.workers, log=lambda line: print(line, file=sys.stderr, flush=True))
    if not args.no_latency_check and (report["side_p99_ms"] or 0) >= P99_LIMIT_MS:
        report["problems"].append(f"side client p99 {report['side_p99_ms']} ms >= {P99_LIMIT_MS:g} ms")
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
