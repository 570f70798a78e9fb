"""A 100 MB download through Starlette's FileResponse: asgiws (pathsend → os.sendfile),
uvicorn (no pathsend: Starlette reads and sends 64 KiB body messages) and granian (pathsend,
served by its Rust side).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/filesend.py --runs 3 --downloads 7

Each run starts the three servers (each pinned to core 0 with `taskset -c 0`, access log off),
then downloads the file with curl (pinned to core 1, `-o /dev/null`) `--downloads` times per
server, interleaved (asgiws, uvicorn, granian, asgiws, ...), after one warm-up download each.
Per download: MB/s (curl's size / time_total) and the server's CPU-seconds (utime + stime of
every process in its session, from /proc/PID/stat, before and after). Per run and server: the
median MB/s, and CPU-seconds per GB over all its downloads (/proc counts CPU in 10 ms ticks, too
coarse for one 0.1 s download). Reported: each run, then the median of the runs with their
spread (min-max).

The file is in /tmp, read once before the runs, so it is served from the page cache.

`--tls` serves HTTPS instead (a self-signed certificate made with openssl; curl -k): asgiws then
reads and writes the file in 64 KiB chunks, as the bytes must be encrypted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from servers import SERVERS  # noqa: E402

FILE_ENV = "BENCH_FILESEND_PATH"
SIZE = 100 * 1000 * 1000  # 100 MB
CLK_TCK = os.sysconf("SC_CLK_TCK")


def app_factory():
    """The app each server imports (`filesend:app`): FileResponse of the file in FILE_ENV."""
    from starlette.responses import FileResponse

    path = os.environ[FILE_ENV]

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await FileResponse(path, media_type="application/octet-stream")(scope, receive, send)

    return app


if os.environ.get(FILE_ENV):
    app = app_factory()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_cpu(session: int) -> float:
    """CPU-seconds (user + system) of every live process in `session`."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6, session id (fields[0] is field 3, state)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def make_certificate() -> tuple:
    cert, key = "/tmp/asgiws-bench-cert.pem", "/tmp/asgiws-bench-key.pem"
    if not (os.path.exists(cert) and os.path.exists(key)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
    return cert, key


def tls_args(name: str, tls: tuple) -> list:
    cert, key = tls
    flag = "--ssl-certificate" if name == "granian" else "--ssl-certfile"
    return [flag, cert, "--ssl-keyfile", key]


def start(name: str, port: int, path: str, tls: tuple = ()) -> subprocess.Popen:
    argv = SERVERS[name].command("filesend:app", port, 128)
    if tls:
        argv[3:3] = tls_args(name, tls)  # after `python -m server`: before granian's app target
    # asgiws-base (ASGIWS_BASE_DIR): that checkout's asgiws first on the path, run from there.
    repo = SERVERS[name].repo() if SERVERS[name].repo else None
    paths = [p for p in (repo, BENCH_DIR, os.environ.get("PYTHONPATH")) if p]
    env = {**os.environ, FILE_ENV: path, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(["taskset", "-c", "0", *argv], env=env, start_new_session=True, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def download(port: int, tls: tuple = ()) -> tuple:
    url = f"https://127.0.0.1:{port}/" if tls else f"http://127.0.0.1:{port}/"
    out = subprocess.run(
        ["taskset", "-c", "1", "curl", "-s", "-k", "-o", "/dev/null", "-w",
         "%{http_code} %{size_download} %{time_total}", url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    status, size, seconds = int(out[0]), int(out[1]), float(out[2])
    if status != 200 or size != SIZE:
        raise SystemExit(f"bad download from port {port}: status {status}, {size} bytes")
    return size, seconds


def one_run(names: list, path: str, downloads: int, tls: tuple = ()) -> dict:
    procs, ports = {}, {}
    try:
        for name in names:
            ports[name] = free_port()
            procs[name] = start(name, ports[name], path, tls)
        for name in names:
            download(ports[name], tls)  # warm-up
        samples: dict = {name: [] for name in names}
        for _ in range(downloads):
            for name in names:
                session = os.getsid(procs[name].pid)
                before = session_cpu(session)
                size, seconds = download(ports[name], tls)
                cpu = session_cpu(session) - before
                samples[name].append({"mb_s": size / seconds / 1e6, "cpu_s": cpu, "bytes": size})
        return samples
    finally:
        for proc in procs.values():
            stop(proc)


def summary(samples: list) -> tuple:
    """(median MB/s, server CPU-seconds per GB over all the downloads)."""
    rate = statistics.median(s["mb_s"] for s in samples)
    cpu = sum(s["cpu_s"] for s in samples) / (sum(s["bytes"] for s in samples) / 1e9)
    return rate, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="asgiws,uvicorn,granian")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--downloads", type=int, default=7)
    parser.add_argument("--json", help="write every sample here")
    parser.add_argument("--tls", action="store_true", help="HTTPS (self-signed certificate, curl -k)")
    args = parser.parse_args()
    names = args.servers.split(",")

    path = "/tmp/asgiws-bench-100mb.bin"
    if not os.path.exists(path) or os.path.getsize(path) != SIZE:
        with open(path, "wb") as file:
            for _ in range(SIZE // 1_000_000):
                file.write(os.urandom(1_000_000))
    with open(path, "rb") as file:  # into the page cache
        while file.read(1 << 20):
            pass

    runs = []
    for run in range(args.runs):
        samples = one_run(names, path, args.downloads, make_certificate() if args.tls else ())
        runs.append(samples)
        for name in names:
            rate, cpu = summary(samples[name])
            print(f"run {run + 1}: {name:8} {rate:8.0f} MB/s  {cpu:6.3f} server CPU-s/GB", flush=True)

    print("\n| server | MB/s, median of run medians (min-max) | server CPU-s per GB (min-max) |")
    print("|---|---|---|")
    for name in names:
        rates, cpus = zip(*(summary(run[name]) for run in runs))
        print(f"| {name} | {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) | "
              f"{statistics.median(cpus):.3f} ({min(cpus):.3f}-{max(cpus):.3f}) |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(runs, file, indent=1)


if __name__ == "__main__":
    main()
