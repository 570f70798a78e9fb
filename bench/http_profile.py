"""Per-request CPU of the HTTP path, by function, counted rather than timed.

    python bench/http_profile.py                         # asgiws from this checkout
    python bench/http_profile.py --server uvicorn        # uvicorn --http httptools, same app
    python bench/http_profile.py --repo /tmp/asgiws-base # another checkout (built in place)
    python bench/http_profile.py --top 40                # more functions
    python bench/http_profile.py --python /path/venv312/bin/python   # another CPython
    python bench/http_profile.py --server floor-task     # bench/http_floor.py: the floors
    python bench/http_profile.py --websocket             # WebSocket echo round trips instead
    python bench/http_profile.py --websocket --server picows   # the picows echo server (ceilings.py)

Runs the server under valgrind's callgrind with the plaintext app of bench/apps.py, warms it up
with 64 requests, zeroes the counters, sends --requests keep-alive GETs over --conns connections
(one outstanding each, a small asyncio client in another process), dumps the counters and
reports user-space instructions per request: the total, and the inclusive count of the
functions of the HTTP path (asgiws' compiled modules, httptools, uvloop's task and write calls).

Why instructions: this machine is shared and has no hardware counters; timings move by 2x from
run to run, while the instruction count of the same code repeats to 0.1 %. What it does not
show is kernel time (read, write, epoll: the same for every server) and cache effects. Use it
for before/after comparisons of hot-path changes; bench/run.py measures throughput.

--websocket: the echo app of bench/apps.py (permessage-deflate off), 32-byte binary messages,
one outstanding per connection; the count is per round trip.

Needs valgrind (`apt-get install valgrind`); takes about a minute and a half per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.I)

# Functions whose inclusive count is reported (a regex over callgrind's names).
PATH_FUNCTIONS = re.compile(
    r"asgiws_4http|HttpProtocol|RequestCycle|httptools.*(feed_data|get_http_version|on_header)"
    r"|create_task|task_step_impl|UVStream_write|parse_url|asgiws_4asgi_7_bridge|_codec|task_wakeup"
)


async def send_messages(port: int, total: int, conns: int) -> None:
    """`total` 32-byte masked binary echo round trips over `conns` WebSocket connections."""
    key = b"\x01\x02\x03\x04"
    payload = bytes(range(32))
    frame = bytes([0x82, 0x80 | 32]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    handshake = (b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake)
        await reader.readuntil(b"\r\n\r\n")
        for _ in range(count):
            writer.write(frame)
            await reader.readexactly(2 + len(payload))
        writer.close()

    await asyncio.gather(*(one(total // conns) for _ in range(conns)))


async def send_requests(port: int, total: int, conns: int) -> None:
    """`total` keep-alive GETs over `conns` connections, one outstanding on each."""

    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        buffered = b""
        for _ in range(count):
            writer.write(REQUEST)
            while True:
                end = buffered.find(b"\r\n\r\n")
                if end >= 0:
                    length = int(CONTENT_LENGTH.search(buffered, 0, end).group(1))
                    if len(buffered) >= end + 4 + length:
                        buffered = buffered[end + 4 + length:]
                        break
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffered += chunk
        writer.close()

    await asyncio.gather(*(one(total // conns) for _ in range(conns)))


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    python = args.python or os.path.join(args.repo, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    common = ["apps:echo", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if args.server == "uvicorn":
        ws = ["--ws-per-message-deflate", "false"] if args.websocket else []
        return [python, "-m", "uvicorn", *common, "--http", "httptools", *ws]
    if args.server.startswith("floor-"):
        return [python, os.path.join(BENCH_DIR, "http_floor.py"), str(port), args.server[len("floor-"):]]
    if args.server.startswith("picows"):
        return [python, os.path.join(BENCH_DIR, "ceilings.py"), args.server, "--port", str(port)]
    return [python, "-m", "asgiws", *common, "--ws-per-message-deflate", "false"]


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not listen on {port} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile(args: argparse.Namespace) -> str:
    """Run the server under callgrind; return the path of the dump that counts the requests."""
    port = free_port()
    out = os.path.join(tempfile.mkdtemp(prefix="http_profile."), "callgrind.out")
    env = dict(os.environ, PYTHONPATH=BENCH_DIR)
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    server = subprocess.Popen(valgrind + server_command(args, port), cwd=args.repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 120)
        load = send_messages if args.websocket else send_requests
        asyncio.run(load(port, 64, 64))  # warm-up: imports, first connections
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        asyncio.run(load(port, args.requests, args.conns))
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return out + ".1"


def report(dump: str, requests: int, top: int) -> None:
    with open(dump) as f:
        total = int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))
    print(f"user-space instructions per request or round trip: {total / requests:,.0f} (callgrind, {requests})")
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                               capture_output=True, text=True, check=True).stdout
    shown = 0
    print(f"{'per request':>12}  inclusive, functions of the HTTP path")
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+)", line)
        if not match or not PATH_FUNCTIONS.search(match.group(2)) or "Vectorcall" in match.group(2):
            continue
        name = match.group(2).rsplit(":", 1)[-1]
        name = re.sub(r"__pyx_(pw|pf|f|gb)_\d+\w*?_\d+(http|parser)_\d+\w*?_\d+", "", name)
        print(f"{int(match.group(1).replace(',', '')) / requests:12,.0f}  {name}")
        shown += 1
        if shown >= top:
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="asgiws",
                        choices=("asgiws", "uvicorn", "floor-direct", "floor-task", "picows",
                                 "picows-task", "picows-wake"))
    parser.add_argument("--websocket", action="store_true", help="WebSocket echo round trips, not GETs")
    parser.add_argument("--repo", default=REPO_DIR, help="checkout to run asgiws from (its .venv if any)")
    parser.add_argument("--requests", type=int,
                        help="requests [3200], or round trips with --websocket [12800: the 64 handshakes "
                             "then add ~1 %%]")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--python", help="the server's interpreter (a venv's bin/python) [the checkout's .venv]")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 12800 if args.websocket else 3200
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    report(profile(args), args.requests, args.top)


if __name__ == "__main__":
    main()
