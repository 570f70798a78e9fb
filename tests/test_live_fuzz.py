"""The live-server fuzzer's short run (tests/fuzz/live.py): seed 1 for 35 s against a fresh
`python -m asgiws` with short timeouts, 16 inputs in flight. Every input must end in an RFC
status or close code, or a close, within the timeouts; the server must not exit, log an error,
or grow past 64 MiB; a new WebSocket must still echo at the end. The side client's latency is
printed, not asserted (the long run, `tests/fuzz/live.py --minutes 30 --seed N`, asserts it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import live  # noqa: E402

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]


def test_live_fuzz_short_run():
    report = live.fuzz(seed=1, seconds=35)
    print()
    live.print_report(report)
    assert report["inputs"] >= 200, report["inputs"]
    assert not report["problems"], report["problems"]
