"""Micro-benchmarks of the frame codec (asgiws._codec) against websockets' and the memcpy limit.

    python bench/codec.py            # table + acceptance ratios
    python bench/codec.py --json     # the same figures as JSON

Unmask throughput (GB/s, out of place, same input for all three):
  asgiws        asgiws._codec.mask(data, key)
  websockets    websockets.speedups.apply_mask(data, key) (C)
  copy          bytes(data) of the same bytearray: allocate + memcpy, the physical limit of an
                out-of-place unmask
  asgiws in place  asgiws._codec.mask_inplace(data, key): the kernel alone, no allocation (info)
Frame parsing (frames/s) of one buffer of many masked binary frames with 32-byte payloads:
  asgiws        FrameParser(is_server=True).feed_data(buffer)  (copies the buffer in, then parses)
  websockets    Frame.parse driven by StreamReader.read_exact, mask=True, max_size set: the same
                work per frame (header, unmask in C, frame checks), no message assembly
  websockets-protocol  ServerProtocol(state=OPEN).receive_data(buffer) + events_received():
                the whole sans-I/O receive path, for information

Each figure is the best of --repeats runs, each run long enough (--min-time) to dwarf the timer,
the contenders taking turns within each repeat; the process is pinned to one CPU when the OS
allows it. Buffers are hot in cache: these are CPU costs, not DRAM bandwidth.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from websockets.frames import Frame as WsFrame  # noqa: E402
from websockets.protocol import State  # noqa: E402
from websockets.server import ServerProtocol  # noqa: E402
from websockets.speedups import apply_mask  # noqa: E402
from websockets.streams import StreamReader  # noqa: E402

from asgiws import _codec  # noqa: E402

KEY = b"\x37\xfa\x21\x3d"
UNMASK_SIZES = [("32 B", 32), ("1 KiB", 1024), ("64 KiB", 64 * 1024), ("1 MiB", 1024 * 1024)]
FRAMES_PER_BUFFER = 10_000
FRAME_PAYLOAD = 32


def pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def calibrate(call, min_time: float) -> int:
    """How many calls make one timed run of about `min_time` seconds."""
    loops = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(loops):
            call()
        elapsed = (time.perf_counter_ns() - start) / 1e9
        if elapsed >= min_time / 4:
            return max(1, int(loops * min_time / elapsed))
        loops *= 4


def best_seconds_per_call(calls: dict, *, repeats: int, min_time: float) -> dict:
    """Seconds per call of each callable, best of `repeats` runs. The callables take turns within
    each repeat, so a burst of load from elsewhere on the machine hits all of them alike."""
    loops = {name: calibrate(call, min_time) for name, call in calls.items()}
    best = dict.fromkeys(calls, float("inf"))
    gc.disable()
    try:
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter_ns()
                for _ in range(loops[name]):
                    call()
                best[name] = min(best[name], (time.perf_counter_ns() - start) / 1e9 / loops[name])
    finally:
        gc.enable()
    return best


def bench_unmask(repeats: int, min_time: float) -> dict:
    results = {}
    for label, size in UNMASK_SIZES:
        data = bytearray(os.urandom(size))
        assert _codec.mask(data, KEY) == apply_mask(data, KEY)
        seconds = best_seconds_per_call({
            "asgiws": lambda: _codec.mask(data, KEY),
            "websockets": lambda: apply_mask(data, KEY),
            "copy": lambda: bytes(data),
            "asgiws in place": lambda: _codec.mask_inplace(data, KEY),
        }, repeats=repeats, min_time=min_time)
        results[label] = {name: size / s / 1e9 for name, s in seconds.items()}
    return results


def frame_buffer() -> bytes:
    payloads = [os.urandom(FRAME_PAYLOAD) for _ in range(64)]
    return b"".join(
        _codec.build_frame(_codec.OP_BINARY, payloads[i % 64], mask=os.urandom(4))
        for i in range(FRAMES_PER_BUFFER)
    )


def parse_asgiws(buffer: bytes) -> int:
    parser = _codec.FrameParser(is_server=True)
    frames = parser.feed_data(buffer)
    return len(frames)


def parse_websockets_frames(buffer: bytes) -> int:
    """One generator looping over Frame.parse, as websockets' own Protocol.parse does."""
    frames = []

    def parse_forever(reader):
        while True:
            frames.append((yield from WsFrame.parse(reader.read_exact, mask=True, max_size=2**20)))

    reader = StreamReader()
    reader.feed_data(buffer)
    next(parse_forever(reader))  # returns when read_exact waits for more data
    return len(frames)


def parse_websockets_protocol(buffer: bytes) -> int:
    protocol = ServerProtocol(state=State.OPEN, max_size=2**20)
    protocol.receive_data(buffer)
    return len(protocol.events_received())


def bench_parse(repeats: int, min_time: float) -> dict:
    buffer = frame_buffer()
    parsers = {
        "asgiws": parse_asgiws,
        "websockets": parse_websockets_frames,
        "websockets-protocol": parse_websockets_protocol,
    }
    for name, parse in parsers.items():
        assert parse(buffer) == FRAMES_PER_BUFFER, name
    seconds = best_seconds_per_call(
        {name: (lambda parse=parse: parse(buffer)) for name, parse in parsers.items()},
        repeats=repeats, min_time=min_time)
    return {name: FRAMES_PER_BUFFER / s for name, s in seconds.items()}


def main() -> None:
    options = argparse.ArgumentParser(description="asgiws codec micro-benchmarks")
    options.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options.add_argument("--repeats", type=int, default=15)
    options.add_argument("--min-time", type=float, default=0.05, help="seconds per timed run")
    args = options.parse_args()

    pinning = pin_to_one_cpu()
    unmask = bench_unmask(args.repeats, args.min_time)
    parse = bench_parse(args.repeats, args.min_time)
    ratios = {
        "unmask 1 MiB / copy 1 MiB (>= 0.7)": unmask["1 MiB"]["asgiws"] / unmask["1 MiB"]["copy"],
        "asgiws / websockets apply_mask, 64 KiB (>= 1.5)":
            unmask["64 KiB"]["asgiws"] / unmask["64 KiB"]["websockets"],
        "asgiws / websockets apply_mask, 1 MiB (>= 1.5)":
            unmask["1 MiB"]["asgiws"] / unmask["1 MiB"]["websockets"],
        "asgiws parse / websockets Frame.parse (>= 20)": parse["asgiws"] / parse["websockets"],
        "asgiws parse / websockets ServerProtocol (info)":
            parse["asgiws"] / parse["websockets-protocol"],
    }
    environment = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "mask_impl": _codec.mask_impl(),
        "cpu": pinning,
        "repeats": args.repeats,
        "frames_per_buffer": FRAMES_PER_BUFFER,
        "frame_payload": FRAME_PAYLOAD,
    }
    if args.json:
        print(json.dumps({"environment": environment, "unmask_gb_per_s": unmask,
                          "parse_frames_per_s": parse, "ratios": ratios}, indent=2))
        return

    print(", ".join(f"{key}={value}" for key, value in environment.items()))
    print()
    columns = ("asgiws", "websockets", "copy", "asgiws in place")
    print(f"{'unmask GB/s':<12}" + "".join(f"{name:>17}" for name in columns))
    for label, row in unmask.items():
        print(f"{label:<12}" + "".join(f"{row[name]:>17.2f}" for name in columns))
    print()
    print(f"parse, {FRAMES_PER_BUFFER} masked binary frames of {FRAME_PAYLOAD} B per buffer")
    for name, rate in parse.items():
        print(f"  {name:<22}{rate / 1e6:>10.2f} M frames/s")
    print()
    for name, ratio in ratios.items():
        print(f"  {name:<52}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
