"""Deployment-shaped figures: asgiws against uvicorn with --workers 2, behind nginx, and with TLS.

    python bench/deploy.py                  # every setup, 3 repeats (~4 minutes)
    python bench/deploy.py --setups tls --repeats 1 --no-write     # a smoke test
    flock /tmp/bench.lock python bench/deploy.py                   # figures for the record

Writes a table into bench/RESULTS.md between <!-- deploy:start --> and <!-- deploy:end -->
(the rest of the file is kept) and prints it. The setups, on a 2-core machine:

  plain    one server process on core 0, the load generator on core 1: bench/run.py's setup,
           for reference in the same run
  workers  `--workers 2`: the server's processes may use both cores (taskset -c 0,1) and so
           may the load generator: with 2 cores the two share them, the server can never have
           two whole cores, and throughput is bounded by both. The figure to read is the one
           per server CPU-second (every process of the server, supervisor included). Beside
           it, how the kernel spread the connections over the two workers (both accept on one
           shared listening socket, in both servers): established connections counted per
           worker from /proc/PID/fd and /proc/net/tcp inside the window, with 64 and
           with 1000 client connections, and each worker's share of the server's CPU
  nginx    docs/nginx/asgiws.conf, the config tests/test_nginx.py runs, with only its ports,
           upstream addresses and certificate paths substituted (so TLS ends at nginx, which
           proxies plain HTTP/1.1 to the server). Both upstream lines name the one server
           process, on core 0; nginx (one process, `master_process off`, access log off) shares
           core 1 with the load generator, so core 1 is the bound and the server runs below
           saturation: again read the per server CPU-second figure. nginx's CPU is shown
  tls      the server itself terminates TLS (--ssl-certfile/--ssl-keyfile, a self-signed
           P-256 certificate made at run time with `cryptography`), core 0 / core 1

HTTP is wrk's plaintext GET (https:// where TLS is on); WebSocket is bench/loadgen.py's
request-response echo of 32 B binary messages (wss:// where TLS is on). As in bench/run.py:
servers restart for every setup and repeat, their order alternates between repeats, throughput
is the best repeat, and the ratio asgiws / uvicorn per server CPU-second is also given as the
median of the per-repeat ratios (the two servers of a repeat saw the same machine).
nginx missing: the nginx setup is skipped with that reason (apt-get install nginx).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
import servers as srv  # noqa: E402
from loadgen import cpu_ticks, proc_tree  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
DOC_CONFIG = os.path.join(srv.REPO_DIR, "docs", "nginx", "asgiws.conf")
MARK_START = "<!-- deploy:start -->"
MARK_END = "<!-- deploy:end -->"
SERVER_NAMES = ("asgiws", "uvicorn")
BOTH_CORES = "0,1"


@dataclass(frozen=True)
class Setup:
    key: str
    title: str
    server_cores: str
    client_cores: str
    tls_at_server: bool = False
    nginx: bool = False
    workers: int = 1


@dataclass(frozen=True)
class Cell:
    key: str
    title: str
    kind: str  # "http" (wrk) or "ws" (loadgen rr echo, 32 B)
    conns: int


SETUPS = [
    Setup("plain", "one process, core 0", srv.SERVER_CORE, srv.CLIENT_CORE),
    Setup("workers", "--workers 2, cores 0-1 shared with the client", BOTH_CORES, BOTH_CORES,
          workers=2),
    Setup("nginx", "behind nginx (TLS at nginx), server core 0, nginx + client core 1",
          srv.SERVER_CORE, srv.CLIENT_CORE, nginx=True),
    Setup("tls", "TLS at the server, core 0", srv.SERVER_CORE, srv.CLIENT_CORE,
          tls_at_server=True),
]
SETUP_BY_KEY = {s.key: s for s in SETUPS}
CELLS = {
    "plain": [Cell("http", "HTTP plaintext, 64 conns", "http", 64),
              Cell("ws", "WS echo 32 B, 64 conns", "ws", 64)],
    "workers": [Cell("http", "HTTP plaintext, 64 conns", "http", 64),
                Cell("http1000", "HTTP plaintext, 1000 conns", "http", 1000),
                Cell("ws", "WS echo 32 B, 64 conns", "ws", 64),
                Cell("ws1000", "WS echo 32 B, 1000 conns", "ws", 1000)],
    "nginx": [Cell("http", "HTTPS plaintext via nginx, 64 conns", "http", 64),
              Cell("ws", "WSS echo 32 B via nginx, 64 conns", "ws", 64)],
    "tls": [Cell("http", "HTTPS plaintext, 64 conns", "http", 64),
            Cell("ws", "WSS echo 32 B, 64 conns", "ws", 64)],
}
UNITS = {"http": "requests/s", "ws": "round trips/s"}


# ---------------------------------------------------------------------- what a window probes


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_inodes(port: int) -> tuple[set[int], set[int], int]:
    """(listening, established) inodes of the TCP sockets whose local port is `port`, and how
    many established ones have no inode: the kernel completed their handshake but no process
    has accepted them yet (they wait in the listening socket's queue)."""
    listening, established, queued = set(), set(), 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], int(fields[9])
                    if int(local.rsplit(":", 1)[1], 16) != port:
                        continue
                    if state == "01" and inode == 0:
                        queued += 1
                    elif state == "0A":
                        listening.add(inode)
                    elif state == "01":
                        established.add(inode)
        except OSError:
            continue
    return listening, established, queued


def worker_pids(root: int, port: int) -> list[int]:
    """The processes under `root` (not root itself) that hold the listening socket: the
    workers of a supervisor (asgiws's and uvicorn's both keep it open in the supervisor too)."""
    listening, _, _ = tcp_inodes(port)
    return sorted(pid for pid in proc_tree(root)
                  if pid != root and socket_inodes(pid) & listening)


def connections_per_worker(workers: list[int], port: int) -> tuple[list[int], int]:
    """(established connections each worker holds, connections not accepted yet)."""
    _, established, queued = tcp_inodes(port)
    return [len(socket_inodes(pid) & established) for pid in workers], queued


class Probe:
    """Sampled at the start and end of the measured window (start(), stop()): each worker's
    share of the server's CPU and the CPU of `others` (nginx); count(), once inside the
    window, when every client connection is open: each worker's connections."""

    def __init__(self, workers: list[int], port: int, others: dict[str, list[int]]):
        self.workers, self.port, self.others = workers, port, others
        self.out: dict = {}

    def _ticks(self):
        return ([cpu_ticks([pid]) for pid in self.workers],
                {name: cpu_ticks(pids) for name, pids in self.others.items()})

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.w0, self.o0 = self._ticks()

    def stop(self) -> None:
        wall = time.perf_counter() - self.t0
        w1, o1 = self._ticks()
        clk = os.sysconf("SC_CLK_TCK")
        if self.workers:
            self.out["cpu_per_worker"] = [round(100.0 * (b - a) / clk / wall, 1)
                                          for a, b in zip(self.w0, w1)]
        for name in self.others:
            self.out[f"{name}_cpu"] = round(100.0 * (o1[name] - self.o0[name]) / clk / wall, 1)

    def count(self) -> None:
        if self.workers:
            self.out["conns_per_worker"], self.out["conns_queued"] = \
                connections_per_worker(self.workers, self.port)

    def result(self) -> dict:
        return self.out


def run_ws(running: srv.Running, url: str, conns: int, cores: str, probe: Probe,
           args, logdir: str, tag: str) -> dict:
    """bench/loadgen.py's rr echo, on `cores`; it prints a line as its window starts and ends,
    and `probe` is sampled then."""
    spec = {"mode": "rr", "url": url, "size": 32, "conns": conns, "window": 1,
            "warmup": args.warmup, "duration": args.duration, "server_pid": running.pid,
            "timeout": args.warmup + args.duration + 60, "events": True}
    argv = ["taskset", "-c", cores, srv.PYTHON, os.path.join(srv.BENCH_DIR, "loadgen.py"),
            json.dumps(spec)]
    with open(os.path.join(logdir, f"loadgen-{tag}.log"), "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        run._CLIENTS.append(proc)
        try:
            last = ""
            deadline = time.monotonic() + spec["timeout"] + 15
            for raw in proc.stdout:  # the loadgen's own timeout ends it, and this loop
                line = raw.decode().strip()
                if line == '{"event": "window-start"}':
                    probe.start()
                elif line == '{"event": "window-end"}':
                    probe.stop()
                    probe.count()  # the loadgen keeps its connections open a moment for this
                elif line:
                    last = line
                if time.monotonic() > deadline:
                    break
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            run._CLIENTS.remove(proc)
    try:
        result = json.loads(last)
    except ValueError:
        return {"error": f"load generator failed (exit {proc.returncode}); log in {logdir}"}
    if "error" not in result:
        result.update(probe.result())
        if result.get("disconnects") or result.get("bad"):
            result.setdefault("warnings", []).append(
                f"{result.get('disconnects', 0)} disconnects, {result.get('bad', 0)} bad")
    return result


# ------------------------------------------------------------------------- TLS and nginx


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed P-256 certificate for localhost and 127.0.0.1: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class Nginx:
    """nginx in the foreground on `cores`, in front of one server: docs/nginx/asgiws.conf with
    its listen ports, both upstream lines (-> `upstream_port`) and certificate paths replaced."""

    def __init__(self, directory: str, certificate: tuple[str, str], upstream_port: int,
                 cores: str):
        self.port = srv.free_port()
        cert, key = certificate
        replacements = {
            "listen 443 ssl;": f"listen 127.0.0.1:{self.port} ssl;",
            "listen 80;": f"listen 127.0.0.1:{srv.free_port()};",
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
            "server 127.0.0.1:8001;": f"server 127.0.0.1:{upstream_port};",
            "/etc/letsencrypt/live/example.com/fullchain.pem": cert,
            "/etc/letsencrypt/live/example.com/privkey.pem": key,
        }
        with open(DOC_CONFIG) as f:
            text = f.read()
        for old, new in replacements.items():
            if text.count(old) != 1:
                raise SystemExit(f"{DOC_CONFIG} no longer contains {old!r} once: update deploy.py")
            text = text.replace(old, new)
        prefix = tempfile.mkdtemp(prefix="nginx-", dir=directory)
        os.makedirs(os.path.join(prefix, "temp"))
        with open(os.path.join(prefix, "asgiws.conf"), "w") as f:
            f.write(text)
        # worker_connections: 1000 clients + as many upstream connections, with room.
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(f"""daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp; proxy_temp_path {prefix}/temp;
    fastcgi_temp_path {prefix}/temp; uwsgi_temp_path {prefix}/temp; scgi_temp_path {prefix}/temp;
    include {prefix}/asgiws.conf;
}}
""")
        self.prefix = prefix
        self.proc = subprocess.Popen(
            ["taskset", "-c", cores, NGINX, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
             "-e", os.path.join(prefix, "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _NGINX.append(self)

    def wait_ready(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"nginx exited: {self.error_log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return None
            except OSError:
                time.sleep(0.05)
        return f"nginx not listening after {timeout:.0f}s: {self.error_log()}"

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()[-600:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self in _NGINX:
            _NGINX.remove(self)


_NGINX: list[Nginx] = []


def _cleanup() -> None:
    for nginx in list(_NGINX):
        nginx.stop()
    run._cleanup()


def _on_signal(signum, frame):
    _cleanup()
    raise SystemExit(128 + signum)


# ------------------------------------------------------------------------------ measuring


def measure_setup(setup: Setup, name: str, rep: int, args, workdir: str, certificate,
                  logdir: str) -> dict[str, dict]:
    """Starts `name` (and nginx) for `setup`, measures its cells: {cell key: result}."""
    server = srv.SERVERS[name]
    extra = []
    if setup.workers > 1:
        extra += ["--workers", str(setup.workers)]
    if setup.tls_at_server:
        extra += ["--ssl-certfile", certificate[0], "--ssl-keyfile", certificate[1]]
    running = srv.Running(server, "echo", args.backlog,
                          os.path.join(logdir, f"{name}-{setup.key}-{rep}.log"),
                          extra_args=extra, cores=setup.server_cores, tls=setup.tls_at_server)
    run._RUNNING.append(running)
    nginx = None
    out: dict[str, dict] = {}
    try:
        err = running.wait_ready(30)
        workers: list[int] = []
        if not err and setup.workers > 1:
            deadline = time.monotonic() + 20
            while len(workers) < setup.workers and time.monotonic() < deadline:
                workers = worker_pids(running.pid, running.port)
                time.sleep(0.2)
            if len(workers) != setup.workers:
                err = f"found {len(workers)} workers holding the listening socket"
        if not err and setup.nginx:
            nginx = Nginx(workdir, certificate, running.port, setup.client_cores)
            err = nginx.wait_ready()
        if err:
            return {cell.key: {"error": f"setup failed: {err}"} for cell in CELLS[setup.key]}
        time.sleep(0.3)  # readiness probes done; let the workers settle
        if nginx is not None:
            http_url, ws_url = f"https://127.0.0.1:{nginx.port}/", f"wss://127.0.0.1:{nginx.port}/"
        else:
            scheme = "https" if setup.tls_at_server else "http"
            http_url, ws_url = f"{scheme}://127.0.0.1:{running.port}/", running.url("/")
        others = {"nginx": [nginx.proc.pid]} if nginx else {}
        for cell in CELLS[setup.key]:
            probe = Probe(workers, running.port, others)
            tag = f"{name}-{setup.key}-{cell.key}-{rep}"
            t0 = time.monotonic()
            if cell.kind == "http":
                result = run.run_wrk(running, args.wrk_duration, args.wrk_duration + 30,
                                     url=http_url, threads=2 if setup.workers > 1 else 1,
                                     conns=cell.conns, cores=setup.client_cores, probe=probe)
            else:
                result = run_ws(running, ws_url, cell.conns, setup.client_cores, probe, args,
                                logdir, tag)
            if not running.alive():
                result.setdefault("error", "")
                result["error"] += f" server exited: {running.log_tail()}"
            result["repeat"] = rep
            out[cell.key] = result
            print(f"[{rep + 1}/{args.repeats}] {name:8s} {setup.key:8s} {cell.key:9s} "
                  + describe(result, cell) + f"  [{time.monotonic() - t0:.1f}s]",
                  file=sys.stderr, flush=True)
            if not running.alive():
                break
    finally:
        if nginx is not None:
            nginx.stop()
        running.stop()
        if running in run._RUNNING:
            run._RUNNING.remove(running)
    return out


def describe(result: dict, cell: Cell) -> str:
    if "error" in result:
        return "ERROR " + result["error"].strip()[:300]
    text = (f"{run.fmt_value(result['value'])} {UNITS[cell.kind]}  srv {result['server_cpu']}% "
            f"(w{result.get('server_wait')}) cli {result['client_cpu']}%")
    if "conns_per_worker" in result:
        text += (f"  conns/worker {result['conns_per_worker']} (+{result['conns_queued']} "
                 f"queued) cpu/worker {result['cpu_per_worker']}")
    if "nginx_cpu" in result:
        text += f"  nginx {result['nginx_cpu']}%"
    if result.get("warnings"):
        text += "  !! " + "; ".join(result["warnings"])
    return text


# ------------------------------------------------------------------------------ reporting


def summarize(runs: dict) -> list[dict]:
    """One row per (setup, cell): each server's best repeat, and the paired per-CPU ratio."""
    rows = []
    for setup in SETUPS:
        for cell in CELLS[setup.key]:
            per = runs.get(setup.key, {}).get(cell.key)
            if not per:
                continue
            row = {"setup": setup, "cell": cell, "best": {}, "runs": per}
            scn = run.Scenario(cell.key, cell.title, "echo", cell.kind, UNITS[cell.kind])
            for name in SERVER_NAMES:
                agg = run.aggregate(per.get(name, []), scn)
                if agg:
                    row["best"][name] = agg
            a = {r["repeat"]: r for r in per.get("asgiws", []) if "error" not in r}
            u = {r["repeat"]: r for r in per.get("uvicorn", []) if "error" not in r}
            paired = [a[k]["value"] / a[k]["server_cpu"] / (u[k]["value"] / u[k]["server_cpu"])
                      for k in a.keys() & u.keys()
                      if a[k].get("server_cpu") and u[k].get("server_cpu")]
            row["paired_cpu_ratio"] = statistics.median(paired) if paired else None
            row["paired_range"] = (min(paired), max(paired)) if len(paired) > 1 else None
            rows.append(row)
    return rows


def spread_text(results: list[dict]) -> str:
    """Connections per worker in every repeat, and those not accepted yet when there were any:
    "33/31, 40/24, 300/450 +250"."""
    return ", ".join("/".join(map(str, r["conns_per_worker"]))
                     + (f" +{r['conns_queued']}" if r.get("conns_queued") else "")
                     for r in results if "conns_per_worker" in r) or "—"


def render(rows: list[dict], meta: dict, skipped: dict[str, str]) -> str:
    L = [f"Generated by `{meta['command']}` on {meta['date']} ({meta['elapsed_min']:.1f} min); "
         f"{meta['repeats']} repeats of {meta['duration']:g} s (wrk {meta['wrk_duration']:g} s) "
         f"per cell; load average {meta['loadavg']} at the start, {meta['loadavg_end']} at "
         f"the end. asgiws {meta['asgiws']}, uvicorn {srv.package_version('uvicorn')} "
         f"(httptools, uvloop, ws auto), nginx {meta['nginx']}.",
         "",
         "Value = best repeat (its server CPU, % of one core, in brackets); per CPU-s = that "
         "value ÷ the server's CPU share (every process of the server). Ratio = asgiws ÷ "
         "uvicorn: of the best values, then of the per-CPU-second figures as the median of "
         "the per-repeat ratios (their range in brackets). Setups are in the "
         "`bench/deploy.py` docstring.",
         "",
         "| setup | scenario | asgiws | asgiws per CPU-s | uvicorn | uvicorn per CPU-s "
         "| ratio | ratio per CPU-s (paired) |",
         "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for name in SERVER_NAMES:
            agg = row["best"].get(name)
            if agg is None:
                cells += ["error", "—"]
                continue
            cpu = agg.get("server_cpu")
            cells.append(f"{run.fmt_value(agg['value'])} ({cpu:.0f} %)")
            cells.append(run.fmt_value(agg.get("per_cpu_s")))
        a, u = row["best"].get("asgiws"), row["best"].get("uvicorn")
        r = f"{a['value'] / u['value']:.2f}×" if a and u else "—"
        rp, span = row["paired_cpu_ratio"], row["paired_range"]
        paired = "—" if rp is None else f"{rp:.2f}×" + (
            f" ({span[0]:.2f}–{span[1]:.2f})" if span else "")
        L.append(f"| {row['setup'].key} | {row['cell'].title} | " + " | ".join(cells)
                 + f" | {r} | {paired} |")
    spread = [row for row in rows if row["setup"].workers > 1]
    if spread:
        L += ["", "Connections per worker under `--workers 2`, counted once inside the "
              "measured window of each repeat (WebSocket: at its end; wrk: halfway) (established sockets each worker holds; "
              "+N: connections the kernel had established that no worker had accepted yet), "
              "and each worker's CPU (% of one core) in the best repeat:", "",
              "| scenario | asgiws conns/worker | asgiws CPU/worker | uvicorn conns/worker "
              "| uvicorn CPU/worker |", "|---|---|---|---|---|"]
        for row in spread:
            cells = []
            for name in SERVER_NAMES:
                cells.append(spread_text(row["runs"].get(name, [])))
                agg = row["best"].get(name) or {}
                cells.append("/".join(f"{x:.0f}" for x in agg.get("cpu_per_worker", ())) or "—")
            L.append(f"| {row['cell'].title} | " + " | ".join(cells) + " |")
    nginx_rows = [row for row in rows if row["setup"].nginx]
    if nginx_rows:
        L += ["", "nginx's own CPU in the best repeat (core 1, shared with the load "
              "generator): " + "; ".join(
                  f"{row['cell'].title}: " + ", ".join(
                      f"{name} {row['best'][name].get('nginx_cpu', 0):.0f} %"
                      for name in SERVER_NAMES if name in row["best"])
                  for row in nginx_rows) + "."]
    for key, reason in skipped.items():
        L += ["", f"Skipped {key}: {reason}."]
    if meta["errors"]:
        L += ["", "Errors and warnings:", ""] + [f"- {e}" for e in meta["errors"][:12]]
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--setups", default=",".join(SETUP_BY_KEY),
                   help="comma-separated, from: " + ", ".join(SETUP_BY_KEY))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0, help="measured WS seconds [2]")
    p.add_argument("--warmup", type=float, default=0.5, help="WS load before measuring [0.5]")
    p.add_argument("--wrk-duration", type=float, default=3.0, help="wrk -d seconds [3]")
    p.add_argument("--backlog", type=int, default=8192)
    p.add_argument("--output", default=os.path.join(srv.BENCH_DIR, "RESULTS.md"))
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.setups.split(",") if k.strip()]
    bad = [k for k in keys if k not in SETUP_BY_KEY]
    if bad:
        print(f"unknown setup: {', '.join(bad)}", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    skipped = {}
    if "nginx" in keys and NGINX is None:
        skipped["nginx"] = "nginx is not installed (apt-get install nginx)"
        keys.remove("nginx")
    setups = [SETUP_BY_KEY[k] for k in SETUP_BY_KEY if k in keys]

    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    run.raise_nofile()
    workdir = tempfile.mkdtemp(prefix="asgiws-deploy-")
    certificate = make_certificate(workdir)
    started = time.monotonic()
    meta = {"command": "python bench/deploy.py" + "".join(
                " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "asgiws": srv.package_version("asgiws"), "repeats": args.repeats,
            "duration": args.duration, "wrk_duration": args.wrk_duration, "errors": [],
            "nginx": subprocess.run([NGINX, "-v"], capture_output=True, text=True)
            .stderr.strip().split("/")[-1] if NGINX else "not installed"}
    print(f"# logs in {workdir}", file=sys.stderr)
    runs: dict = {}
    for rep in range(args.repeats):
        order = SERVER_NAMES[rep % 2:] + SERVER_NAMES[:rep % 2]
        for setup in setups:
            for name in order:
                results = measure_setup(setup, name, rep, args, workdir, certificate, workdir)
                for key, result in results.items():
                    runs.setdefault(setup.key, {}).setdefault(key, {}).setdefault(
                        name, []).append(result)
                    for problem in [result.get("error")] + result.get("warnings", []):
                        if problem:
                            meta["errors"].append(f"{setup.key}/{key}/{name} run {rep + 1}: "
                                                  f"{problem.strip()[:200]}")
    meta["elapsed_min"] = (time.monotonic() - started) / 60
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    body = render(summarize(runs), meta, skipped)
    print()
    print(body)
    if not args.no_write:
        run.write_results_md(args.output, body, MARK_START, MARK_END,
                             heading="Deployment-shaped figures (`bench/deploy.py`)")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
