"""bench/baseline.py, the pure part of `bench/run.py --save-baseline / --compare`: per-repeat
ratios from run.py's `runs` dict, and the diff of two baselines. Dicts in, dicts out: nothing is
measured here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import baseline  # noqa: E402


def run(repeat, value, server_cpu=100.0):
    return {"repeat": repeat, "value": value, "server_cpu": server_cpu}


def test_ratios_are_per_cpu_second_and_paired_by_repeat():
    runs = {"echo32_c64": {
        # asgiws used half a core for 20k in repeat 0: 40k per CPU-second
        "asgiws": [run(0, 20000, 50.0), run(1, 30000, 100.0), run(2, 31000, 100.0)],
        # uvicorn has no figure in repeat 2: that repeat has no ratio
        "uvicorn": [run(0, 10000, 100.0), run(1, 15000, 100.0), {"repeat": 2, "error": "x"}],
    }}
    out = baseline.ratios_from_runs(runs, {"echo32_c64": True})
    entry = out["echo32_c64"]["asgiws/uvicorn"]
    assert entry["repeats"] == [4.0, 2.0]
    assert entry["median"] == 3.0
    assert entry["spread"] == pytest.approx(2 / 3, abs=1e-4)  # the range over the median
    assert entry["higher_is_better"] is True


def test_memory_is_compared_as_the_value_and_ceilings_only_where_measured():
    runs = {"idle_mem": {"asgiws": [run(0, 5.0, None)], "uvicorn": [run(0, 12.5, None)]},
            "pipe32": {"asgiws": [run(0, 100.0)], "raw": [run(0, 400.0)]}}
    out = baseline.ratios_from_runs(runs, {"idle_mem": False, "pipe32": True})
    assert out["idle_mem"] == {"asgiws/uvicorn": {"median": 0.4, "spread": None, "repeats": [0.4],
                                                  "higher_is_better": False}}
    assert list(out["pipe32"]) == ["asgiws/raw"]


def entry(median, spread, higher=True):
    return {"median": median, "spread": spread, "repeats": [], "higher_is_better": higher}


def verdicts(base, new):
    return {(r["scenario"], r["pair"]): r["verdict"] for r in baseline.diff(base, new)}


def test_a_change_beyond_both_spreads_moved_and_within_them_did_not():
    base = {"a": {"asgiws/uvicorn": entry(2.0, 0.05)}, "b": {"asgiws/uvicorn": entry(2.0, 0.05)},
            "c": {"asgiws/uvicorn": entry(2.0, 0.05)}}
    new = {"a": {"asgiws/uvicorn": entry(2.3, 0.05)},   # +15 % > 5 % + 5 %
           "b": {"asgiws/uvicorn": entry(2.3, 0.12)},   # +15 % <= 5 % + 12 %
           "c": {"asgiws/uvicorn": entry(1.7, 0.05)}}   # -15 %
    assert verdicts(base, new) == {("a", "asgiws/uvicorn"): "better",
                                   ("b", "asgiws/uvicorn"): "within noise",
                                   ("c", "asgiws/uvicorn"): "worse"}
    row = baseline.diff(base, new)[0]
    assert row["change"] == pytest.approx(0.15)
    assert row["allowed"] == pytest.approx(0.10)


def test_lower_is_better_for_memory():
    base = {"idle_mem": {"asgiws/uvicorn": entry(0.40, 0.01, higher=False)}}
    new = {"idle_mem": {"asgiws/uvicorn": entry(0.50, 0.01, higher=False)}}
    assert verdicts(base, new) == {("idle_mem", "asgiws/uvicorn"): "worse"}


def test_noise_floor_single_repeats_and_missing_ratios():
    base = {"a": {"asgiws/uvicorn": entry(1.0, 0.0)}, "b": {"asgiws/raw": entry(1.0, None)},
            "gone": {"asgiws/uvicorn": entry(1.0, 0.1)}}
    new = {"a": {"asgiws/uvicorn": entry(1.03, 0.0)},  # 3 % < the two 2 % floors
           "b": {"asgiws/raw": entry(2.0, 0.1)},
           "added": {"asgiws/picows": entry(1.0, 0.1)}}
    assert verdicts(base, new) == {("a", "asgiws/uvicorn"): "within noise",
                                   ("b", "asgiws/raw"): "no noise figure",
                                   ("gone", "asgiws/uvicorn"): "only in baseline",
                                   ("added", "asgiws/picows"): "only in new"}
    text = baseline.format_diff(baseline.diff(base, new))
    assert "0 of 4 ratios moved beyond the noise." in text
