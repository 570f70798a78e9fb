"""Latency against offered load: open-loop runs (bench/openloop.py) at fractions of uvicorn's
maximum, for HTTP and WebSocket echo, at 64 and at 10,000 connections.

    python bench/latency.py                  # everything, about 10 minutes (less when nothing saturates)
    python bench/latency.py --quick          # a smoke test (~1.5 minutes)
    python bench/latency.py --protocols ws --conns 64 --servers asgiws,uvicorn
    python bench/latency.py --protocols http --conns 10000 --servers asgiws,asgiws-pygc --max http=21271
    python bench/latency.py --render bench/latency.json   # re-render, no measuring

Per protocol, uvicorn's closed-loop maximum is measured first, in the same run: wrk -t1 -c64
for HTTP plaintext (as bench/run.py), the closed-loop picows client (bench/loadgen.py, 64
connections, 32 B) for WebSocket echo. Then every server, restarted for each connection count,
gets the same open-loop schedule: --loads percent of that maximum, in ascending order, on one set
of connections (warm-up, measured window, drain per load), --repeats times in rotating order.
Server on core 0, generator on core 1, as in bench/run.py.

Writes bench/latency.json, bench/latency.png (p99 and p50 against offered load, one line per
server, log scale) and the tables into bench/RESULTS.md between <!-- latency:start --> and
<!-- latency:end --> (bench/run.py rewrites only its own markers).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
import servers as srv  # noqa: E402
from openloop import DRAIN_S  # noqa: E402

MARK_START = "<!-- latency:start -->"
MARK_END = "<!-- latency:end -->"
PROTOCOLS = {"http": "HTTP plaintext (GET /, 13 B body)", "ws": "WebSocket echo 32 B"}
DEFAULT_SERVERS = ("asgiws", "uvicorn", "granian", "socketify", "picows")
# The acceptance: at 90 % of uvicorn's maximum, asgiws's p99 <= 0.5x uvicorn's and below
# granian's, for HTTP and for WebSocket echo (judged at every connection count measured).
TARGET_LOAD = 90


def serves(server: srv.Server, proto: str) -> bool:
    """The picows ceiling speaks WebSocket only; the raw TCP echo neither protocol."""
    return server.kind == "asgi" or (server.kind == "picows" and proto == "ws")


def uvicorn_max(proto: str, args, logdir: str) -> dict:
    """uvicorn's closed-loop throughput, the 100 % of the load points."""
    running = srv.Running(srv.SERVERS["uvicorn"], "echo", args.backlog,
                          os.path.join(logdir, f"uvicorn-max-{proto}.log"))
    run._RUNNING.append(running)
    try:
        err = running.wait_ready(30)
        if err:
            return {"error": f"uvicorn did not start: {err}"}
        if proto == "http":
            return run.run_wrk(running, args.max_duration, args.max_duration + 30)
        spec = {"mode": "rr", "size": 32, "conns": 64, "url": running.url("/"),
                "warmup": 1.0, "duration": args.max_duration, "server_pid": running.pid,
                "timeout": args.max_duration + 60}
        return run.run_loadgen(spec, spec["timeout"] + 15, logdir, f"max-{proto}")
    finally:
        running.stop()
        run._RUNNING.remove(running)


def aggregate(runs: list[dict]) -> dict:
    """Per load, the repeat with the lowest p99 (the machine's noise only ever adds latency, as
    it only ever takes throughput away in bench/run.py's best of repeats), with every repeat's
    p99 beside it."""
    ok = [r for r in runs if "steps" in r]
    if not ok:
        return {"error": "; ".join(r.get("error", "?") for r in runs)[:600]}
    steps = []
    for i in range(min(len(r["steps"]) for r in ok)):
        best = dict(min((r["steps"][i] for r in ok), key=lambda s: s["p99"]))
        best["p99_all"] = [r["steps"][i]["p99"] for r in ok]
        best["p999_all"] = [r["steps"][i]["p999"] for r in ok]
        steps.append(best)
    out = {"steps": steps, "realtime": all(r.get("realtime") for r in ok)}
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        out["error"] = "; ".join(errors)[:600]
    logs = [line for r in runs for line in r.get("log", ())]
    if logs:
        out["log"] = logs[:5]
    return out


def log_cell(head: str, cell: dict, elapsed: float) -> None:
    if "steps" not in cell:
        print(f"{head} ERROR {cell.get('error', '')[:300]}", file=sys.stderr, flush=True)
        return
    for s in cell["steps"]:
        print(f"{head} {s['load']:>3} % {s['rate']:>7.0f}/s got {s['achieved_rate']:>7.0f}  p50 "
              f"{fmt_ms(s['p50']):>6} p99 {fmt_ms(s['p99']):>6} p99.9 {fmt_ms(s['p999']):>6} max "
              f"{fmt_ms(s['max']):>6}  srv {s['server_cpu']:.0f}% (w{s['server_wait']:.0f}) gen "
              f"{s['client_cpu']:.0f}% (w{s['client_wait']:.0f}) lag99 {s['lag_p99']:.2f}  "
              f"{flags(s)}", file=sys.stderr, flush=True)
    print(f"   connect {cell['connect_s']} s, reopened {cell['reopened']}, {elapsed:.1f} s",
          file=sys.stderr, flush=True)


def open_loop(name: str, proto: str, conns: int, rates: list[float], args,
              logdir: str) -> dict:
    """One server, one connection count: every rate on one set of connections."""
    running = srv.Running(srv.SERVERS[name], "echo", args.backlog,
                          os.path.join(logdir, f"{name}-{proto}-{conns}.log"))
    run._RUNNING.append(running)
    try:
        err = running.wait_ready(30)
        if err:
            return {"error": f"did not start: {err}"}
        spec = {"proto": proto, "conns": conns, "rates": rates, "warmup": args.warmup,
                "duration": args.duration, "server_pid": running.pid, "size": 32,
                "host": "127.0.0.1", "port": running.port, "url": running.url("/"),
                "realtime": not args.no_realtime}
        # connecting (10,000 WebSocket handshakes take a while) plus every step and its drain
        spec["timeout"] = 120 + len(rates) * (args.warmup + args.duration + DRAIN_S + 1)
        result = run.run_loadgen(spec, spec["timeout"] + 15, logdir, f"{name}-{proto}-{conns}",
                                 script="openloop.py")
        if not running.alive():
            result["error"] = (result.get("error", "") + f" server exited: "
                               f"{running.log_tail()}").strip()
        findings = srv.suspicious(running.new_log_lines())
        if findings:
            result["log"] = findings[:5]
        return result
    finally:
        running.stop()
        run._RUNNING.remove(running)


# ------------------------------------------------------------------------------ reporting


def fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def step_at(results, proto, conns, name, load) -> dict | None:
    cell = results.get(proto, {}).get(str(conns), {}).get(name)
    if not cell or "steps" not in cell:
        return None
    for step in cell["steps"]:
        if step["load"] == load:
            return step
    return None


def others(values: list[float]) -> str:
    """Every repeat's figure, in brackets, where there was more than one."""
    return f" ({', '.join(fmt_ms(v) for v in values)})" if len(values) > 1 else ""


def flags(step: dict) -> str:
    out = []
    if step.get("client_bound"):
        out.append("⚠ " + "; ".join(step["client_bound_why"]))
    if step.get("saturated"):
        out.append("saturated")
    if step.get("unfinished"):
        out.append(f"{step['unfinished']} unanswered after {DRAIN_S:g} s drain (≥)")
    if step.get("kernel_dropped") or step.get("tcp_timeouts"):
        out.append(f"kernel: {step.get('kernel_dropped', 0)} packets dropped, "
                   f"{step.get('tcp_timeouts', 0)} TCP timeouts (machine-wide)")
    if step.get("lost") or step.get("bad"):
        out.append(f"{step.get('lost', 0)} lost, {step.get('bad', 0)} bad")
    return ", ".join(out)


def evaluate(results, meta) -> list[tuple]:
    """(protocol, conns, asgiws p99, uvicorn p99, granian p99, verdict) at TARGET_LOAD."""
    out = []
    for proto in meta["protocols"]:
        for conns in meta["conns"]:
            a, u, g = (step_at(results, proto, conns, n, TARGET_LOAD)
                       for n in ("asgiws", "uvicorn", "granian"))
            if not a or not u:
                out.append((proto, conns, None, None, None, "N/A"))
                continue
            ok = a["p99"] <= 0.5 * u["p99"] and (g is None or a["p99"] < g["p99"])
            verdict = "PASS" if ok else "FAIL"
            if any(s and s.get("client_bound") for s in (a, u, g)):
                verdict += " (a client-bound step: see the table)"
            out.append((proto, conns, a["p99"], u["p99"], g["p99"] if g else None, verdict))
    return out


def render_markdown(results, meta, targets) -> str:
    cells = [c for per in results.values() for per_c in per.values() for c in per_c.values()
             if "steps" in c]
    realtime = ("in every run" if cells and all(c.get("realtime") for c in cells)
                else "not in every run: see latency.json")
    L = [f"Generated by `{meta['command']}` on {meta['date']} ({meta['elapsed_min']:.1f} min)"
         + (f"; re-rendered on {meta['rendered']}" if meta.get("rendered") else "") + "."]
    L.append("")
    m = meta["machine"]
    L.append(f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python "
             f"{m['python']}; load average at start {m['loadavg']}, at end "
             f"{meta['loadavg_end']}. Server on core {srv.SERVER_CORE}, generator on core "
             f"{srv.CLIENT_CORE}.")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    for name, why in meta.get("skipped", {}).items():
        L.append(f"- Skipped **{srv.SERVERS[name].label}**: {why}.")
    L.append(f"- Open loop (bench/openloop.py, on uvloop: an asyncio Protocol for HTTP, picows "
             f"for WebSocket): a fixed total rate over N connections, each on its own schedule "
             f"with a random phase and one request outstanding; a late answer delays the "
             f"connection's next request, whose latency still counts from its intended send "
             f"time (coordinated omission corrected). Per load: {meta['warmup']:g} s warm-up, "
             f"{meta['duration']:g} s measured (the requests intended in it), then up to "
             f"{DRAIN_S:g} s for the last answers; loads in ascending order on one set of "
             f"connections, the server restarted for each connection count; {meta['repeats']} "
             f"repeat(s), the servers' order rotating, and per load the repeat with the lowest "
             f"p99 (every repeat's p99 in brackets: the machine's noise only adds latency). "
             f"The generator runs "
             f"SCHED_FIFO ({realtime}) so that it sends on time; the servers at normal "
             f"priority, sharing core {srv.SERVER_CORE} with the rest of the machine's work.")
    def maximum(p: str) -> str:
        top = meta["max"][p]
        if top.get("given"):
            return f"{PROTOCOLS[p]} {top['value']:.0f}/s (given with --max, not measured)"
        return (f"{PROTOCOLS[p]} {top['value']:.0f}/s (uvicorn at {top.get('server_cpu')} % of "
                f"its core, waited {top.get('server_wait')} %; "
                f"{'wrk -t1 -c64' if p == 'http' else 'picows closed loop, 64 conns'})")

    L.append("- 100 % = uvicorn's closed-loop maximum measured in this run (or given): "
             + "; ".join(maximum(p) for p in meta["protocols"]
                         if meta["max"].get(p, {}).get("value"))
             + ".")
    L.append("- Latency in ms. *achieved* = answers per second in the measured window against "
             "the intended rate; *cpu* = server / generator, % of one core, `(w..)` the time "
             "each waited runnable for its core (other work on the shared machine). ⚠ = "
             "client-bound: the generator was busy ≥ 90 % or its own sends ran > 1 ms late at "
             "p99 (that lateness is inside every latency of the step); *saturated* = fewer "
             "answers than 98 % of the intended rate with the generator on time; *kernel* = "
             "while the step ran, the kernel dropped packets from a full input backlog and TCP "
             "connections waited for retransmission timeouts (200 ms and up), machine-wide: "
             "other work on the machine's loopback counts too, and such a step may show the "
             "kernel's stall rather than the server's.")
    for proto in meta["protocols"]:
        for conns in meta["conns"]:
            L.append("")
            L.append(f"#### {PROTOCOLS[proto]}, {conns:,} connections")
            L.append("")
            L.append("| load | server | intended /s | achieved | p50 | p99 | p99.9 | max "
                     "| cpu srv / gen | notes |")
            L.append("|---|---|---|---|---|---|---|---|---|---|")
            for load in meta["loads"]:
                for name in meta["servers"]:
                    cell = results.get(proto, {}).get(str(conns), {}).get(name)
                    if cell is None:
                        continue
                    if "error" in cell and "steps" not in cell:
                        if load == meta["loads"][0]:
                            L.append(f"| | {srv.SERVERS[name].label} | | | | | | | "
                                     f"| error: {cell['error'][:200]} |")
                        continue
                    s = step_at(results, proto, conns, name, load)
                    if s is None:
                        continue
                    L.append(
                        f"| {load} % | {srv.SERVERS[name].label} | {s['rate']:.0f} "
                        f"| {100 * s['achieved_rate'] / s['rate']:.0f} % "
                        f"| {fmt_ms(s['p50'])} | {fmt_ms(s['p99'])}{others(s['p99_all'])} "
                        f"| {fmt_ms(s['p999'])} "
                        f"| {fmt_ms(s['max'])} "
                        f"| {s['server_cpu']:.0f} (w{s['server_wait']:.0f}) / "
                        f"{s['client_cpu']:.0f} (w{s['client_wait']:.0f}) | {flags(s)} |")
    L.append("")
    L.append(f"#### At {TARGET_LOAD} % of uvicorn's maximum: asgiws p99 ≤ 0.5× uvicorn's and "
             "below granian's")
    L.append("")
    L.append("| protocol | connections | asgiws p99 | uvicorn p99 | ratio | granian p99 | result |")
    L.append("|---|---|---|---|---|---|---|")
    for proto, conns, a, u, g, verdict in targets:
        ratio = f"{a / u:.2f}×" if a is not None and u else "—"
        L.append(f"| {PROTOCOLS[proto]} | {conns:,} | {fmt_ms(a)} | {fmt_ms(u)} | {ratio} "
                 f"| {fmt_ms(g)} | {verdict} |")
    L.append("")
    L.append("Servers: as in bench/run.py's list above (same command lines), with "
             f"`--backlog {meta['backlog']}` where the server takes one (the kernel caps it at "
             f"net.core.somaxconn = {meta.get('somaxconn', '?')}; the generator opens at most "
             "200 connections at a time).")
    errors = [(p, c, n, cell) for p, per in results.items() for c, per_c in per.items()
              for n, cell in per_c.items() if cell.get("error") or cell.get("log")]
    if errors:
        L.append("")
        for proto, conns, name, cell in errors:
            if cell.get("error"):
                L.append(f"- {proto} / {conns} / {name}: {cell['error'][:300]}")
            for line in cell.get("log", ()):
                L.append(f"- {proto} / {conns} / log of {name}: `{line[:200]}`")
    return "\n".join(L) + "\n"


def write_chart(path: str, results, meta) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    panels = [(p, c) for p in meta["protocols"] if meta["max"].get(p, {}).get("value")
              for c in meta["conns"]]
    cols = len(meta["conns"])
    rows = max(1, len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.8 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for (proto, conns), ax in zip(panels, [a for row in axes for a in row]):
        for i, name in enumerate(meta["servers"]):
            cell = results.get(proto, {}).get(str(conns), {}).get(name)
            if not cell or "steps" not in cell:
                continue
            steps = cell["steps"]
            xs = [s["load"] for s in steps]
            color = colors(i)
            ax.plot(xs, [s["p99"] for s in steps], "-o", color=color,
                    label=f"{srv.SERVERS[name].label} p99")
            ax.plot(xs, [s["p50"] for s in steps], ":", color=color, alpha=0.8)
            bound = [s for s in steps if s.get("client_bound")]
            if bound:  # hollow ring: the generator, not only the server, set this point
                ax.plot([s["load"] for s in bound], [s["p99"] for s in bound], "o",
                        markersize=12, markerfacecolor="none", markeredgecolor="red")
        ax.set_yscale("log")
        ax.set_xlabel(f"offered load, % of uvicorn's maximum "
                      f"({meta['max'][proto]['value']:.0f}/s)")
        ax.set_ylabel("latency, ms (p99 solid, p50 dotted)")
        ax.set_title(f"{PROTOCOLS[proto]}, {conns:,} connections", fontsize=10)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Open-loop latency against load — {meta['machine']['cpu']}, server core 0, "
                 f"generator core 1 — {meta['date']} (red ring: generator-bound point)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def report(args, results, meta) -> int:
    targets = evaluate(results, meta)
    body = render_markdown(results, meta, targets)
    print(body)
    if not args.no_write:
        run.write_results_md(args.output, body, MARK_START, MARK_END)
        chart_err = write_chart(args.chart, results, meta)
        if not args.render:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
        print(f"wrote {args.output}" + ("" if args.render else f", {args.json}")
              + (f", {args.chart}" if not chart_err else f" ({chart_err})"))
    for proto, conns, a, u, g, verdict in targets:
        print(f"{verdict:4s}  {proto} {conns} conns at {TARGET_LOAD} %: asgiws p99 {fmt_ms(a)} "
              f"ms, uvicorn {fmt_ms(u)}, granian {fmt_ms(g)}")
    return 0


# ----------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: loads 50,90, 1 s measured, 64 and 2000 conns, 1 repeat")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    p.add_argument("--protocols", default="http,ws")
    p.add_argument("--conns", help="connection counts [64,10000; quick 64,2000]")
    p.add_argument("--loads", help="percent of uvicorn's maximum [50,90,110; quick 50,90]")
    p.add_argument("--warmup", type=float, help="seconds per load before measuring [0.5]")
    p.add_argument("--duration", type=float, help="measured seconds per load [1.5; quick 1]")
    p.add_argument("--repeats", type=int,
                   help="runs of every server, in rotating order; per load the repeat with "
                        "the lowest p99 is reported [3; quick 1]: the machine's stalls only add "
                        "latency, and with 2 a point whose servers each had one stalled repeat "
                        "compared a stall")
    p.add_argument("--max-duration", type=float,
                   help="seconds of uvicorn's closed-loop maximum [4; quick 2]")
    p.add_argument("--max", metavar="PROTO=RATE[,PROTO=RATE]",
                   help="take 100 %% as given (requests or messages per second, e.g. "
                        "http=21271) instead of measuring uvicorn's maximum: the loads of runs "
                        "made while the machine was busier or quieter then stay comparable")
    p.add_argument("--backlog", type=int, default=16384)
    p.add_argument("--no-realtime", action="store_true",
                   help="run the generator at normal priority (default: SCHED_FIFO; see "
                        "openloop.run_realtime)")
    p.add_argument("--output", default=os.path.join(srv.BENCH_DIR, "RESULTS.md"))
    p.add_argument("--chart", default=os.path.join(srv.BENCH_DIR, "latency.png"))
    p.add_argument("--json", default=os.path.join(srv.BENCH_DIR, "latency.json"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--render", metavar="JSON", help="re-render RESULTS.md and the chart only")
    args = p.parse_args(argv)
    for name, full, quick in (("conns", "64,10000", "64,2000"), ("loads", "50,90,110", "50,90"),
                              ("warmup", 0.5, 0.5), ("duration", 1.5, 1.0),
                              ("max_duration", 4.0, 2.0), ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        data["meta"]["rendered"] = datetime.datetime.now().astimezone().strftime(
            "%Y-%m-%d %H:%M %Z")
        return report(args, data["results"], data["meta"])
    names = [n for n in srv.SERVER_ORDER if n in args.servers.split(",")]
    skipped = {n: srv.SERVERS[n].missing() for n in names if srv.SERVERS[n].missing()}
    names = [n for n in names if n not in skipped]
    protocols = [p for p in PROTOCOLS if p in args.protocols.split(",")]
    conn_counts = [int(c) for c in args.conns.split(",")]
    loads = sorted(int(x) for x in args.loads.split(","))

    atexit.register(run._cleanup)
    signal.signal(signal.SIGTERM, run._on_signal)
    signal.signal(signal.SIGINT, run._on_signal)
    nofile = run.raise_nofile()  # servers inherit it
    if nofile < max(conn_counts) + 1000:
        print(f"RLIMIT_NOFILE is {nofile}: too low for {max(conn_counts)} connections",
              file=sys.stderr)
        return 2
    logdir = tempfile.mkdtemp(prefix="asgiws-latency-")
    started = time.monotonic()
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except OSError:
        somaxconn = None
    meta = {
        "command": "python bench/latency.py " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": run.machine_info(), "versions": run.versions(names),
        "servers": names, "protocols": protocols, "conns": conn_counts, "loads": loads,
        "warmup": args.warmup, "duration": args.duration, "backlog": args.backlog,
        "repeats": args.repeats,
        "somaxconn": somaxconn, "logdir": logdir, "max": {},
        "skipped": {n: f"{', '.join(m)} not installed" for n, m in skipped.items()},
    }
    meta["command"] = meta["command"].rstrip()
    print(f"# {meta['machine']['cpu']}, load {meta['machine']['loadavg']}; logs in {logdir}",
          file=sys.stderr)
    results: dict = {}
    given = dict(item.split("=") for item in args.max.split(",")) if args.max else {}
    for proto in protocols:
        if proto in given:
            top = {"value": float(given[proto]), "given": True}
        else:
            top = uvicorn_max(proto, args, logdir)
        meta["max"][proto] = top
        if "error" in top:
            print(f"{proto}: uvicorn's maximum: {top['error']}", file=sys.stderr)
            continue
        print(f"{proto}: 100 % = {top['value']:.0f}/s " + ("(given)" if top.get("given") else
              f"(uvicorn's maximum; srv {top.get('server_cpu')}% w{top.get('server_wait')})"),
              file=sys.stderr, flush=True)
        rates = [top["value"] * load / 100 for load in loads]
        todo = [n for n in names if serves(srv.SERVERS[n], proto)]
        for rep in range(args.repeats):
            order = todo[rep % len(todo):] + todo[:rep % len(todo)]  # rotate, as run.py does
            for conns in conn_counts:
                for name in order:
                    t0 = time.monotonic()
                    cell = open_loop(name, proto, conns, rates, args, logdir)
                    for step, load in zip(cell.get("steps", ()), loads):
                        step["load"] = load
                    cell["repeat"] = rep
                    results.setdefault(proto, {}).setdefault(str(conns), {}).setdefault(
                        name, {"runs": []})["runs"].append(cell)
                    log_cell(f"[{rep + 1}/{args.repeats}] {proto} {conns:>5} {name:10s}", cell,
                             time.monotonic() - t0)
    for per in results.values():
        for per_c in per.values():
            for cell in per_c.values():
                cell.update(aggregate(cell["runs"]))
    meta["elapsed_min"] = (time.monotonic() - started) / 60
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return report(args, results, meta)


if __name__ == "__main__":
    sys.exit(main())
