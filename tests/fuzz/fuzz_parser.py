"""Fuzz asgiws._codec.FrameParser against asgiws._reference.ReferenceParser.

Each input is a parser configuration, a way to split the stream into reads, and a stream: raw
bytes, or (one input in two) a "recipe" that the reference builder turns into a valid frame stream
which is then mutated (bit flips, byte overwrites, truncation, splices of its own pieces). The codec
is fed through feed_data() and, separately, through get_buffer()/feed() with other read sizes
(half the time with bare_messages=True); the frames, close code, buffered byte count and
bytes_parsed must match the reference after every read, and nothing may crash.

    python tests/fuzz/fuzz_parser.py --minutes 10            # atheris if installed, else hypothesis
    python tests/fuzz/fuzz_parser.py --engine hypothesis --minutes 10
    python tests/fuzz/fuzz_parser.py --replay crash-1234abcd  # rerun saved inputs

Under atheris (libFuzzer) the reference parser is instrumented, so coverage of its branches -- one
per rule of RFC 6455 that the codec must also apply -- guides the search. Extra arguments after
`--` go to libFuzzer (e.g. `-- -jobs=2 -workers=2`). See tests/fuzz/README.md.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [REPO]

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None:
    import asgiws  # noqa: F401  (imported first: the package is not worth instrumenting)

    with atheris.instrument_imports(include=["asgiws._reference"]):
        from asgiws import _reference
else:
    from asgiws import _reference

from asgiws import _codec  # noqa: E402  (C extension: not instrumentable)

MAX_SIZES = [16 * 1024 * 1024, 200, 60, 1 << 40]

executions = 0


# ---------------------------------------------------------------------------------------------
# Inputs


class Reader:
    """Consumes an input's bytes as small integers; zeros once exhausted."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def byte(self) -> int:
        if self.position >= len(self.data):
            return 0
        self.position += 1
        return self.data[self.position - 1]

    def rest(self) -> bytes:
        rest = self.data[self.position :]
        self.position = len(self.data)
        return rest

    def take(self, n: int) -> bytes:
        chunk = self.data[self.position : self.position + n]
        self.position += len(chunk)
        return chunk


def stream_from_recipe(reader: Reader, is_server: bool, rsv1_allowed: bool) -> bytes:
    """A valid stream of up to 12 frames built by the reference, then 0-3 mutations."""
    frames = []
    message_open = False
    for _ in range(reader.byte() % 12 + 1):
        kind = reader.byte()
        size = reader.byte()
        if kind & 0x80 and size & 0xC0 == 0xC0:  # now and then a 16-bit or 64-bit length
            size = (size & 0x3F) << 8 | reader.byte()
            size = size * 4 if kind & 1 else size + 126
        payload = bytes((reader.byte() + i) & 0xFF for i in range(min(size, 4))) * (size // 4 + 1)
        payload = payload[:size]
        choice = kind % 6
        if choice in (0, 1) and not message_open:  # a new message
            opcode = (_reference.Opcode.TEXT, _reference.Opcode.BINARY)[choice]
            if opcode == _reference.Opcode.TEXT:  # kept short: UTF-8 is checked in Python
                size = min(size, 700)
                payload = ("aé€😀"[size % 4] * size).encode()[:size]
            fin = bool(kind & 0x10)
            rsv1 = rsv1_allowed and bool(kind & 0x20)
            message_open = not fin
        elif choice in (2, 3) and message_open:  # next fragment
            opcode, fin, rsv1 = _reference.Opcode.CONTINUATION, bool(kind & 0x10), False
            message_open = not fin
        elif choice == 4:
            opcode, fin, rsv1 = _reference.Opcode.CLOSE, True, False
            payload = struct.pack("!H", 1000 + (size % 15)) + b"bye"[: size % 4]
        else:
            opcode = (_reference.Opcode.PING, _reference.Opcode.PONG)[kind & 1]
            fin, rsv1 = True, False
            payload = payload[:125]
        key = reader.take(4).ljust(4, b"\x00") if is_server else None
        frames.append(_reference.build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=key))
    stream = bytearray(b"".join(frames))
    for _ in range(reader.byte() % 4):
        operation, where = reader.byte() % 4, (reader.byte() << 8 | reader.byte())
        if not stream:
            break
        where %= len(stream)
        if operation == 0:
            stream[where] ^= 1 << (reader.byte() % 8)
        elif operation == 1:
            stream[where] = reader.byte()
        elif operation == 2:
            del stream[where:]
        else:  # splice: repeat a slice of the stream somewhere else
            length = reader.byte()
            stream[where:where] = stream[(where * 7) % len(stream) :][:length]
    return bytes(stream)


def cut_points(rng: random.Random, length: int) -> list[int]:
    """Where reads end: none, a few, many, or after every byte of a short stream (the reference
    re-validates a partial text frame from its start on every read: quadratic, so short)."""
    if length <= 160 and rng.random() < 0.2:
        return list(range(length + 1))
    count = rng.choice([0, 1, 2, 5, 20, 64])
    return sorted({0, length, *(rng.randint(0, length) for _ in range(count))})


# ---------------------------------------------------------------------------------------------
# One execution


def describe(item) -> tuple:
    """A Frame, or the payload alone that a `bare_messages=True` parser returns for a message."""
    if isinstance(item, (bytes, str)):
        return ("message", type(item).__name__, item)
    return (bool(item.fin), bool(item.rsv1), int(item.opcode), type(item.payload).__name__,
            item.payload)


def as_bare(described: list) -> list:
    """The frames a `bare_messages=True` parser returns bare: whole uncompressed messages."""
    return [("message",) + frame[3:] if frame[0] and not frame[1] and frame[2] in (1, 2) else frame
            for frame in described]


def summary(parser, frames, stopped: bool) -> tuple:
    """Frames, close code, and buffered bytes while the parser runs (after an error or a Close
    frame, what happens to later bytes is left to each parser as long as it keeps none)."""
    error = parser.error
    stopped = stopped or error is not None or any(
        getattr(frame, "opcode", None) == 0x8 for frame in frames)
    return (
        [describe(frame) for frame in frames],
        None if error is None else error.code,
        None if stopped else parser.buffered,
    )


def run_one(data: bytes) -> None:
    global executions
    executions += 1
    reader = Reader(data)
    flags = reader.byte()
    is_server = bool(flags & 1)
    rsv1_allowed = bool(flags & 2)
    max_size = MAX_SIZES[(flags >> 2) & 3]
    rng = random.Random(reader.byte() << 8 | reader.byte())
    if flags & 0x80:
        stream = stream_from_recipe(reader, is_server, rsv1_allowed)
    else:
        stream = reader.rest()

    options = dict(is_server=is_server, rsv1_allowed=rsv1_allowed, max_size=max_size)
    reference = _reference.ReferenceParser(**options)
    codec = _codec.FrameParser(**options)
    bounds = cut_points(rng, len(stream))
    all_frames = []
    stopped = False
    for start, end in zip(bounds, bounds[1:]):
        chunk = stream[start:end]
        expected = summary(reference, reference.feed_data(chunk), stopped)
        got = summary(codec, codec.feed_data(chunk), stopped)
        stopped = expected[2] is None
        if got != expected:
            raise AssertionError(
                f"codec != reference after bytes {start}:{end} of {len(stream)}\n"
                f"options={options}\nstream={stream!r}\nreference={expected!r}\ncodec={got!r}")
        all_frames += got[0]

    # The same stream through get_buffer()/feed(), maybe returning bare messages.
    bare = rng.random() < 0.5
    parser = _codec.FrameParser(**options, initial_size=rng.choice([1, 8192, 65536]),
                                bare_messages=bare)
    frames = []
    position = 0
    while position < len(stream):
        buffer = parser.get_buffer(rng.choice([-1, 0, 1, 100, 1 << 16]))
        if len(buffer) == 0:
            raise AssertionError("get_buffer returned an empty buffer")
        n = min(len(buffer), len(stream) - position, rng.choice([1, 2, 7, 64, 1000, 1 << 20]))
        buffer[:n] = stream[position : position + n]
        del buffer
        frames += parser.feed(n)
        position += n
    got = summary(parser, frames, False)
    expected = (as_bare(all_frames) if bare else all_frames,
                None if reference.error is None else reference.error.code,
                None if stopped else reference.buffered)
    if parser.bytes_parsed != reference.bytes_parsed:
        raise AssertionError(f"bytes_parsed {parser.bytes_parsed} != "
                             f"{reference.bytes_parsed}\nstream={stream!r}")
    if got != expected:
        raise AssertionError(
            f"get_buffer/feed != reference\noptions={options}\nstream={stream!r}\n"
            f"reference={expected!r}\ncodec={got!r}")


# ---------------------------------------------------------------------------------------------
# Seeds and engines


def seed_corpus(directory: str, count: int = 300) -> None:
    rng = random.Random(6455)
    for index in range(count):
        flags = rng.randrange(256) | 0x80  # recipes
        body = bytes(rng.randrange(256) for _ in range(rng.randint(8, 200)))
        seed = bytes([flags, rng.randrange(256), rng.randrange(256)]) + body
        if index % 3 == 0:  # the stream itself, as raw bytes (flags bit 7 clear)
            stream = stream_from_recipe(Reader(body), bool(flags & 1), bool(flags & 2))
            seed = bytes([flags & 0x7F, seed[1], seed[2]]) + stream
        with open(os.path.join(directory, f"seed-{index:04d}"), "wb") as file:
            file.write(seed)


def run_atheris(minutes: float, corpus: str | None, extra: list[str]) -> None:
    if corpus is None:
        corpus = tempfile.mkdtemp(prefix="asgiws-fuzz-corpus-")
    os.makedirs(corpus, exist_ok=True)
    if not os.listdir(corpus):
        seed_corpus(corpus)
    argv = [sys.argv[0], corpus, f"-max_total_time={int(minutes * 60)}", "-print_final_stats=1",
            "-max_len=16384", "-timeout=30", "-rss_limit_mb=4096", *extra]
    from importlib.metadata import version

    print(f"atheris {version('atheris')}: {' '.join(argv[1:])}", flush=True)
    atheris.Setup(argv, run_one)
    atheris.Fuzz()


def run_hypothesis(minutes: float) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    inputs = st.one_of(
        st.binary(min_size=3, max_size=400),
        st.tuples(st.integers(0, 255), st.binary(min_size=2, max_size=300)).map(
            lambda pair: bytes([pair[0] | 0x80]) + pair[1]),
    )

    @settings(max_examples=5000, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def check(data):
        run_one(data)

    deadline = time.monotonic() + minutes * 60
    start = time.monotonic()
    while time.monotonic() < deadline:
        check()
        print(f"#{executions} executions, {time.monotonic() - start:.0f} s", flush=True)
    print(f"DONE: {executions} executions in {time.monotonic() - start:.0f} s (hypothesis)")


def replay(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as file:
            run_one(file.read())
        print(f"{path}: ok")


def main() -> None:
    args, extra = sys.argv[1:], []
    if "--" in args:
        args, extra = args[: args.index("--")], args[args.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--corpus", help="corpus directory for atheris (seeded if empty)")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs once")
    options = parser.parse_args(args)
    if options.replay:
        return replay(options.replay)
    engine = options.engine
    if engine == "auto":
        engine = "atheris" if atheris is not None else "hypothesis"
    if engine == "atheris":
        if atheris is None:
            sys.exit("atheris is not installed: pip install atheris, or use --engine hypothesis")
        run_atheris(options.minutes, options.corpus, extra)
    else:
        run_hypothesis(options.minutes)


if __name__ == "__main__":
    main()
