"""Server CPU per HTTP request, and the garbage collector's share of it, against the number of
keep-alive connections: the same request rate over 64 and over 10,000 connections.

    python bench/http_conns.py                                   # asgiws, asgiws-pygc, uvicorn
    python bench/http_conns.py --conns 64,10000 --rates 6000,12000 --servers asgiws,asgiws-pygc
    python bench/http_conns.py --no-gc-stats                     # the servers exactly as started

Per server, connection count and rate: the server is started (bench/servers.py, core 0), one
open-loop step of bench/openloop.py runs at that rate over that many connections (core 1, as in
bench/latency.py), and over a window inside the step's steady part this tool reads the server's
user and system CPU from /proc/PID/stat and divides them by the requests answered. With
--gc-stats (the default) an asgiws server is started through this file, which times every
collection of Python's cyclic garbage collector (gc.callbacks) and writes the running totals to
a file the tool reads at the window's ends; other servers run as they are.

Why it exists: at 10,000 connections asgiws' HTTP fell behind at half the rate it serves over 64
(bench/RESULTS.md, "Why HTTP saturated at 10,000 connections"); this shows where the CPU went.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
import servers as srv  # noqa: E402

CONNECT_AND_SETTLE_S = 3.0  # after the generator starts: 10,000 connects (~1.5 s) + its 1 s settle
WINDOW_S = 3.0  # the measured window, inside the step's warm-up and measured part


def serve_with_gc_stats(stats_path: str, argv: list[str]) -> None:
    """Run `python -m asgiws argv...` in this process with every collection timed; the totals
    are rewritten to stats_path at most every 0.1 s (from the collector's callback)."""
    import runpy

    totals = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "written": 0.0}
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        generation = info["generation"]
        totals["collections"][generation] += 1
        totals["seconds"][generation] += time.perf_counter() - started[0]
        now = time.monotonic()
        if now - totals["written"] > 0.1:
            totals["written"] = now
            write_stats(stats_path, totals)

    gc.callbacks.append(on_gc)
    sys.argv = ["asgiws", *argv]
    runpy.run_module("asgiws", run_name="__main__")


def write_stats(path: str, totals: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(totals, f)
    os.replace(path + ".tmp", path)


def read_stats(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def with_gc_stats(server: srv.Server, stats_path: str) -> srv.Server:
    """The same server, started through serve_with_gc_stats (asgiws only)."""
    def argv(app, port, backlog):
        cmd = server.argv(app, port, backlog)
        assert cmd[1:3] == ["-m", "asgiws"], cmd
        return [cmd[0], os.path.abspath(__file__), "--serve-with-gc-stats", stats_path, *cmd[3:]]
    return srv.Server(server.name, server.label, server.kind, argv, server.packages, server.apps)


def measure(name: str, conns: int, rate: float, args, logdir: str) -> dict:
    server = srv.SERVERS[name]
    stats_path = os.path.join(logdir, f"gc-{name}-{conns}-{rate:.0f}.json")
    gc_stats = args.gc_stats and name.startswith("asgiws") and name != "asgiws-base"
    if gc_stats:
        server = with_gc_stats(server, stats_path)
    running = srv.Running(server, "echo", args.backlog, os.path.join(logdir, f"{name}-{conns}.log"))
    run._RUNNING.append(running)
    try:
        err = running.wait_ready(30)
        if err:
            return {"error": f"did not start: {err}"}
        # One step whose warm-up covers the window: the generator's own figures are for the
        # `duration` after it, ours for WINDOW_S inside the warm-up's second half and after.
        spec = {"proto": "http", "conns": conns, "rates": [rate], "warmup": WINDOW_S,
                "duration": WINDOW_S, "server_pid": running.pid, "host": "127.0.0.1",
                "port": running.port, "realtime": True, "timeout": 120}
        gen = subprocess.Popen(["taskset", "-c", srv.CLIENT_CORE, srv.PYTHON,
                                os.path.join(srv.BENCH_DIR, "openloop.py"), json.dumps(spec)],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(CONNECT_AND_SETTLE_S + WINDOW_S / 2)
        cpu0, gc0, t0 = proc_cpu(running.pid), read_stats(stats_path), time.monotonic()
        time.sleep(WINDOW_S)
        cpu1, gc1, wall = proc_cpu(running.pid), read_stats(stats_path), time.monotonic() - t0
        out, _ = gen.communicate(timeout=180)
        result = json.loads(out.strip().splitlines()[-1])
        if "steps" not in result:
            return {"error": result.get("error", "no result")}
        step = result["steps"][0]
        answered = step["achieved_rate"] * wall  # the generator's rate over its own window
        row = {"achieved": step["achieved_rate"] / rate, "p50": step["p50"], "p99": step["p99"],
               "user_us": (cpu1[0] - cpu0[0]) / answered * 1e6,
               "sys_us": (cpu1[1] - cpu0[1]) / answered * 1e6,
               "server_wait": step["server_wait"], "connect_s": result["connect_s"]}
        if gc_stats:
            row["gc_us"] = [(b - a) / answered * 1e6
                            for a, b in zip(gc0["seconds"], gc1["seconds"])]
            row["gc_per_s"] = [(b - a) / wall
                               for a, b in zip(gc0["collections"], gc1["collections"])]
        return row
    finally:
        running.stop()
        run._RUNNING.remove(running)


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--serve-with-gc-stats"]:
        serve_with_gc_stats(sys.argv[2], sys.argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--servers", default="asgiws,asgiws-pygc,uvicorn")
    p.add_argument("--conns", default="64,10000")
    p.add_argument("--rates", default="6000,12000", help="requests per second, absolute")
    p.add_argument("--backlog", type=int, default=16384)
    p.add_argument("--no-gc-stats", dest="gc_stats", action="store_false")
    args = p.parse_args(argv)
    run.raise_nofile()
    logdir = tempfile.mkdtemp(prefix="asgiws-conns-")
    print(f"# load {os.getloadavg()[0]:.2f}; logs in {logdir}", file=sys.stderr)
    print("| server | conns | rate /s | achieved | p50 ms | p99 ms | user µs/req | sys µs/req "
          "| gc µs/req (gen 0/1/2) | collections/s (gen 0/1/2) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        for conns in (int(c) for c in args.conns.split(",")):
            for name in args.servers.split(","):
                row = measure(name, conns, rate, args, logdir)
                if "error" in row:
                    print(f"| {name} | {conns} | {rate:.0f} | error: {row['error'][:200]} |||||||",
                          flush=True)
                    continue
                gcs = ("/".join(f"{v:.1f}" for v in row["gc_us"]) if "gc_us" in row else "—",
                       "/".join(f"{v:.1f}" for v in row["gc_per_s"]) if "gc_per_s" in row else "—")
                print(f"| {srv.SERVERS[name].label} | {conns:,} | {rate:.0f} "
                      f"| {100 * row['achieved']:.0f} % | {row['p50']:.2f} | {row['p99']:.1f} "
                      f"| {row['user_us']:.1f} | {row['sys_us']:.1f} | {gcs[0]} | {gcs[1]} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
