"""Where a server's CPU goes under one bench/run.py scenario, kernel included: `perf stat`
counts per message (system calls, context switches, CPU), or a `perf record` profile, of the
server alone while bench/loadgen.py drives it as run.py does (server on core 0, client on 1).

    python bench/kernel_profile.py asgiws pipe1m               # perf stat, per message
    python bench/kernel_profile.py raw-frame pipe1m --record   # + perf.data: `perf report -i`
    python bench/kernel_profile.py asgiws echo32_c64 --strace  # which system calls (strace -c)

bench/http_profile.py counts user-space instructions (callgrind); this is the other half: at
1 MiB per message four fifths of the server's CPU is the kernel's (copies, TCP sends), which
callgrind does not see. Needs perf (`apt-get install linux-perf`, or the kernel's perf) and,
for --strace, strace; perf with tracepoints usually needs root. Counts are per message of the
load generator's figure (round trips, messages echoed), over a window inside its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
import servers as srv  # noqa: E402

EVENTS = "cpu-clock,context-switches,page-faults,raw_syscalls:sys_enter"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("server", choices=sorted(srv.SERVERS))
    p.add_argument("scenario", choices=sorted(run.SCENARIO_BY_KEY))
    p.add_argument("--seconds", type=float, default=2.0, help="profiled window [2]")
    p.add_argument("--events", default=EVENTS, help=f"perf stat events [{EVENTS}]")
    p.add_argument("--record", metavar="PATH", nargs="?", const="perf.data",
                   help="perf record -g into PATH [perf.data] instead of perf stat")
    p.add_argument("--strace", action="store_true", help="strace -c instead of perf stat")
    p.add_argument("--backlog", type=int, default=8192)
    args = p.parse_args()

    scn = run.SCENARIO_BY_KEY[args.scenario]
    server = srv.SERVERS[args.server]
    if not scn.applies_to(server) or scn.mode in ("idle", "wrk"):
        raise SystemExit(f"{args.server} does not run {args.scenario} here")
    logdir = tempfile.mkdtemp(prefix="asgiws-kprof-")
    running = srv.Running(server, scn.app, args.backlog, os.path.join(logdir, "server.log"))
    try:
        error = running.wait_ready()
        if error:
            raise SystemExit(f"{args.server}: {error}")
        # The load runs warm-up + a window longer than the profile, which starts after the
        # warm-up and ends inside the window.
        load_args = argparse.Namespace(warmup=1.0, duration=args.seconds + 2.0, wrk_duration=0,
                                       client_transport="uvloop")
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(
            run.measure(scn, running, load_args, logdir, "kprof")))
        load.start()
        time.sleep(load_args.warmup + 1.0)
        pid = str(running.pid)
        if args.strace:
            tool = ["timeout", "-s", "INT", str(args.seconds), "strace", "-c", "-f", "-p", pid]
        elif args.record:
            tool = ["perf", "record", "-g", "-o", args.record, "-p", pid, "--", "sleep", str(args.seconds)]
        else:
            tool = ["perf", "stat", "-x,", "-e", args.events, "-p", pid, "--", "sleep", str(args.seconds)]
        profile = subprocess.run(tool, capture_output=True, text=True)
        load.join()
    finally:
        running.stop()
    if "error" in result:
        raise SystemExit(f"load generator: {result['error']}")
    rate, cpu = result["value"], result.get("server_cpu") or 0.0
    messages = rate * args.seconds
    per_cpu = f": {rate / (cpu / 100.0):,.0f} per server CPU-second" if cpu else ""
    print(f"{args.server} {args.scenario}: {rate:,.0f} {scn.unit}, server at {cpu:.0f} % of its "
          f"core{per_cpu}")
    if args.strace or args.record:
        print(profile.stderr if args.strace else f"wrote {args.record}: perf report -i {args.record} --no-children --sort sym")
        return
    print(f"{'event':40s} {'count':>12s} {'per message':>12s}")
    for line in profile.stderr.strip().splitlines():
        fields = line.split(",")
        try:
            value = float(fields[0])
        except ValueError:
            print(line)  # "<not supported>" and perf's own messages
            continue
        if fields[2] == "cpu-clock":  # perf gives milliseconds
            print(f"{'cpu-clock (ms; per message µs)':40s} {value:12,.0f} {1000 * value / messages:12.2f}")
        else:
            print(f"{fields[2]:40s} {value:12,.0f} {value / messages:12.3f}")


if __name__ == "__main__":
    main()
