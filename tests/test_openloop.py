"""bench/openloop.py's pure parts: nearest-rank percentiles and the per-connection schedule."""

import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))

import openloop  # noqa: E402


def test_percentile_is_nearest_rank():
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert openloop.percentile(samples, 0.50) == 50.0
    assert openloop.percentile(samples, 0.99) == 99.0
    assert openloop.percentile(samples, 0.999) == 100.0
    assert openloop.percentile(samples, 1.0) == 100.0
    assert openloop.percentile([7.0], 0.5) == 7.0
    assert math.isnan(openloop.percentile([], 0.5))


def test_summary_in_milliseconds():
    out = openloop.summary_ms([0.003, 0.001, 0.002, 0.010])
    assert out["p50"] == 2.0
    assert out["p99"] == 10.0
    assert out["max"] == 10.0
    assert out["mean"] == 4.0


class _Conn(openloop.Conn):
    def write_request(self):
        pass


def test_each_connection_sends_at_the_total_rate_divided_by_the_connections():
    random.seed(1)
    conns = [_Conn() for _ in range(4)]
    step = openloop.Step(0, rate=100.0, conns=conns, t0=10.0, warmup=1.0, duration=2.0)
    assert step.period == 4 / 100.0
    for conn in conns:
        assert 0.0 <= conn.phase < 1.0
        first, second = step.intended(conn, 0), step.intended(conn, 1)
        assert 10.0 <= first < 10.0 + step.period
        assert math.isclose(second - first, step.period)
    # The slots come due in phase order, so one pass over `order` is one period in time order.
    times = [step.intended(c, 0) for c in step.order]
    assert times == sorted(times)
    assert step.measure_from == 11.0 and step.end == 13.0
