"""WebSocket/HTTP server benchmark: asgiws against uvicorn, hypercorn, granian, socketify.py and
two ceilings.

    python bench/run.py                       # everything, ~23 minutes
    python bench/run.py --quick               # everything, briefly (~2 minutes): a smoke test
    python bench/run.py --quick --save-baseline   # store per-CPU-second ratios + their noise
    python bench/run.py --quick --compare         # ... and later: what moved beyond the noise
    python bench/run.py --servers asgiws,uvicorn --scenarios echo32_c64,pipe32
    python bench/run.py --list                # servers and scenarios
    python bench/run.py --render bench/results.json   # re-render RESULTS.md/png, no measuring

Each server runs as its own process group pinned to core 0 (`taskset -c 0`); the load generator
(bench/loadgen.py: picows, a Cython WebSocket client, on uvloop; `wrk` for HTTP) runs pinned to
core 1. Servers are restarted for every app and every repeat, and the order of the servers
rotates from one repeat to the next, so slow drifts of a shared machine spread over all of them.
Throughput is the best of --repeats runs (noise on a shared machine only ever slows a run
down); memory is the median. Ratios compare servers measured in the same invocation. Beside
each figure: CPU use of server and client over the measured window (/proc/PID/stat utime+stime,
whole process tree) and the time each waited for its core (/proc/PID/task/*/schedstat), and the
figure per server CPU-second, which moves less than raw throughput when the machine is busy.
Each acceptance target is also judged on the median of per-repeat ratios (the two servers of a
pair ran in the same repeat, minutes apart), which a drift of the machine's speed between
repeats moves less than a ratio of two bests. Five repeats by default: on a shared 2-core host
one server's repeats of a cell have differed by up to 1.8x, and with three the verdict on the
targets near their line (pipelined 1 MiB, HTTP, echo 64 conns) flipped from run to run.

Writes bench/RESULTS.md (between the <!-- results:start --> / <!-- results:end --> markers; the
rest of the file is kept), bench/results.png and bench/results.json, and prints the tables and
one PASS/FAIL line per acceptance target.

--save-baseline / --compare (bench/baseline.py; the workflow is in bench/README.md, "Before and
after a hot-path change") run asgiws, uvicorn and the two ceilings only, measure idle memory in
every repeat, and write no RESULTS.md/results.json: --save-baseline writes bench/baseline.json,
--compare prints, per scenario and ratio, the baseline, the new figure, the change and whether
it moved beyond the noise of both.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import baseline  # noqa: E402
import servers as srv  # noqa: E402
from loadgen import proc_tree  # noqa: E402,F401

BENCH_DIR = srv.BENCH_DIR
WRK = "/usr/bin/wrk"
MARK_START = "<!-- results:start -->"
MARK_END = "<!-- results:end -->"
BASELINE = os.path.join(BENCH_DIR, "baseline.json")
CLIENT_BOUND_CLIENT = 90.0  # client CPU % at or above which ...
CLIENT_BOUND_SERVER = 85.0  # ... with the server below this, the run is client-bound

KIB = 1024
MIB = 1024 * 1024


@dataclass
class Scenario:
    key: str
    title: str
    app: str  # "echo", "broadcast", "starlette"
    mode: str  # loadgen mode, "idle" or "wrk"
    unit: str
    size: int = 32
    conns: int = 1
    window: int = 1
    servers: tuple = ()  # empty: every server whose kind supports it
    higher_is_better: bool = True

    def applies_to(self, server: srv.Server) -> bool:
        if self.servers:
            return server.name in self.servers
        if self.app not in server.apps or self.size < server.min_size:
            return False
        if server.kind == "raw":
            return self.mode in ("rr", "pipe")
        return True


def _window(size: int) -> int:
    # About 4 MiB in flight, at most 4096 messages: with a small window a server that
    # coalesces its writes ends up in lock-step with the client (one batch per round trip)
    # and idles between batches; 4096 x 32 B keeps every server measured here busy.
    return max(4, min(4096, 4 * MIB // size))


SCENARIOS = [
    Scenario("echo32_c1", "echo 32 B, 1 conn", "echo", "rr", "round trips/s", 32, 1),
    Scenario("echo32_c64", "echo 32 B, 64 conns", "echo", "rr", "round trips/s", 32, 64),
    Scenario("pipe32", f"pipelined 32 B (window {_window(32)})", "echo", "pipe", "msgs/s",
             32, 1, _window(32)),
    Scenario("pipe1k", f"pipelined 1 KiB (window {_window(KIB)})", "echo", "pipe", "msgs/s",
             KIB, 1, _window(KIB)),
    Scenario("pipe64k", f"pipelined 64 KiB (window {_window(64 * KIB)})", "echo", "pipe",
             "msgs/s", 64 * KIB, 1, _window(64 * KIB)),
    Scenario("pipe1m", f"pipelined 1 MiB (window {_window(MIB)})", "echo", "pipe", "msgs/s",
             MIB, 1, _window(MIB)),
    Scenario("bcast8", "broadcast 32 B, 8 clients", "broadcast", "bcast", "deliveries/s", 32, 8),
    Scenario("bcast32", "broadcast 32 B, 32 clients", "broadcast", "bcast", "deliveries/s",
             32, 32),
    Scenario("idle_mem", "idle memory per connection", "echo", "idle", "KiB/conn", 0, 5000,
             higher_is_better=False),
    Scenario("http", "HTTP plaintext (wrk -t1 -c64)", "echo", "wrk", "requests/s",
             servers=("asgiws", "asgiws-metrics", "asgiws-base", "uvicorn", "granian",
                      "socketify")),
    Scenario("starlette_echo32_c64", "Starlette echo 32 B, 64 conns", "starlette", "rr",
             "round trips/s", 32, 64, servers=("asgiws", "uvicorn", "socketify")),
]
SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}

# (label, scenario, numerator server, denominator server, op, threshold)
TARGETS = [
    ("echo 32 B 64 conns ≥ 2.0× uvicorn default", "echo32_c64", "asgiws", "uvicorn", ">=", 2.0),
    ("echo 32 B 64 conns ≥ 0.75× picows echo", "echo32_c64", "asgiws", "picows", ">=", 0.75),
    ("pipelined 32 B ≥ 1.5× uvicorn default", "pipe32", "asgiws", "uvicorn", ">=", 1.5),
    ("pipelined 1 MiB ≥ 0.9× raw TCP echo", "pipe1m", "asgiws", "raw", ">=", 0.9),
    ("idle memory/conn ≤ 0.7× uvicorn default", "idle_mem", "asgiws", "uvicorn", "<=", 0.7),
    ("HTTP plaintext ≥ 1.2× uvicorn httptools", "http", "asgiws", "uvicorn", ">=", 1.2),
    ("broadcast 32 clients ahead of granian", "bcast32", "asgiws", "granian", ">", 1.0),
    ("Starlette echo ≥ 2.0× uvicorn+Starlette", "starlette_echo32_c64", "asgiws", "uvicorn",
     ">=", 2.0),
]

# ------------------------------------------------------------------------- process hygiene

_RUNNING: list[srv.Running] = []
_CLIENTS: list[subprocess.Popen] = []  # load generators / wrk, each its own process group


def _cleanup() -> None:
    for proc in list(_CLIENTS):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        _CLIENTS.remove(proc)
    for running in list(_RUNNING):
        try:
            running.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        _RUNNING.remove(running)


def _on_signal(signum, frame):
    _cleanup()
    raise SystemExit(128 + signum)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------------ measuring


def run_loadgen(spec: dict, timeout: float, logdir: str, tag: str,
                script: str = "loadgen.py") -> dict:
    """Runs a load generator of bench/ (loadgen.py, or openloop.py for bench/latency.py) on the
    client core with `spec`; its last line of output is the result."""
    argv = ["taskset", "-c", srv.CLIENT_CORE, srv.PYTHON, os.path.join(BENCH_DIR, script),
            json.dumps(spec)]
    err_path = os.path.join(logdir, f"loadgen-{tag}.log")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        _CLIENTS.append(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)
            return {"error": f"load generator timed out after {timeout:.0f}s"}
        finally:
            if proc in _CLIENTS:
                _CLIENTS.remove(proc)
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        with open(err_path, "rb") as f:
            tail = f.read()[-500:].decode("utf-8", "replace")
        return {"error": f"load generator failed (exit {proc.returncode}): {tail}"}


def run_wrk(running: srv.Running, duration: float, timeout: float, url: str | None = None,
            threads: int = 1, conns: int = 64, cores: str = srv.CLIENT_CORE,
            probe=None) -> dict:
    """wrk -t1 -c64 on core 1 (bench/deploy.py: other url, threads, connections and cores);
    CPU of server and wrk sampled inside the run, while both live. probe: an object whose
    start() and stop() are called at those two samples, count() halfway between them, and
    whose result() is added."""
    pids = proc_tree(running.pid)
    clk = os.sysconf("SC_CLK_TCK")
    argv = ["taskset", "-c", cores, WRK, f"-t{threads}", f"-c{conns}", f"-d{duration:g}s",
            url or f"http://127.0.0.1:{running.port}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    _CLIENTS.append(proc)
    try:
        return _wrk_measure(proc, pids, duration, timeout, clk, probe)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc in _CLIENTS:
            _CLIENTS.remove(proc)


def _wrk_measure(proc, pids, duration, timeout, clk, probe=None) -> dict:
    from loadgen import cpu_ticks, sched_wait_ns

    start = time.monotonic()
    margin = min(0.5, duration / 5)
    snaps = []
    points = [(margin, "start"), (duration - margin, "stop")]
    if probe is not None:
        # Halfway, not at the end: on a loaded machine a count that starts near the end of
        # the window can finish after wrk has closed its connections.
        points.insert(1, (duration / 2, "count"))
    for at, what in points:
        time.sleep(max(0.0, start + at - time.monotonic()))
        if what == "count":
            probe.count()
            continue
        snaps.append((time.perf_counter(), cpu_ticks(pids), sched_wait_ns(pids)[1],
                      cpu_ticks([proc.pid]), sched_wait_ns([proc.pid])[1]))
        if probe is not None:
            (probe.start if what == "start" else probe.stop)()
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=5)
        return {"error": "wrk timed out"}
    out = out.decode("utf-8", "replace")
    (t0, s0, sw0, c0, cw0), (t1, s1, sw1, c1, cw1) = snaps
    wall = t1 - t0
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        return {"error": "wrk: " + out.strip().replace("\n", " | ")[-400:]}
    result = {
        "value": float(m.group(1)),
        "wall": wall,
        "server_cpu": round(100.0 * (s1 - s0) / clk / wall, 1),
        "client_cpu": round(100.0 * (c1 - c0) / clk / wall, 1),
        "server_wait": round(100.0 * (sw1 - sw0) / 1e9 / wall, 1),
        "client_wait": round(100.0 * (cw1 - cw0) / 1e9 / wall, 1),
    }
    for pattern, key in ((r"Non-2xx or 3xx responses:\s*(\d+)", "non_2xx"),
                         (r"Socket errors:([^\n]*)", "socket_errors")):
        found = re.search(pattern, out)
        if found:
            result[key] = found.group(1).strip()
            result.setdefault("warnings", []).append(f"wrk {key}: {found.group(1).strip()}")
    if probe is not None:
        result.update(probe.result())
    return result


def measure(scn: Scenario, running: srv.Running, args, logdir: str, tag: str) -> dict:
    if scn.mode == "wrk":
        return run_wrk(running, args.wrk_duration, args.wrk_duration + 30)
    spec = {"size": scn.size, "conns": scn.conns, "window": scn.window,
            "warmup": args.warmup, "duration": args.duration, "server_pid": running.pid,
            "client_transport": args.client_transport}
    if scn.mode == "idle":
        spec.update(mode="idle", conns=args.memory_conns, url=running.url("/"),
                    timeout=120)
        return run_loadgen(spec, 150, logdir, tag)
    if running.server.kind == "raw":
        spec.update(mode="raw-" + scn.mode, host="127.0.0.1", port=running.port)
    else:
        path = "/broadcast" if scn.app == "broadcast" else "/"
        spec.update(mode=scn.mode, url=running.url(path))
    if scn.size >= 64 * KIB:
        spec["read_buffer"] = min(4 * MIB, 2 * scn.size)
    spec["timeout"] = args.warmup + args.duration + 60
    return run_loadgen(spec, spec["timeout"] + 15, logdir, tag)


# ------------------------------------------------------------------------------ reporting


def fmt_value(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    if unit == "KiB/conn":
        return f"{v:.1f}"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def aggregate(runs: list[dict], scn: Scenario) -> dict | None:
    ok = [r for r in runs if "error" not in r and r.get("value") is not None]
    if not ok:
        return None
    if scn.higher_is_better:
        best = max(ok, key=lambda r: r["value"])
        agg = dict(best)
        agg["how"] = "best"
    else:
        values = sorted(r["value"] for r in ok)
        med = statistics.median(values)
        agg = dict(min(ok, key=lambda r: abs(r["value"] - med)))
        agg["value"] = med
        agg["how"] = "median"
    agg["n"] = len(ok)
    agg["all"] = [round(r["value"], 1) for r in ok]
    if agg.get("server_cpu"):
        agg["per_cpu_s"] = agg["value"] / (agg["server_cpu"] / 100.0)
    return agg


def busy(agg: dict, who: str) -> float | None:
    """% of the window the process was running or runnable (waiting for its core)."""
    cpu = agg.get(f"{who}_cpu")
    if cpu is None:
        return None
    return cpu + (agg.get(f"{who}_wait") or 0.0)


def starved(agg: dict) -> bool:
    """The server spent a noticeable part of its best repeat waiting for its core."""
    cpu, wait = agg.get("server_cpu"), agg.get("server_wait")
    return cpu is not None and wait is not None and wait >= 10.0 and cpu < 85.0


def client_bound(agg: dict) -> bool:
    cli, ser = busy(agg, "client"), busy(agg, "server")
    return cli is not None and ser is not None and cli >= CLIENT_BOUND_CLIENT \
        and ser < CLIENT_BOUND_SERVER


def ratio(table, key, num, den) -> float | None:
    a, b = table.get(key, {}).get(num), table.get(key, {}).get(den)
    if not a or not b or not b.get("value"):
        return None
    return a["value"] / b["value"]


def cpu_ratio(table, key, num, den) -> float | None:
    a, b = table.get(key, {}).get(num), table.get(key, {}).get(den)
    if not a or not b or not a.get("per_cpu_s") or not b.get("per_cpu_s"):
        return None
    return a["per_cpu_s"] / b["per_cpu_s"]


def paired_ratio(runs, key, num, den) -> float | None:
    """Median over the repeats of num / den measured in the same repeat. The servers of one
    repeat run back to back, within minutes of each other, so each pair saw the same shared
    machine; the ratio of two bests can instead pair one server's lucky minute with the
    other's unlucky one."""
    def by_repeat(rs):
        return {r.get("repeat", i): r["value"] for i, r in enumerate(rs)
                if "error" not in r and r.get("value")}
    a = by_repeat(runs.get(key, {}).get(num, []))
    b = by_repeat(runs.get(key, {}).get(den, []))
    pairs = [a[k] / b[k] for k in a.keys() & b.keys()]
    return statistics.median(pairs) if pairs else None


def _meets(x: float, op: str, threshold: float) -> bool:
    return {">=": x >= threshold, "<=": x <= threshold, ">": x > threshold}[op]


_TARGET_LINE = {label: (op, threshold) for label, _, _, _, op, threshold in TARGETS}


def target_ratio_text(label: str, x: float) -> str:
    """A target's ratio with two decimals, or four where two would round it onto the other side
    of the line (1.9995 against "≥ 2.0" would print as a failing 2.00)."""
    op, threshold = _TARGET_LINE[label]
    text = f"{x:.2f}"
    if _meets(float(text), op, threshold) != _meets(x, op, threshold):
        text = f"{x:.4f}"
    return text


def evaluate_targets(table, runs) -> list[tuple]:
    """(label, PASS/FAIL/N/A, ratio, per-server-CPU-second ratio, its PASS/FAIL,
    median per-repeat ratio, its PASS/FAIL)."""
    out = []
    for label, key, num, den, op, threshold in TARGETS:
        r = ratio(table, key, num, den)
        if r is None:
            out.append((label, "N/A", None, None, "—", None, "—"))
            continue
        def verdict(x):
            if x is None:
                return "—"
            return "PASS" if _meets(x, op, threshold) else "FAIL"
        rc = cpu_ratio(table, key, num, den)
        rp = paired_ratio(runs, key, num, den)
        out.append((label, verdict(r), r, rc, verdict(rc), rp, verdict(rp)))
    return out


def machine_info() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0, 0, 0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
    }


def versions(server_names) -> dict:
    wanted = ["asgiws", "uvloop", "httptools", "uvicorn", "websockets", "hypercorn", "wsproto",
              "granian", "socketify", "picows", "starlette"]
    out = {name: srv.package_version(name) for name in wanted}
    try:
        out["wrk"] = subprocess.run([WRK, "-v"], capture_output=True, text=True,
                                    timeout=10).stdout.split("\n")[0].strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        out["wrk"] = "not available"
    return out


def render_markdown(table, scenarios, server_names, meta, findings, targets) -> str:
    labels = {name: srv.SERVERS[name].label for name in server_names}
    L = []
    L.append(f"Generated by `{meta['command']}` on {meta['date']} "
             f"({meta['elapsed_min']:.1f} min)"
             + (f"; tables re-rendered from results.json on {meta['rendered']} "
                "(`python bench/run.py --render bench/results.json`)." if meta.get("rendered")
                else "."))
    L.append("")
    L.append(f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
             f"Linux {meta['machine']['kernel']}, Python {meta['machine']['python']}; "
             f"load average at start {meta['machine']['loadavg']}, at end {meta['loadavg_end']}.")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    for name, why in meta.get("skipped", {}).items():
        L.append(f"- Skipped **{srv.SERVERS[name].label}**: {why}.")
    if meta.get("asgiws_changed"):
        L.append(f"- **asgiws changed during the run** (at the end: {meta['asgiws_changed']}): "
                 "repeats may have measured different code.")
    spreads = sorted(max(a["all"]) / min(a["all"]) for per in table.values()
                     for a in per.values() if len(a.get("all", ())) > 1 and min(a["all"]) > 0)
    if spreads:
        L.append(f"- Noise: best/worst repeat of a cell differ by {statistics.median(spreads):.2f}× "
                 f"at the median, {spreads[-1]:.2f}× at worst (every repeat is in results.json).")
    L.append(f"- Server pinned to core {srv.SERVER_CORE}, load generator to core "
             f"{srv.CLIENT_CORE} (picows {meta['versions'].get('picows')} client on uvloop; "
             f"wrk for HTTP). {meta['repeats']} repeat(s) of {meta['duration']:g} s "
             f"(+{meta['warmup']:g} s warm-up) per cell; throughput = **best** of the repeats, "
             f"memory = **median** (measured in the first {meta['memory_repeats']} repeat(s), "
             f"{meta['memory_conns']} connections). Compression off everywhere (the client "
             f"never offers permessage-deflate; asgiws/uvicorn also get "
             f"`--ws-per-message-deflate false`).")
    L.append("- The machine is shared and other work was running: absolute numbers are noisy; "
             "compare the ratios (same run) and the per-CPU-second figures.")
    L.append("")
    L.append("### Results (ratio to uvicorn ws auto in the same run)")
    L.append("")
    L.append("| scenario | unit | " + " | ".join(labels[n] for n in server_names) + " |")
    L.append("|---|---|" + "---|" * len(server_names))
    for scn in scenarios:
        cells = []
        for name in server_names:
            agg = table.get(scn.key, {}).get(name)
            if agg is None:
                err = meta["errors"].get(scn.key, {}).get(name)
                cells.append("error" if err else "")
                continue
            cell = fmt_value(agg["value"], scn.unit)
            r = ratio(table, scn.key, name, "uvicorn")
            if r is not None and name != "uvicorn":
                cell += f" ({r:.2f}×)"
            if client_bound(agg):
                cell += " ⚠"
            if starved(agg):
                cell += " †"
            cells.append(cell)
        L.append(f"| {scn.title} | {scn.unit} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("⚠ = client-bound: the load generator was busy (running or waiting for its core) "
             "≥ 90 % of the window while the server was busy < 85 %: that cell measures the "
             "client, not the server. † = CPU-starved: in its best repeat the server ran "
             "< 85 % of the window and waited ≥ 10 % for its core (other work on the "
             "machine), so the value understates it.")
    pipes = [s for s in scenarios if s.mode == "pipe"]
    if pipes:
        L.append("")
        L.append("### Pipelined echo in MB/s (payload bytes echoed per second, one direction)")
        L.append("")
        L.append("| scenario | " + " | ".join(labels[n] for n in server_names) + " |")
        L.append("|---|" + "---|" * len(server_names))
        for scn in pipes:
            cells = []
            for name in server_names:
                agg = table.get(scn.key, {}).get(name)
                cells.append(f"{agg['mb_per_s']:.1f}" if agg and agg.get("mb_per_s") else "")
            L.append(f"| {scn.title} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("### CPU during the measured window: server / client, % of one core")
    L.append("")
    L.append("`62 (w30)` = ran 62 % of the window and waited 30 % runnable for its core "
             "(other processes on the machine: the noise); idle for the rest.")
    L.append("")
    L.append("| scenario | " + " | ".join(labels[n] for n in server_names) + " |")
    L.append("|---|" + "---|" * len(server_names))
    for scn in scenarios:
        if scn.mode == "idle":
            continue
        cells = []
        for name in server_names:
            agg = table.get(scn.key, {}).get(name)
            if agg is None or agg.get("server_cpu") is None:
                cells.append("")
                continue
            def one(who):
                wait = agg.get(f"{who}_wait")
                return f"{agg[who + '_cpu']:.0f}" + (f" (w{wait:.0f})" if wait is not None
                                                      else "")
            cells.append(f"{one('server')} / {one('client')}"
                         + (" ⚠" if client_bound(agg) else ""))
        L.append(f"| {scn.title} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("### Per server CPU-second (value ÷ server CPU share; less sensitive to a busy "
             "machine), ratio to uvicorn")
    L.append("")
    L.append("| scenario | " + " | ".join(labels[n] for n in server_names) + " |")
    L.append("|---|" + "---|" * len(server_names))
    for scn in scenarios:
        if scn.mode == "idle":
            continue
        cells = []
        base = table.get(scn.key, {}).get("uvicorn", {}) or {}
        for name in server_names:
            agg = table.get(scn.key, {}).get(name)
            if agg is None or not agg.get("per_cpu_s"):
                cells.append("")
                continue
            cell = fmt_value(agg["per_cpu_s"])
            if base.get("per_cpu_s") and name != "uvicorn":
                cell += f" ({agg['per_cpu_s'] / base['per_cpu_s']:.2f}×)"
            cells.append(cell)
        L.append(f"| {scn.title} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("### Acceptance targets")
    L.append("")
    L.append("The result uses the measured ratio (throughput, or memory). On a busy machine "
             "that ratio depends on how much of its core each server got in its best repeat "
             "(cells marked † above did not get it); the same target applied to the "
             "per-server-CPU-second ratio is shown beside it, and is the steadier of the two "
             "from run to run when both servers were saturated. The last two columns pair the "
             "servers repeat by repeat (each repeat runs them back to back) and take the median "
             "of those ratios: when the machine's speed drifts between repeats, that ratio "
             "compares servers that saw the same machine.")
    L.append("")
    L.append("| target | ratio | result | per server CPU-s | result (per CPU-s) "
             "| median per-repeat ratio | result (paired) |")
    L.append("|---|---|---|---|---|---|---|")
    for label, verdict, r, rc, vc, rp, vp in targets:
        def shown(x):
            return "—" if x is None else target_ratio_text(label, x) + "×"
        L.append(f"| {label} | {shown(r)} | {verdict} | {shown(rc)} | {vc} | {shown(rp)} | {vp} |")
    L.append("")
    L.append("### Servers")
    L.append("")
    for name in server_names:
        s = srv.SERVERS[name]
        cmd = " ".join(shlex.quote(a) for a in s.command("apps:echo", 0, meta["backlog"]))
        cmd = cmd.replace(srv.PYTHON, "python").replace(BENCH_DIR + "/", "bench/")
        L.append(f"- **{s.label}**: `taskset -c {srv.SERVER_CORE} {cmd}`"
                 + (f" — {s.notes}" if s.notes else ""))
    L.append("")
    L.append("Scenarios: request–response = each connection keeps one message in flight; "
             "pipelined = one connection keeps a window of messages in flight, refilled once per "
             "read; broadcast = raw ASGI app (`bench/apps.py:broadcast`) sending each message to "
             "every connection, each client keeping one message of its own in flight, counting "
             "deliveries at the clients; idle memory = server RSS (whole process tree) after "
             "opening the connections minus before, per connection; the raw TCP echo gets the "
             "same masked WebSocket frames and the client counts reflected bytes.")
    if any(meta["errors"].values()) or findings:
        L.append("")
        L.append("### Errors and server log findings")
        L.append("")
        for key, per_server in meta["errors"].items():
            for name, errs in per_server.items():
                for e in errs[:3]:
                    L.append(f"- {key} / {name}: {e}")
        for name, lines in findings.items():
            for line in lines[:8]:
                L.append(f"- log of {name}: `{line[:300]}`")
    return "\n".join(L) + "\n"


def write_results_md(path: str, body: str, start: str = MARK_START, end: str = MARK_END,
                     heading: str = "") -> None:
    """Puts body between the start/end markers of RESULTS.md (appended with them, under
    `## heading` if given, if the file has none), keeping the rest of the file; bench/latency.py,
    deflate.py and deploy.py have their own pairs."""
    block = f"{start}\n{body}{end}"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            section = f"## {heading}\n\n" if heading else ""
            text = text.rstrip("\n") + "\n\n" + section + block + "\n"
    else:
        text = ("# asgiws benchmark results\n\n"
                "Produced by `python bench/run.py` (see its docstring). Everything between the "
                "`results` markers is regenerated on every run; the rest of this file is kept.\n\n"
                + block + "\n\n## Profile\n\n_(to be added by hand)_\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_chart(path: str, table, scenarios, server_names, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    thr = [s for s in scenarios if s.higher_is_better and table.get(s.key)]
    mem = [s for s in scenarios if not s.higher_is_better and table.get(s.key)]
    if not thr and not mem:
        return "nothing to plot"
    fig, axes = plt.subplots(1, 2, figsize=(16, 6.5),
                             gridspec_kw={"width_ratios": [max(len(thr), 1) * 1.0, 1.6]})
    width = 0.8 / max(len(server_names), 1)
    colors = plt.get_cmap("tab10")
    ax = axes[0]
    for i, name in enumerate(server_names):
        xs, ys = [], []
        for j, scn in enumerate(thr):
            agg = table[scn.key].get(name)
            if agg:
                xs.append(j + (i - (len(server_names) - 1) / 2) * width)
                ys.append(agg["value"])
        ax.bar(xs, ys, width, label=srv.SERVERS[name].label, color=colors(i))
    ax.set_yscale("log")
    ax.set_xticks(range(len(thr)))
    ax.set_xticklabels([f"{s.title}\n({s.unit})" for s in thr], rotation=35, ha="right",
                       fontsize=8)
    ax.set_ylabel("messages (round trips, deliveries, requests) per second — log scale")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax2 = axes[1]
    if mem:
        scn = mem[0]
        names = [n for n in server_names if table[scn.key].get(n)]
        ax2.bar(range(len(names)), [table[scn.key][n]["value"] for n in names],
                color=[colors(server_names.index(n)) for n in names])
        ax2.set_xticks(range(len(names)))
        ax2.set_xticklabels([srv.SERVERS[n].label for n in names], rotation=35, ha="right",
                            fontsize=8)
        ax2.set_ylabel("KiB per idle connection (lower is better)")
        ax2.set_title(scn.title, fontsize=10)
        ax2.grid(axis="y", alpha=0.3)
    else:
        ax2.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="short: 1 repeat (3 with --save-baseline/--compare, which need the "
                        "spread of the repeats), 1 s windows, 1000 idle connections, wrk 2 s")
    p.add_argument("--servers",
                   help="comma-separated, from: " + ", ".join(srv.SERVER_ORDER)
                   + " [asgiws and every peer, not the asgiws-* pair variants; with --save-baseline/--compare: " + ",".join(baseline.SERVERS) + "]")
    p.add_argument("--scenarios",
                   help="comma-separated, from: " + ", ".join(SCENARIO_BY_KEY)
                   + " [all; with --compare: the baseline's]")
    p.add_argument("--duration", type=float, help="measured seconds per run [3; quick 1]")
    p.add_argument("--warmup", type=float, help="seconds of load before measuring [1; quick 0.3]")
    p.add_argument("--repeats", type=int, help="runs per cell [5; quick 1, or 3 for a baseline]")
    p.add_argument("--memory-conns", type=int, help="idle connections [5000; quick 1000]")
    p.add_argument("--memory-repeats", type=int, default=1,
                   help="repeats (the first N) that also measure idle memory [1]")
    p.add_argument("--wrk-duration", type=float, help="wrk -d seconds [5; quick 2]")
    p.add_argument("--backlog", type=int, default=8192, help="listen backlog for every server")
    p.add_argument("--client-transport", choices=("uvloop", "aiofastnet"), default="uvloop",
                   help="transport under the picows client [uvloop]")
    p.add_argument("--output", default=os.path.join(BENCH_DIR, "RESULTS.md"))
    p.add_argument("--chart", default=os.path.join(BENCH_DIR, "results.png"))
    p.add_argument("--json", default=os.path.join(BENCH_DIR, "results.json"))
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument("--list", action="store_true", help="list servers and scenarios and exit")
    p.add_argument("--render", metavar="JSON",
                   help="measure nothing: rewrite RESULTS.md and the chart from a results.json")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--save-baseline", nargs="?", const=BASELINE, metavar="PATH",
                       help="store the per-CPU-second ratios and their noise [bench/baseline.json]"
                            "; writes no RESULTS.md/results.json")
    group.add_argument("--compare", nargs="?", const=BASELINE, metavar="PATH",
                       help="measure, then print what moved against a stored baseline "
                            "[bench/baseline.json]; writes its own ratios beside its logs only")
    args = p.parse_args(argv)
    quick = args.quick
    baseline_mode = args.save_baseline or args.compare
    for name, full, short in (("duration", 3.0, 1.0), ("warmup", 1.0, 0.3),
                              ("repeats", 5, 3 if baseline_mode else 1),
                              ("memory_conns", 5000, 1000), ("wrk_duration", 5.0, 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.servers is None:
        args.servers = ",".join(baseline.SERVERS if baseline_mode else srv.DEFAULT_SERVERS)
    if baseline_mode:
        # The baseline's figures are per-repeat ratios: every repeat measures every cell,
        # idle memory included; and a short run is no record for RESULTS.md.
        args.memory_repeats = args.repeats
        args.no_write = True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args)
    if args.list:
        for name in srv.SERVER_ORDER:
            print(f"server   {name:20s} {srv.SERVERS[name].label}")
        for scn in SCENARIOS:
            print(f"scenario {scn.key:20s} {scn.title} [{scn.unit}]")
        return 0
    stored = None
    if args.compare:
        try:
            with open(args.compare) as f:
                stored = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"cannot read the baseline {args.compare}: {exc}", file=sys.stderr)
            return 2
        if stored.get("format") != baseline.FORMAT:
            print(f"{args.compare} has format {stored.get('format')}, this run.py writes "
                  f"{baseline.FORMAT}: save a new baseline", file=sys.stderr)
            return 2
        if args.scenarios is None:
            args.scenarios = ",".join(stored["meta"]["scenarios"])
    if args.scenarios is None:
        args.scenarios = ",".join(SCENARIO_BY_KEY)
    server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenario_keys = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [n for n in server_names if n not in srv.SERVERS] + \
          [k for k in scenario_keys if k not in SCENARIO_BY_KEY]
    if bad:
        print(f"unknown server/scenario: {', '.join(bad)} (see --list)", file=sys.stderr)
        return 2
    scenarios = [SCENARIO_BY_KEY[k] for k in SCENARIO_BY_KEY if k in scenario_keys]
    server_names = [n for n in srv.SERVER_ORDER if n in server_names]  # canonical order
    skipped = {n: srv.SERVERS[n].missing() for n in server_names if srv.SERVERS[n].missing()}
    for name, missing in skipped.items():
        print(f"skipping {name}: {', '.join(missing)} not installed", file=sys.stderr)
    server_names = [n for n in server_names if n not in skipped]
    if os.cpu_count() is None or os.cpu_count() < 2:
        print("needs 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2

    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    nofile = raise_nofile()
    if nofile < args.memory_conns + 1000:
        print(f"warning: RLIMIT_NOFILE is {nofile}; idle-memory connections capped",
              file=sys.stderr)
        args.memory_conns = max(100, nofile - 1000)

    logdir = tempfile.mkdtemp(prefix="asgiws-bench-")
    started = time.monotonic()
    meta = {
        "command": "python bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else " ")
                   + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "versions": versions(server_names),
        "repeats": args.repeats, "duration": args.duration, "warmup": args.warmup,
        "memory_conns": args.memory_conns, "memory_repeats": min(args.memory_repeats,
                                                                 args.repeats),
        "backlog": args.backlog, "errors": {}, "logdir": logdir,
        "skipped": {n: f"{', '.join(m)} not installed" for n, m in skipped.items()},
    }
    meta["command"] = meta["command"].rstrip()
    print(f"# {meta['machine']['cpu']}, {meta['machine']['cores']} cores, load "
          f"{meta['machine']['loadavg']}; logs in {logdir}", file=sys.stderr)

    runs: dict[str, dict[str, list[dict]]] = {s.key: {} for s in scenarios}
    findings: dict[str, list[str]] = {}

    for rep in range(args.repeats):
        order = server_names[rep % len(server_names):] + server_names[:rep % len(server_names)]
        for name in order:
            server = srv.SERVERS[name]
            for app in ("echo", "broadcast", "starlette"):
                todo = [s for s in scenarios if s.app == app and s.applies_to(server)]
                if app == "echo" and rep >= args.memory_repeats:
                    todo = [s for s in todo if s.mode != "idle"]
                # idle memory first, on a server that has not served any load yet
                todo.sort(key=lambda s: s.mode != "idle")
                if not todo:
                    continue
                log_path = os.path.join(logdir, f"{name}-{app}-{rep}.log")
                running = srv.Running(server, app, args.backlog, log_path)
                _RUNNING.append(running)
                try:
                    err = running.wait_ready(30)
                    if err:
                        for scn in todo:
                            meta["errors"].setdefault(scn.key, {}).setdefault(name, []).append(
                                f"server did not start: {err}")
                        print(f"[{rep + 1}/{args.repeats}] {name:20s} {app}: did not start: "
                              f"{err}", file=sys.stderr)
                        continue
                    for scn in todo:
                        tag = f"{name}-{scn.key}-{rep}"
                        t0 = time.monotonic()
                        result = measure(scn, running, args, logdir, tag)
                        if not running.alive():
                            result.setdefault("error", "")
                            result["error"] += (f" server exited (code {running.proc.returncode})"
                                                f": {running.log_tail()}")
                        new_lines = srv.suspicious(running.new_log_lines())
                        if new_lines:
                            findings.setdefault(name, []).extend(
                                f"[{scn.key}] {line}" for line in new_lines)
                        if result.get("disconnects") or result.get("bad"):
                            result.setdefault("warnings", [])
                            result["warnings"].append(
                                f"{result.get('disconnects', 0)} unexpected disconnects, "
                                f"{result.get('bad', 0)} wrong-size messages")
                        result["repeat"] = rep
                        runs[scn.key].setdefault(name, []).append(result)
                        for warning in result.get("warnings", ()):
                            meta["errors"].setdefault(scn.key, {}).setdefault(name, []).append(
                                f"run {rep + 1}: {warning}")
                        if "error" in result:
                            meta["errors"].setdefault(scn.key, {}).setdefault(name, []).append(
                                result["error"].strip())
                            line = f"ERROR {result['error'].strip()[:300]}"
                        else:
                            line = (f"{fmt_value(result['value'], scn.unit):>8s} {scn.unit}"
                                    + (f"  srv {result['server_cpu']}% (w"
                                       f"{result.get('server_wait')}) cli "
                                       f"{result['client_cpu']}% (w{result.get('client_wait')})"
                                       if result.get("server_cpu") is not None else "")
                                    + (f"  ({result.get('connections')} conns, "
                                       f"{result.get('rss_before_mib', 0):.1f} -> "
                                       f"{result.get('rss_after_mib', 0):.1f} MiB)"
                                       if scn.mode == "idle" else "")
                                    + (f"  !! {'; '.join(result['warnings'])}"
                                       if result.get("warnings") else ""))
                        print(f"[{rep + 1}/{args.repeats}] {name:20s} {scn.key:22s} {line}"
                              f"  [{time.monotonic() - t0:.1f}s]", file=sys.stderr, flush=True)
                        if not running.alive():
                            break
                finally:
                    running.stop()
                    tail = srv.suspicious(running.new_log_lines())
                    if tail:
                        findings.setdefault(name, []).extend(f"[shutdown] {l}" for l in tail)
                    if running in _RUNNING:
                        _RUNNING.remove(running)

    meta["elapsed_min"] = (time.monotonic() - started) / 60
    if "asgiws" in server_names:
        end_version = srv.package_version("asgiws")
        if end_version != meta["versions"]["asgiws"]:
            meta["asgiws_changed"] = end_version
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    # Known noise in uvicorn --ws websockets' log: its deprecation warning. Repeated lines
    # (addresses aside) are shown once, with a count.
    for name in list(findings):
        counts: dict[str, int] = {}
        for line in findings[name]:
            if "DeprecationWarning" in line:
                continue
            norm = re.sub(r"0x[0-9a-f]+", "0x…", line)
            counts[norm] = counts.get(norm, 0) + 1
        findings[name] = [f"{line} (×{n})" if n > 1 else line for line, n in counts.items()]
        if not findings[name]:
            del findings[name]
    status = report(args, meta, runs, findings, scenarios, server_names)
    if args.save_baseline or args.compare:
        regression_baseline(args, meta, runs, scenarios, server_names, stored)
    return status


def regression_baseline(args, meta, runs, scenarios, server_names, stored) -> None:
    """--save-baseline: write the ratios; --compare: print the diff against `stored`."""
    higher = {s.key: s.higher_is_better for s in scenarios}
    ratios = baseline.ratios_from_runs(runs, higher)
    record = {"format": baseline.FORMAT,
              "meta": {"command": meta["command"], "date": meta["date"],
                       "asgiws": meta["versions"]["asgiws"], "machine": meta["machine"],
                       "loadavg_end": meta["loadavg_end"], "repeats": args.repeats,
                       "duration": args.duration, "wrk_duration": args.wrk_duration,
                       "warmup": args.warmup, "memory_conns": args.memory_conns,
                       "scenarios": [s.key for s in scenarios], "servers": server_names},
              "ratios": ratios}
    # --compare keeps its own figures beside its logs: a baseline for a later --compare PATH.
    path = args.save_baseline or os.path.join(meta["logdir"], "baseline.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"\nwrote {path}: {sum(map(len, ratios.values()))} ratios over "
          f"{len(ratios)} scenarios")
    if args.save_baseline:
        return
    old = stored["meta"]
    print(f"\nbaseline: {old['asgiws']}, {old['date']} ({old['repeats']} repeats)"
          f"\nnew:      {meta['versions']['asgiws']}, {meta['date']} ({args.repeats} repeats)"
          "\nmedian per-repeat ratio per server CPU-second (idle_mem: KiB/conn ratio), "
          "(its spread: max - min of the repeats over the median); moved when the change "
          "exceeds the two spreads added:\n")
    print(baseline.format_diff(baseline.diff(stored["ratios"], ratios)))
    settings = ("repeats", "duration", "warmup", "wrk_duration", "memory_conns")
    differ = [f"{k} {old.get(k)} -> {record['meta'][k]}" for k in settings
              if old.get(k) != record["meta"][k]]
    if differ:
        print("warning: not measured as the baseline was (" + ", ".join(differ) + "): "
              "a change may come from that")


def report(args, meta, runs, findings, scenarios, server_names) -> int:
    table = {}
    for scn in scenarios:
        for name, rs in runs.get(scn.key, {}).items():
            agg = aggregate(rs, scn)
            if agg:
                table.setdefault(scn.key, {})[name] = agg
    targets = evaluate_targets(table, runs)
    body = render_markdown(table, scenarios, server_names, meta, findings, targets)
    if not (getattr(args, "save_baseline", None) or getattr(args, "compare", None)):
        print()  # a baseline run prints its ratios instead (the cells went to stderr)
        print(body)
    if not args.no_write:
        write_results_md(args.output, body)
        chart_err = write_chart(args.chart, table, scenarios, server_names,
                                f"{meta['machine']['cpu']} — server core 0, client core 1 — "
                                f"{meta['date']}")
        if not args.render:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "runs": runs, "findings": findings, "table": table,
                           "targets": [{"target": t, "result": v, "ratio": r, "cpu_ratio": rc,
                                        "cpu_result": vc, "paired_ratio": rp,
                                        "paired_result": vp}
                                       for t, v, r, rc, vc, rp, vp in targets]},
                          f, indent=1, default=str)
        print(f"wrote {args.output}" + ("" if args.render else f", {args.json}")
              + (f", {args.chart}" if not chart_err else f" ({chart_err})"))
    print()
    for label, verdict, r, rc, vc, rp, vp in targets:
        line = f"{verdict:4s}  {label}"
        if r is None:
            line += "  (not measured)"
        else:
            line += f"  (ratio {target_ratio_text(label, r)}"
            line += f"; per server CPU-s {target_ratio_text(label, rc)}: {vc}" if rc is not None else ""
            line += f"; median per-repeat {target_ratio_text(label, rp)}: {vp})" if rp is not None else ")"
        print(line)
    return 0


def render(args) -> int:
    """Regenerates RESULTS.md and the chart from a results.json, without measuring."""
    with open(args.render) as f:
        data = json.load(f)
    runs = data["runs"]
    data["meta"]["rendered"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    scenarios = [s for s in SCENARIOS if s.key in runs]
    names = {name for per in runs.values() for name in per}
    server_names = [n for n in srv.SERVER_ORDER if n in names]
    return report(args, data["meta"], runs, data.get("findings", {}), scenarios, server_names)


if __name__ == "__main__":
    sys.exit(main())
