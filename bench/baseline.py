"""The regression baseline of bench/run.py: per-CPU-second ratios with their noise, and the diff.

    python bench/run.py --quick --save-baseline            # writes bench/baseline.json
    python bench/run.py --quick --compare                  # measures again, prints the diff

(bench/README.md, "Before and after a hot-path change", is the workflow.) This module is the
pure part, fed the `runs` dict run.py collects; it measures nothing and is tested with dicts
(tests/test_bench_baseline.py).

Why ratios, and why per server CPU-second: absolute figures on a shared 2-core machine move by
up to 1.8x between minutes, but asgiws and uvicorn measured in the same repeat saw the same
machine, and dividing by the CPU the server used takes out most of "how much of its core it
got". A ratio per repeat pairs the two servers of that repeat; the baseline keeps every
per-repeat ratio, their median, and their spread: their range (max - min) over the median.

A change counts as moved when the medians differ by more than the two spreads added up; each
spread is taken as at least NOISE_FLOOR, as three repeats can agree by chance more closely than
the machine is steady. Why whole ranges and not half ones: two --quick runs of the same code
(main at 4f23dcb, 2026-12-06, 10 minutes apart, the server waiting 30-70 % of its windows for
its core) differed beyond the sum of the half-ranges on 5 of 26 ratios, beyond the sum of the
ranges on 1 (echo32_c64 asgiws/uvicorn, +62 %: every repeat of the second run above every
repeat of the first). Three repeats see little of the noise between runs minutes apart.
"""

from __future__ import annotations

import statistics

# The ratios kept: asgiws against uvicorn (the server it replaces) and against the two
# ceilings (what the hardware and a C WebSocket server do); only where both were measured.
PAIRS = (("asgiws", "uvicorn"), ("asgiws", "picows"), ("asgiws", "raw"))
SERVERS = ("asgiws", "uvicorn", "picows", "raw")  # what --save-baseline/--compare run
NOISE_FLOOR = 0.02
FORMAT = 2  # bumped when the file's layout changes (2: "spread", the whole range)


def per_cpu_second(result: dict) -> float | None:
    """The figure per second of server CPU, or None for a failed run or one without CPU data."""
    if "error" in result or not result.get("value") or not result.get("server_cpu"):
        return None
    return result["value"] / (result["server_cpu"] / 100.0)


def repeat_ratios(results_num: list[dict], results_den: list[dict], per_cpu: bool) -> list[float]:
    """num / den for every repeat in which both servers have a figure, in repeat order.
    per_cpu: compare per server CPU-second (throughput); else the raw value (memory)."""
    def figures(results):
        out = {}
        for i, r in enumerate(results):
            x = per_cpu_second(r) if per_cpu else (None if "error" in r else r.get("value"))
            if x:
                out[r.get("repeat", i)] = x
        return out
    a, b = figures(results_num), figures(results_den)
    return [a[rep] / b[rep] for rep in sorted(a.keys() & b.keys())]


def summarize(ratios: list[float]) -> dict:
    """median, spread (the range over the median; None with one repeat) and the ratios."""
    med = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / med if len(ratios) > 1 else None
    return {"median": round(med, 4), "spread": None if spread is None else round(spread, 4),
            "repeats": [round(r, 4) for r in ratios]}


def ratios_from_runs(runs: dict, higher_is_better: dict) -> dict:
    """{scenario: {"asgiws/uvicorn": summary, ...}} from run.py's runs[scenario][server] lists.
    higher_is_better[scenario]: False for idle memory, compared as the value itself (KiB per
    connection has no CPU-second), True for throughput, compared per server CPU-second."""
    out: dict = {}
    for key, per_server in runs.items():
        for num, den in PAIRS:
            if num not in per_server or den not in per_server:
                continue
            ratios = repeat_ratios(per_server[num], per_server[den], higher_is_better[key])
            if ratios:
                entry = summarize(ratios)
                entry["higher_is_better"] = higher_is_better[key]
                out.setdefault(key, {})[f"{num}/{den}"] = entry
    return out


def diff(base: dict, new: dict) -> list[dict]:
    """One row per ratio in either: baseline and new median, relative change, verdict.

    verdict: "better" / "worse" (for asgiws: up for throughput, down for memory) when the
    change exceeds the sum of both spreads, "within noise" when it does not, "no noise figure"
    when either side has a single repeat, "only in baseline" / "only in new" otherwise."""
    rows = []
    for key in list(base) + [k for k in new if k not in base]:
        b_pairs, n_pairs = base.get(key, {}), new.get(key, {})
        for pair in list(b_pairs) + [p for p in n_pairs if p not in b_pairs]:
            b, n = b_pairs.get(pair), n_pairs.get(pair)
            row = {"scenario": key, "pair": pair, "base": b and b["median"],
                   "base_spread": b and b["spread"], "new": n and n["median"],
                   "new_spread": n and n["spread"], "change": None, "allowed": None}
            if b is None or n is None:
                row["verdict"] = "only in new" if b is None else "only in baseline"
                rows.append(row)
                continue
            row["change"] = n["median"] / b["median"] - 1
            if b["spread"] is None or n["spread"] is None:
                row["verdict"] = "no noise figure"
                rows.append(row)
                continue
            row["allowed"] = max(b["spread"], NOISE_FLOOR) + max(n["spread"], NOISE_FLOOR)
            if abs(row["change"]) <= row["allowed"]:
                row["verdict"] = "within noise"
            else:
                up = row["change"] > 0
                row["verdict"] = "better" if up == b.get("higher_is_better", True) else "worse"
            rows.append(row)
    return rows


def format_diff(rows: list[dict]) -> str:
    """diff()'s rows as a plain-text table, then one line naming what moved."""
    def pct(x):
        return "—" if x is None else f"{100 * x:+.1f}%"

    def cell(median, spread):
        if median is None:
            return "—"
        return f"{median:.3f}" + ("" if spread is None else f" ({100 * spread:.0f}%)")

    lines = [f"{'scenario':22s} {'ratio (per CPU-s)':18s} {'baseline':>14s} {'new':>14s} "
             f"{'change':>8s} {'allowed':>8s}  verdict"]
    for r in rows:
        allowed = "—" if r["allowed"] is None else f"±{100 * r['allowed']:.1f}%"
        lines.append(f"{r['scenario']:22s} {r['pair']:18s} "
                     f"{cell(r['base'], r['base_spread']):>14s} "
                     f"{cell(r['new'], r['new_spread']):>14s} "
                     f"{pct(r['change']):>8s} {allowed:>8s}  {r['verdict']}")
    moved = [r for r in rows if r["verdict"] in ("better", "worse")]
    lines.append("")
    lines.append(f"{len(moved)} of {len(rows)} ratios moved beyond the noise"
                 + (": " + ", ".join(f"{r['scenario']} {r['pair']} {r['verdict']}"
                                      for r in moved) if moved else "."))
    return "\n".join(lines)

