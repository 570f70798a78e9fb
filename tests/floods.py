"""Floods from hostile peers against a real server process, and what each one costs (issue 13).

    .venv/bin/python tests/floods.py [--servers asgiws,uvicorn] [--small] [--only NAME,...]
                                     [--json out.json] [--list]

For every flood a fresh server subprocess serves tests/apps/hostile.py (`python -m asgiws
hostile:app --app-dir tests/apps --lifespan off`, or the same through `python -m uvicorn`), with
default settings except what the flood names (`server_args`), pinned to CPU 0 with taskset where
there is more than one CPU (this process and its side client then run on the others). After a
warm-up session (one of each kind of connection, so imports and first-use allocations are in the
baseline) the flood runs from this process over raw sockets to 127.0.0.1, and these are reported:

- **RSS growth**: the server's VmRSS sampled every ~10 ms from /proc/PID/status during the flood,
  peak minus the baseline taken after the warm-up; and VmHWM minus the same baseline.
- **accepted**: the bytes the attacker managed to send (into its socket; the kernel's buffers on
  both sides are part of what a server "accepts" before it pushes back).
- **echo p50/p99/max**: a side client (a subprocess, so this process's GIL does not skew it) on a
  second WebSocket echoes 32 bytes every ~10 ms during the flood; an echo still unanswered when
  the flood ends counts with the time it has waited.
- **connect max**: the same side client opens a fresh connection and completes a WebSocket
  handshake every ~250 ms; the slowest (10 s: failed).
- **outcome**: what the attacker saw in the end: `close NNNN` (the server's Close code), HTTP
  statuses, `eof`, `reset`, `open` (still open when the flood stopped), `dropped` (the server
  closed its socket, seen in /proc/net/tcp, while the peer could not tell), and per-flood details.

Every loop is bounded in count and time and stops by itself. The server is killed if its RSS
passes --rss-cap-mib (default 4096): reported as "killed at the RSS cap".

Attackers that never read set SO_RCVBUF to 64 KiB, as a hostile peer may (its window is its to
choose): the host's receive-buffer autotuning (up to 32 MiB here) would otherwise absorb what the
server is being made to hold. Used as a library by tests/test_stress.py (`run_flood`) and
tests/fuzz/live.py (`Server`, `Probe`, the wire helpers).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB
MASK = b"\x37\xfa\x21\x3d"
NOFILE = 65536  # the open-file limit asked for, for this process and the server (idle floods)
NEVER_READ_RCVBUF = 64 * KiB
CONNECT_TIMEOUT = 10.0
# The side client lists each wait longer than this with the wall-clock time it began.
SLOW_WAIT = 0.05

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------------------------
# The wire: client frames, the server's frames, handshakes


def mask_payload(payload: bytes, key: bytes = MASK) -> bytes:
    """RFC 6455 §5.3 masking (one big-int XOR: fast enough for a harness, no C codec needed, so
    a rebuilt extension cannot crash a long run)."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False,
                 mask: Optional[bytes] = MASK) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, bit | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, bit | 127, length)
    return head + (mask or b"")


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False,
          mask: Optional[bytes] = MASK) -> bytes:
    """A client frame: masked with `mask` (None: unmasked, a violation when a client sends it)."""
    body = mask_payload(payload, mask) if mask is not None else payload
    return frame_header(opcode, len(payload), fin, rsv1, mask) + body


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


def deflate_message(data: bytes, wbits: int = 9) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1). A 9-bit window fits any window the server
    may have asked for, so it can be built before the handshake's answer is read."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Frame(NamedTuple):
    opcode: int
    fin: bool
    payload: Optional[bytes]  # None past the reader's `keep`
    rsv1: bool


class FrameReader:
    """The frames a server sends (unmasked), parsed as bytes arrive. Keeps counts by opcode, the
    first Close code, and the payloads of frames up to `keep` bytes."""

    def __init__(self, keep: int = 4096) -> None:
        self.buffer = bytearray()
        self.keep = keep
        self.counts: Dict[int, int] = {}
        self.close_code: Optional[int] = None  # 1005 for a Close without a code
        self.error: Optional[str] = None  # the server broke RFC 6455 itself

    def feed(self, data: bytes) -> List[Frame]:
        buffer = self.buffer
        buffer += data
        frames = []
        position = 0
        end = len(buffer)
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            offset = position + 2
            if second & 0x80:
                self.error = "masked server frame"
            if length == 126:
                if end - offset < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset)
                offset += 2
            elif length == 127:
                if end - offset < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset)
                offset += 8
            if end - offset < length:
                break
            opcode = first & 0x0F
            payload = bytes(buffer[offset:offset + length]) if length <= self.keep else None
            self.counts[opcode] = self.counts.get(opcode, 0) + 1
            if opcode == OP_CLOSE and self.close_code is None:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload and len(payload) >= 2 else 1005
            frames.append(Frame(opcode, bool(first & 0x80), payload, bool(first & 0x40)))
            position = offset + length
        if position:
            del buffer[:position]
        return frames


def handshake_request(path: str = "/echo", deflate: bool = False, host: str = "flood",
                      extra: Sequence[str] = (), nonce: Optional[bytes] = None) -> bytes:
    key = base64.b64encode(nonce or os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket, deadline: float) -> Tuple[bytes, bytes]:
    """Read an HTTP response head; returns (head, the bytes read after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no response head; got {data[:200]!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before the response head; got {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def connect(port: int, timeout: float = CONNECT_TIMEOUT, rcvbuf: Optional[int] = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    sock.connect((HOST, port))
    return sock


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0): an abrupt peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class WsClient:
    """A WebSocket client on a plain socket: it sends exact bytes and reads only when told to."""

    def __init__(self, port: int, path: str = "/echo", deflate: bool = False,
                 timeout: float = CONNECT_TIMEOUT, rcvbuf: Optional[int] = None) -> None:
        deadline = time.monotonic() + timeout
        self.sock = connect(port, timeout, rcvbuf)
        try:
            self.sock.sendall(handshake_request(path, deflate))
            head, rest = read_head(self.sock, deadline)
        except BaseException:
            self.sock.close()
            raise
        if not head.startswith(b"HTTP/1.1 101"):
            self.sock.close()
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        self.head = head
        match = re.search(rb"(?im)^sec-websocket-extensions:(.*)$", head)
        self.extensions = match.group(1).strip().decode() if match else ""
        self.reader = FrameReader(keep=1 << 20)
        self.pending = list(self.reader.feed(rest)) if rest else []
        self.inflater = zlib.decompressobj(-15) if "permessage-deflate" in self.extensions else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self, timeout: float = CONNECT_TIMEOUT) -> Frame:
        """The next frame; a compressed one (single-frame messages only) inflated."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("closed")
            self.pending += self.reader.feed(data)
        received = self.pending.pop(0)
        if received.rsv1 and self.inflater is not None and received.payload is not None:
            payload = self.inflater.decompress(received.payload + b"\x00\x00\xff\xff")
            received = received._replace(payload=payload, rsv1=False)
        return received

    def echo(self, payload: bytes, timeout: float = CONNECT_TIMEOUT) -> None:
        self.send(frame(OP_BINARY, payload))
        while True:
            received = self.recv_frame(timeout)
            data = received.payload
            if received.opcode == OP_BINARY:
                if data != payload:
                    raise ConnectionError(f"echo of {len(payload)} bytes came back as "
                                          f"{'?' if data is None else len(data)} other bytes")
                return

    def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        """The close handshake, then the socket; never raises."""
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self.send(close_frame(code))
            while self.recv_frame(timeout).opcode != OP_CLOSE:
                pass
        self.sock.close()


def http_request(port: int, request: bytes, timeout: float = CONNECT_TIMEOUT) -> bytes:
    """One request on a fresh connection (with `Connection: close`): the whole response."""
    with connect(port, timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def statuses(data: bytes) -> Dict[int, int]:
    """Status codes of the HTTP responses in `data` (our app's bodies never look like one)."""
    counts: Dict[int, int] = {}
    for match in STATUS_LINE.finditer(data):
        code = int(match.group(1))
        counts[code] = counts.get(code, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# The server process


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def server_socket_open(server_port: int, client_port: int, pid: int) -> bool:
    """Whether the server process still holds its end of the connection from `client_port`: the
    /proc/net/tcp row (local port = server's, remote = client's) has an inode found among the
    process's fds. A socket the server closed with unsent data stays in FIN_WAIT1 as an orphan
    (inode 0), its FIN stuck behind the data a non-reading peer never takes: only this shows the
    drop."""
    wanted = f":{server_port:04X}", f":{client_port:04X}"
    inode = None
    with open("/proc/net/tcp") as file:
        next(file)
        for line in file:
            parts = line.split()
            if parts[1].endswith(wanted[0]) and parts[2].endswith(wanted[1]):
                inode = parts[9]
                break
    if inode is None or inode == "0":
        return False
    target = f"socket:[{inode}]"
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
    return False


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process's open-file limit to `limit`, or as far as allowed (the hard limit);
    returns the limit now in force, soft = hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(limit, soft), min(max(limit, soft), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            return wanted
    return soft


def cpus() -> List[int]:
    return sorted(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def asgiws_tree() -> Path:
    """The asgiws source tree the server runs from: this repository, or FLOODS_ASGIWS_TREE (a
    copy with its extensions built, e.g. `git archive HEAD` of another commit, for a before and
    after without touching this tree)."""
    return Path(os.environ.get("FLOODS_ASGIWS_TREE") or ROOT).resolve()


SERVER_COMMANDS = {
    "asgiws": ["-m", "asgiws", "hostile:app", "--app-dir", str(APPS), "--lifespan", "off"],
    "uvicorn": ["-m", "uvicorn", "hostile:app", "--app-dir", str(APPS), "--lifespan", "off"],
}


class ServerDidNotStart(RuntimeError):
    pass


class Server:
    """A server subprocess serving tests/apps/hostile.py on 127.0.0.1; stdout (the access log)
    goes nowhere, stderr to a temporary file (a pipe nobody drains would block the server)."""

    def __init__(self, kind: str, args: Sequence[str] = (), pin: bool = True, nofile: int = NOFILE,
                 tree: Optional[str] = None) -> None:
        nofile = raise_nofile(nofile)  # as high as this process may go (the hard limit, unprivileged)
        tree = str(tree or asgiws_tree())
        self.kind = kind
        self.args = list(args)
        self.log = tempfile.TemporaryFile(mode="w+")
        for attempt in range(3):  # another process may take the free port first
            self.port = free_port()
            prefix: List[str] = []
            if shutil.which("prlimit"):
                prefix += ["prlimit", f"--nofile={nofile}:{nofile}"]
            if pin and len(cpus()) > 1 and shutil.which("taskset"):
                prefix += ["taskset", "-c", str(cpus()[0])]
            argv = [*prefix, sys.executable, *SERVER_COMMANDS[kind], *self.args,
                    "--host", HOST, "--port", str(self.port)]
            env = {k: v for k, v in os.environ.items() if not k.startswith("ASGIWS_")}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
            env["PYTHONUNBUFFERED"] = "1"
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.log, env=env, cwd=tree,  # `-m` puts the cwd first
                                         start_new_session=True)
            if self._wait_listening():
                return
            if self.stop() == 2:  # a usage error: no point in another port
                break
        raise ServerDidNotStart(f"{kind} did not start: {self.log_tail(3).strip()}")

    def _wait_listening(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return True
            time.sleep(0.05)
        return False

    @property
    def pid(self) -> int:
        return self.proc.pid  # prlimit and taskset exec the server: the same process

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        return memory_kib(self.pid)

    def hwm_kib(self) -> int:
        return memory_kib(self.pid, "VmHWM")

    def fds(self) -> int:
        return fd_count(self.pid)

    def holds(self, client_port: int) -> bool:
        return server_socket_open(self.port, client_port, self.pid)

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after 5 s; returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
        self.log.close()


def start_server(kind: str, args: Sequence[str], optional: Sequence[str] = ()) -> Tuple[Server, str]:
    """Server(kind, args); or, if this build does not know the `optional` flag-value pairs (an
    older asgiws), the server without them and a note saying so."""
    try:
        return Server(kind, args), ""
    except ServerDidNotStart as exc:
        if not optional or "unrecognized arguments" not in str(exc):
            raise
    kept = list(args)
    for flag, value in zip(optional[::2], optional[1::2]):
        for i in range(len(kept) - 1):
            if kept[i] == flag and kept[i + 1] == value:
                del kept[i:i + 2]
                break
    return Server(kind, kept), f"{' '.join(optional)}: not a setting of this asgiws; ran without"


def wait_until_still(read: Callable[[], Any], quiet: float = 0.5, timeout: float = 5.0,
                     until: Optional[Callable[[Any], bool]] = None) -> Any:
    """Poll `read()` until its value has not changed for `quiet` seconds (or `until(value)`
    holds); returns the last value, even on timeout."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        if until is not None and until(value):
            return value
        time.sleep(0.05)
        new = read()
        if new != value:
            value, since = new, time.monotonic()
    return value


class Monitor:
    """Samples the server's VmRSS every `interval` s in a thread; kills it past `cap_kib`."""

    def __init__(self, server: Server, interval: float = 0.010, cap_kib: Optional[int] = None) -> None:
        self.server = server
        self.interval = interval
        self.cap_kib = cap_kib
        self.peak_kib = 0
        self.samples = 0
        self.capped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.server.rss_kib()
            except (ProcessLookupError, FileNotFoundError):
                return
            self.samples += 1
            self.peak_kib = max(self.peak_kib, rss)
            if self.cap_kib is not None and rss > self.cap_kib and not self.capped:
                self.capped = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.server.pid, signal.SIGKILL)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------
# The side client: echo latency and time to accept a new connection, from a subprocess


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value * 1000, 2)


def probe_main(port: int, max_seconds: float, grace: float = 0.5) -> None:
    """The side client's process. Prints READY once its echo connection is open; then "reset"
    on stdin clears the figures, "stop" (or EOF, or `max_seconds`) ends it with one JSON line.
    What is in flight at the stop gets `grace` seconds to finish; past that it counts with the
    time it has waited (a lower bound)."""
    stop = threading.Event()
    lock = threading.Lock()
    echo: List[float] = []
    connects: List[float] = []
    counters = {"unanswered": 0, "echo_errors": 0, "connect_failures": 0}
    pending: Dict[str, Optional[float]] = {"echo": None, "connect": None}  # start of what waits now
    # Waits over SLOW_WAIT, with the wall-clock time they began: to line them up with the
    # server's own timeline (a GC pass, the flood's phases).
    slow: List[Tuple[str, float, float]] = []
    stopped_at = [float("inf")]

    def record(kind: str, started: float, ok: bool = True) -> None:
        with lock:
            waited = time.perf_counter() - started
            (echo if kind == "echo" else connects).append(waited)
            if waited > SLOW_WAIT:
                slow.append((kind, round(time.time() - waited, 3), _ms(waited)))
            pending[kind] = None
            if not ok:
                counters["connect_failures"] += 1

    def echo_loop(client: Optional[WsClient]) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            payload = struct.pack("!Q", sequence) * 4  # 32 bytes
            try:
                if client is None:
                    client = WsClient(port, "/echo")
                started = pending["echo"] = time.perf_counter()
                client.send(frame(OP_BINARY, payload))
                while time.perf_counter() < stopped_at[0] + grace:
                    try:
                        received = client.recv_frame(0.05)
                    except TimeoutError:
                        continue
                    if received.opcode == OP_BINARY and received.payload == payload:
                        record("echo", started)
                        break
                    if received.opcode == OP_PING:  # the server's keepalive: a live client answers
                        client.send(frame(OP_PONG, received.payload))
                else:
                    return  # still unanswered: counted at the end
                time.sleep(max(0.0, 0.010 - (time.perf_counter() - started)))
            except (OSError, EOFError, ConnectionError):
                with lock:
                    pending["echo"] = None
                    counters["echo_errors"] += 1
                with contextlib.suppress(Exception):
                    client.sock.close()
                client = None
                stop.wait(0.1)

    def connect_loop() -> None:
        while not stop.is_set():
            started = pending["connect"] = time.perf_counter()
            try:
                WsClient(port, "/echo", timeout=CONNECT_TIMEOUT).sock.close()
                ok = True
            except (OSError, EOFError, ConnectionError):
                ok = False
            record("connect", started, ok)
            stop.wait(max(0.0, 0.25 - (time.perf_counter() - started)))

    def stdin_loop() -> None:
        for line in sys.stdin:
            if line.strip() == "reset":
                with lock:
                    echo.clear()
                    connects.clear()
                    for key in counters:
                        counters[key] = 0
            elif line.strip() == "stop":
                break
        stop.set()

    try:
        first: Optional[WsClient] = WsClient(port, "/echo")
    except (OSError, EOFError, ConnectionError) as exc:
        print(json.dumps({"error": f"side client could not connect: {exc!r}"}), flush=True)
        return
    threads = [threading.Thread(target=echo_loop, args=(first,), daemon=True),
               threading.Thread(target=connect_loop, daemon=True)]
    for thread in threads:
        thread.start()
    threading.Thread(target=stdin_loop, daemon=True).start()
    print("READY", flush=True)
    stop.wait(max_seconds)
    stopped_at[0] = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join(grace + 0.2)
    now = time.perf_counter()
    with lock:
        echo_values, connect_values = list(echo), list(connects)
        if pending["echo"] is not None:
            echo_values.append(now - pending["echo"])
            counters["unanswered"] += 1
        if pending["connect"] is not None:
            connect_values.append(now - pending["connect"])
    print(json.dumps({
        "echo": {"n": len(echo_values), "p50_ms": _ms(percentile(echo_values, 0.5)),
                 "p99_ms": _ms(percentile(echo_values, 0.99)),
                 "max_ms": _ms(max(echo_values, default=None)),
                 "unanswered": counters["unanswered"], "errors": counters["echo_errors"]},
        "connect": {"n": len(connect_values), "p50_ms": _ms(percentile(connect_values, 0.5)),
                    "max_ms": _ms(max(connect_values, default=None)),
                    "failures": counters["connect_failures"]},
        "slow": slow,
    }), flush=True)


class Probe:
    """Runs probe_main in a subprocess: `with Probe(port) as probe: ...; figures = probe.stop()`."""

    def __init__(self, port: int, max_seconds: float = 1800.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--probe", str(port),
             "--probe-seconds", str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.result: Optional[dict] = None
        if line.strip() != "READY":
            self.proc.wait(10)
            self.result = json.loads(line) if line.strip() else {"error": "side client died"}

    def reset(self) -> None:
        if self.result is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("reset\n")
                self.proc.stdin.flush()

    def stop(self) -> dict:
        if self.result is None:
            try:
                out, _ = self.proc.communicate("stop\n", timeout=30)
                self.result = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                self.proc.kill()
                self.proc.wait()
                self.result = {"error": "side client did not report"}
        return self.result

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Sending as fast as the server takes it


@dataclass
class Pumped:
    sent: int = 0
    ended: str = ""  # "sent all", "deadline", "eof", "reset", "stopped"
    received: int = 0


def pump(sock: socket.socket, chunks: Iterator[bytes], deadline: float,
         on_data: Optional[Callable[[bytes], bool]] = None) -> Pumped:
    """Send `chunks` as fast as the peer takes them, until they run out or `deadline`. With
    `on_data`, what the server sends meanwhile is read and handed to it (True: stop); without,
    nothing is read."""
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLOUT | (select.POLLIN if on_data else 0))
    result = Pumped()
    view = memoryview(b"")
    try:
        while True:
            if not view:
                chunk = next(chunks, None)
                if chunk is None:
                    result.ended = "sent all"
                    return result
                view = memoryview(chunk)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.ended = "deadline"
                return result
            for _, events in poller.poll(min(remaining, 0.1) * 1000):
                if on_data and events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = sock.recv(1 << 18)
                    if not data:
                        result.ended = "eof"
                        return result
                    result.received += len(data)
                    if on_data(data):
                        result.ended = "stopped"
                        return result
                elif events & (select.POLLHUP | select.POLLERR):
                    result.ended = "reset"
                    return result
                if events & select.POLLOUT:
                    with contextlib.suppress(BlockingIOError):
                        n = sock.send(view)
                        result.sent += n
                        view = view[n:]
    except (ConnectionResetError, BrokenPipeError):
        result.ended = "reset"
        return result
    finally:
        sock.setblocking(True)


def drain(sock: socket.socket, seconds: float, on_data: Callable[[bytes], bool],
          limit: int = 256 * MiB) -> str:
    """Read for up to `seconds` (or `limit` bytes): "eof", "reset", "stopped" (on_data said so) or
    "open"."""
    deadline = time.monotonic() + seconds
    total = 0
    try:
        while total < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "open"
            sock.settimeout(remaining)
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                return "open"
            if not data:
                return "eof"
            total += len(data)
            if on_data(data):
                return "stopped"
        return "open"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


def until_close(reader: FrameReader) -> Callable[[bytes], bool]:
    """An on_data for pump/drain: parse the server's frames, stop at its Close."""

    def on_data(data: bytes) -> bool:
        reader.feed(data)
        return reader.close_code is not None

    return on_data


def ws_outcome(reader: FrameReader, ended: str) -> str:
    if reader.close_code is not None:
        return f"close {reader.close_code}"
    return {"stopped": "open", "sent all": "open", "deadline": "open"}.get(ended, ended)


def repeat(block: bytes, total_bytes: int) -> Iterator[bytes]:
    """`block` again and again, `total_bytes` in all (cut at the end)."""
    left = total_bytes
    while left > 0:
        yield block if left >= len(block) else block[:left]
        left -= len(block)


def ws_flood(port: int, path: str, first: bytes, unit: bytes, count: int, seconds: float,
             last: bytes = b"", read: bool = True, deflate: bool = False) -> Dict[str, Any]:
    """One WebSocket connection sending `first`, then `unit` × `count`, then `last`, for at most
    `seconds`; reading (and answering nothing) if `read`. Then 1 s more to see how it ends."""
    client = WsClient(port, path, deflate=deflate, rcvbuf=None if read else NEVER_READ_RCVBUF)
    reader = client.reader
    per_block = max(1, 65536 // len(unit))
    block = unit * per_block
    chunks = iter([first, *repeat(block, count * len(unit)), last])
    stop_on_close = until_close(reader)
    started = time.monotonic()
    pumped = pump(client.sock, chunks, started + seconds, stop_on_close if read else None)
    elapsed = time.monotonic() - started
    ended = pumped.ended
    if reader.close_code is None and ended not in ("eof", "reset"):
        ended = drain(client.sock, 1.0, stop_on_close)
    client.sock.close()
    units = max(0, min(count, (pumped.sent - len(first)) // len(unit)))
    return {"accepted": pumped.sent, "outcome": ws_outcome(reader, ended),
            "details": {"units_sent": units, "seconds": round(elapsed, 2),
                        "frames_received": dict(sorted(reader.counts.items()))}}


# ---------------------------------------------------------------------------------------------
# The floods. Each takes the server and its parameters and returns accepted / outcome / details.


def flood_fragments_1b(server: Server, p: dict) -> dict:
    """A 16 MiB binary message as 1-byte fragments (7 bytes each on the wire)."""
    fragments = p["message_bytes"]
    return ws_flood(server.port, "/echo", frame(OP_BINARY, b"x", fin=False),
                    frame(OP_CONT, b"x", fin=False), fragments - 2, p["seconds"],
                    last=frame(OP_CONT, b"x", fin=True))


def flood_empty_continuations(server: Server, p: dict) -> dict:
    """A message opened with a 1-byte non-final frame, then empty continuations (6 bytes each)."""
    return ws_flood(server.port, "/echo", frame(OP_BINARY, b"x", fin=False),
                    frame(OP_CONT, b"", fin=False), p["count"], p["seconds"])


def flood_ping(server: Server, p: dict) -> dict:
    """PINGs with the largest control payload (125 bytes), never reading the PONGs."""
    result = ws_flood(server.port, "/echo", b"", frame(OP_PING, bytes(range(125))), p["count"],
                      p["seconds"], read=False)
    result["details"]["pings_sent"] = result["details"].pop("units_sent")
    return result


def flood_push_empty(server: Server, p: dict) -> dict:
    """Empty binary messages to /push, whose app never calls receive()."""
    return ws_flood(server.port, "/push", b"", frame(OP_BINARY, b""), p["count"], p["seconds"])


def flood_push_1b(server: Server, p: dict) -> dict:
    """1-byte binary messages to /push, whose app never calls receive()."""
    return ws_flood(server.port, "/push", b"", frame(OP_BINARY, b"x"), p["count"], p["seconds"])


def flood_http_pipelined(server: Server, p: dict) -> dict:
    """Pipelined `GET /` requests, never reading a response."""
    request = b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n"
    sock = connect(server.port, rcvbuf=NEVER_READ_RCVBUF)
    started = time.monotonic()
    pumped = pump(sock, repeat(request * (65536 // len(request)), p["count"] * len(request)),
                  started + p["seconds"])
    elapsed = time.monotonic() - started
    received = bytearray()
    ended = pumped.ended
    if ended not in ("eof", "reset"):
        ended = drain(sock, 1.0, lambda data: received.extend(data) and False, limit=64 * MiB)
    sock.close()
    counts = statuses(bytes(received))
    outcome = ", ".join(f"{code}×{n}" for code, n in sorted(counts.items())) or "no response"
    return {"accepted": pumped.sent, "outcome": f"{outcome}; {ended}",
            "details": {"requests_sent": pumped.sent // len(request), "seconds": round(elapsed, 2),
                        "response_bytes_read_after": len(received)}}


def flood_http_chunks_1b(server: Server, p: dict) -> dict:
    """A chunked request body in 1-byte chunks (6 bytes each) to /noread, which never reads it."""
    head = b"POST /noread HTTP/1.1\r\nHost: flood\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock = connect(server.port)
    received = bytearray()
    started = time.monotonic()
    pumped = pump(sock, iter([head, *repeat(b"1\r\nx\r\n" * 10922, p["count"] * 6)]),
                  started + p["seconds"], lambda data: received.extend(data) and False)
    elapsed = time.monotonic() - started
    ended = pumped.ended
    if ended not in ("eof", "reset"):
        ended = drain(sock, 1.0, lambda data: received.extend(data) and False)
    sock.close()
    counts = statuses(bytes(received))
    outcome = ", ".join(f"{code}×{n}" for code, n in sorted(counts.items()))
    return {"accepted": pumped.sent, "outcome": f"{outcome}; {ended}" if outcome else ended,
            "details": {"chunks_sent": max(0, (pumped.sent - len(head)) // 6),
                        "seconds": round(elapsed, 2)}}


def _slow_reader(server: Server, sock: socket.socket, seconds: float) -> dict:
    """Never read; watch whether and when the server lets go of its end of the connection,
    counting from the first bytes it sent (before that it may not even have accepted it)."""
    client_port = sock.getsockname()[1]
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll(CONNECT_TIMEOUT * 1000)
    started = time.monotonic()
    dropped_after = None
    while time.monotonic() - started < seconds:
        if not server.holds(client_port):
            dropped_after = time.monotonic() - started
            break
        time.sleep(0.05)
    unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    sock.close()
    outcome = f"dropped after {dropped_after:.1f} s" if dropped_after is not None else "open"
    return {"accepted": 0, "outcome": outcome,
            "details": {"dropped_after_s": None if dropped_after is None else round(dropped_after, 2),
                        "unread_in_client_buffer": unread}}


def flood_slow_reader_ws(server: Server, p: dict) -> dict:
    """/stream sends 64 KiB messages as fast as it may; the client never reads."""
    client = WsClient(server.port, "/stream", rcvbuf=NEVER_READ_RCVBUF)
    return _slow_reader(server, client.sock, p["seconds"])


def flood_slow_reader_http(server: Server, p: dict) -> dict:
    """GET /stream streams 64 KiB chunks; the client never reads."""
    sock = connect(server.port, rcvbuf=NEVER_READ_RCVBUF)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: flood\r\n\r\n")
    return _slow_reader(server, sock, p["seconds"])


def flood_partial_messages(server: Server, p: dict) -> dict:
    """`clients` connections each send the header of a 16 MiB binary frame and 8-15 MiB of its
    payload, then stop and hold."""
    clients: List[WsClient] = []
    accepted = 0
    deadline = time.monotonic() + p["seconds"]
    zeros_masked = MASK * (MiB // 4)  # zeros, masked: the key repeated (1 MiB, 4-byte aligned)
    try:
        for index in range(p["clients"]):
            client = WsClient(server.port, "/echo")
            clients.append(client)
            header = frame_header(OP_BINARY, 16 * MiB)
            payload = (8 + (index * 5) % 8) * MiB  # 8..15 MiB, spread deterministically
            pumped = pump(client.sock, iter([header, *repeat(zeros_masked, payload)]), deadline)
            accepted += pumped.sent
            if pumped.ended == "deadline":
                break
        time.sleep(p["hold"])
        still_open = sum(1 for client in clients if server.holds(client.sock.getsockname()[1]))
        rss_held = server.rss_kib()
    finally:
        for client in clients:
            reset(client.sock)
    return {"accepted": accepted, "outcome": f"{still_open}/{len(clients)} open",
            "details": {"clients": len(clients), "rss_held_kib": rss_held}}


def flood_deflate_bomb(server: Server, p: dict) -> dict:
    """`connections` in turn each send one compressed frame of ~17 KiB that inflates to 17 MiB
    of zeros (past ws_max_size)."""
    bomb = deflate_message(bytes(p["inflated_bytes"]))
    bomb_frame = frame(OP_BINARY, bomb, rsv1=True)
    outcomes: Dict[str, int] = {}
    close_times: List[float] = []
    accepted = 0
    for _ in range(p["connections"]):
        client = WsClient(server.port, "/echo", deflate=True)
        if "permessage-deflate" not in client.extensions:
            client.close()
            outcomes["deflate not negotiated"] = outcomes.get("deflate not negotiated", 0) + 1
            continue
        started = time.monotonic()
        stop_on_close = until_close(client.reader)
        pumped = pump(client.sock, iter([bomb_frame]), started + p["seconds"], stop_on_close)
        accepted += pumped.sent
        ended = pumped.ended
        if client.reader.close_code is None and ended not in ("eof", "reset"):
            ended = drain(client.sock, max(0.1, started + p["seconds"] - time.monotonic()), stop_on_close)
        close_times.append(time.monotonic() - started)
        outcome = ws_outcome(client.reader, ended)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        client.sock.close()
    return {"accepted": accepted,
            "outcome": ", ".join(f"{k}×{v}" for k, v in sorted(outcomes.items())),
            "details": {"compressed_bytes": len(bomb), "inflated_bytes": p["inflated_bytes"],
                        "time_to_close_max_s": round(max(close_times, default=0), 3)}}


def _slowloris(server: Server, p: dict, head: bytes, trickle: bytes) -> dict:
    """`connections` each send `head`, then one byte of `trickle` per second per connection."""
    socks: List[socket.socket] = []
    closed_at: Dict[int, float] = {}
    answers: Dict[int, int] = {}
    accepted = 0
    started = time.monotonic()
    for _ in range(p["connections"]):
        sock = connect(server.port)
        sock.sendall(head)
        accepted += len(head)
        sock.setblocking(False)
        socks.append(sock)
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLRDHUP)
    by_fd = {sock.fileno(): index for index, sock in enumerate(socks)}
    position = 0
    next_byte = time.monotonic() + 1.0
    while time.monotonic() - started < p["seconds"] and len(closed_at) < len(socks):
        for fd, _ in poller.poll(max(0.0, min(next_byte - time.monotonic(), 0.1)) * 1000):
            index = by_fd[fd]
            try:
                data = socks[index].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            for code, n in statuses(data).items():
                answers[code] = answers.get(code, 0) + n
            if not data:
                closed_at[index] = time.monotonic() - started
                poller.unregister(fd)
        if time.monotonic() >= next_byte:
            byte = trickle[position % len(trickle):position % len(trickle) + 1]
            position += 1
            for index, sock in enumerate(socks):
                if index in closed_at:
                    continue
                try:
                    accepted += sock.send(byte)
                except BlockingIOError:
                    pass
                except OSError:
                    closed_at[index] = time.monotonic() - started
                    with contextlib.suppress(KeyError, ValueError):
                        poller.unregister(sock.fileno())
            next_byte += 1.0
    for sock in socks:
        reset(sock)
    times = sorted(closed_at.values())
    outcome = f"closed {len(times)}/{len(socks)}"
    if times:
        outcome += f" after {times[0]:.1f}-{times[-1]:.1f} s"
    if answers:
        outcome += " (" + ", ".join(f"{code}×{n}" for code, n in sorted(answers.items())) + ")"
    return {"accepted": accepted, "outcome": outcome,
            "details": {"connections": len(socks), "closed": len(times),
                        "first_close_s": round(times[0], 2) if times else None,
                        "last_close_s": round(times[-1], 2) if times else None,
                        "statuses": answers}}


def flood_slowloris_head(server: Server, p: dict) -> dict:
    """Request heads that never end: a header byte per second on each connection."""
    return _slowloris(server, p, b"GET / HTTP/1.1\r\nHost: flood\r\nX-Slow: ", b"a")


def flood_slowloris_body(server: Server, p: dict) -> dict:
    """A declared 1 MB body to /upload (which reads it), arriving a byte per second."""
    return _slowloris(server, p, b"POST /upload HTTP/1.1\r\nHost: flood\r\nContent-Length: 1000000\r\n\r\n", b"b")


def _idle(server: Server, p: dict, deflate: bool) -> dict:
    """`connections` WebSockets on /echo, each after one 32-byte echo (so per-connection state
    that appears with the first message, such as zlib streams, is counted), then held. Opened
    in batches of 100: handshakes, then their answers, then the messages, then the echoes."""
    message = b"idle connection 32 bytes payload"
    data = frame(OP_BINARY, deflate_message(message), rsv1=True) if deflate else frame(OP_BINARY, message)
    socks: List[socket.socket] = []
    failures = 0
    started = time.monotonic()
    deadline = started + p["seconds"]

    def step(batch: List[socket.socket], action: Callable[[socket.socket], None]) -> List[socket.socket]:
        nonlocal failures
        done = []
        for sock in batch:
            try:
                action(sock)
                done.append(sock)
            except (OSError, EOFError, ConnectionError):
                failures += 1
                sock.close()
        return done

    def handshake(sock: socket.socket) -> None:
        head, rest = read_head(sock, time.monotonic() + CONNECT_TIMEOUT)
        if not head.startswith(b"HTTP/1.1 101") or rest:
            raise ConnectionError(head[:80])

    def echo(sock: socket.socket) -> None:
        reader = FrameReader()
        sock.settimeout(CONNECT_TIMEOUT)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("closed before the echo")
            if reader.feed(chunk):
                return

    def open_batch(size: int) -> List[socket.socket]:
        nonlocal failures
        batch = []
        for _ in range(size):
            try:
                batch.append(connect(server.port))
            except OSError:
                failures += 1
        return batch

    try:
        while len(socks) + failures < p["connections"] and time.monotonic() < deadline:
            batch = open_batch(min(100, p["connections"] - len(socks) - failures))
            batch = step(batch, lambda sock: sock.sendall(handshake_request("/echo", deflate)))
            batch = step(batch, handshake)
            batch = step(batch, lambda sock: sock.sendall(data))
            socks += step(batch, echo)
        opened_in = time.monotonic() - started
        opened_at = time.time()
        time.sleep(p["hold"])
        rss = server.rss_kib()
    finally:
        closing_at = time.time()
        for sock in socks:
            sock.close()
    return {"accepted": 0, "outcome": f"{len(socks)} open, {failures} failed",
            "details": {"connections": len(socks), "failures": failures, "opened_in_s": round(opened_in, 2),
                        "rss_held_kib": rss, "opened_at": round(opened_at, 3),
                        "closing_at": round(closing_at, 3), "closed_at": round(time.time(), 3)}}


def flood_idle(server: Server, p: dict) -> dict:
    """Idle WebSockets (no permessage-deflate), each after one echo: RSS per connection."""
    return _idle(server, p, deflate=False)


def flood_idle_deflate(server: Server, p: dict) -> dict:
    """Idle WebSockets with permessage-deflate, each after one compressed echo."""
    return _idle(server, p, deflate=True)


def flood_connect_close(server: Server, p: dict) -> dict:
    """Connect/close cycles of five kinds in turn: close at once (FIN), reset at once (SO_LINGER
    0), half a request head then reset, a keep-alive GET read then closed, a WebSocket handshake
    then reset."""
    kinds = ("fin", "rst", "partial-head-rst", "get-close", "ws-rst")
    done = {kind: 0 for kind in kinds}
    failures = 0
    get = b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n"
    started = time.monotonic()
    deadline = started + p["seconds"]
    for index in range(p["cycles"]):
        if time.monotonic() > deadline:
            break
        kind = kinds[index % len(kinds)]
        try:
            sock = connect(server.port, timeout=CONNECT_TIMEOUT)
            if kind == "fin":
                sock.close()
            elif kind == "rst":
                reset(sock)
            elif kind == "partial-head-rst":
                sock.sendall(get[:20])
                reset(sock)
            elif kind == "get-close":
                sock.sendall(get)
                head, rest = read_head(sock, time.monotonic() + CONNECT_TIMEOUT)
                sock.close()
            else:
                sock.sendall(handshake_request("/echo"))
                read_head(sock, time.monotonic() + CONNECT_TIMEOUT)
                reset(sock)
            done[kind] += 1
        except (OSError, EOFError):
            failures += 1
            with contextlib.suppress(Exception):
                sock.close()
    return {"accepted": 0, "outcome": f"{sum(done.values())} cycles, {failures} failed",
            "details": {"cycles": done, "failures": failures,
                        "seconds": round(time.monotonic() - started, 2)},
            "settle": True}


@dataclass
class Flood:
    name: str
    run: Callable[[Server, dict], dict]
    full: dict
    small: dict
    asgiws_args: Tuple[str, ...] = ()  # settings the flood needs (uvicorn has no equivalent)
    per_connection: Optional[str] = None  # details key holding the count to divide growth by

    @property
    def about(self) -> str:
        return " ".join((self.run.__doc__ or "").split("\n\n")[0].split())


UNBOUNDED = 10**9  # units for the floods that run for their time: time, not count, ends them

FLOODS: List[Flood] = [
    Flood("fragments_1b", flood_fragments_1b,
          dict(message_bytes=16 * MiB, seconds=20), dict(message_bytes=16 * MiB, seconds=3)),
    Flood("empty_continuations", flood_empty_continuations,
          dict(count=UNBOUNDED, seconds=15), dict(count=UNBOUNDED, seconds=2)),
    Flood("ping_never_read", flood_ping,
          dict(count=200_000, seconds=20), dict(count=200_000, seconds=3)),
    Flood("push_only_empty", flood_push_empty,
          dict(count=UNBOUNDED, seconds=15), dict(count=UNBOUNDED, seconds=2)),
    Flood("push_only_1b", flood_push_1b,
          dict(count=UNBOUNDED, seconds=15), dict(count=UNBOUNDED, seconds=2)),
    Flood("http_pipelined_never_read", flood_http_pipelined,
          dict(count=UNBOUNDED, seconds=20), dict(count=UNBOUNDED, seconds=3)),
    Flood("http_chunks_1b_unread", flood_http_chunks_1b,
          dict(count=UNBOUNDED, seconds=15), dict(count=UNBOUNDED, seconds=2)),
    Flood("slow_reader_ws", flood_slow_reader_ws, dict(seconds=12), dict(seconds=8),
          asgiws_args=("--timeout-write-stall", "2")),
    Flood("slow_reader_http", flood_slow_reader_http, dict(seconds=12), dict(seconds=8),
          asgiws_args=("--timeout-write-stall", "2")),
    Flood("partial_16mib_messages", flood_partial_messages,
          dict(clients=50, seconds=60, hold=3), dict(clients=10, seconds=20, hold=1),
          per_connection="clients"),
    Flood("deflate_bomb", flood_deflate_bomb,
          dict(connections=20, inflated_bytes=17 * MiB, seconds=10),
          dict(connections=3, inflated_bytes=17 * MiB, seconds=5)),
    Flood("slowloris_head", flood_slowloris_head,
          dict(connections=500, seconds=15), dict(connections=50, seconds=4)),
    Flood("slowloris_body", flood_slowloris_body,
          dict(connections=500, seconds=15), dict(connections=50, seconds=4)),
    Flood("idle_ws", flood_idle, dict(connections=10_000, seconds=120, hold=3),
          dict(connections=1_000, seconds=60, hold=1), per_connection="connections"),
    Flood("idle_ws_deflate", flood_idle_deflate, dict(connections=10_000, seconds=120, hold=3),
          dict(connections=1_000, seconds=60, hold=1), per_connection="connections"),
    Flood("connect_close", flood_connect_close, dict(cycles=100_000, seconds=300),
          dict(cycles=10_000, seconds=60)),
]
BY_NAME = {flood.name: flood for flood in FLOODS}


# ---------------------------------------------------------------------------------------------
# Running a flood against a fresh server


def warm_up(port: int) -> None:
    """One of each kind of session, so imports and first-use allocations are in the baseline."""
    http_request(port, b"GET / HTTP/1.1\r\nHost: warm\r\nConnection: close\r\n\r\n")
    http_request(port, b"POST /upload HTTP/1.1\r\nHost: warm\r\nConnection: close\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    for deflate in (False, True):
        client = WsClient(port, "/echo", deflate=deflate)
        for size in (1, 32, 1000, 70000):
            client.echo(bytes(size))
        client.send(frame(OP_PING, b"warm"))
        client.close()
    client = WsClient(port, "/push?every=0")
    client.send(frame(OP_BINARY, b"x"))
    client.close(timeout=0.2)


def run_flood(kind: str, flood: Flood, small: bool = False, server_args: Sequence[str] = (),
              rss_cap_mib: int = 4096, params: Optional[dict] = None) -> Dict[str, Any]:
    """Start a fresh `kind` server, warm it up, run `flood` with the side client beside it, and
    return the figures (see the module docstring). Never raises for what the server does."""
    p = dict(flood.small if small else flood.full, **(params or {}))
    args = list(flood.asgiws_args if kind == "asgiws" else ()) + list(server_args)
    result: Dict[str, Any] = {"server": kind, "flood": flood.name, "small": small, "params": p,
                              "server_args": args}
    affinity = os.sched_getaffinity(0)
    all_cpus = cpus()
    raise_nofile()
    try:
        if len(all_cpus) > 1:  # leave CPU 0 to the server
            os.sched_setaffinity(0, all_cpus[1:])
        server, note = start_server(kind, args, optional=flood.asgiws_args if kind == "asgiws" else ())
        if note:
            result["note"] = note
            result["server_args"] = server.args
        with server:
            warm_up(server.port)
            fds_start = wait_until_still(server.fds, quiet=0.3)
            with Probe(server.port) as probe:
                baseline = wait_until_still(server.rss_kib, quiet=0.3, timeout=3)
                result["rss_baseline_mib"] = round(baseline / 1024, 1)
                probe.reset()
                started = time.monotonic()
                with Monitor(server, cap_kib=rss_cap_mib * 1024) as monitor:
                    try:
                        outcome = flood.run(server, p)
                    except Exception as exc:  # the harness's own failure, reported not raised
                        outcome = {"accepted": None, "outcome": f"harness error: {exc!r}"}
                result["seconds"] = round(time.monotonic() - started, 2)
                side = probe.stop()
            alive = server.alive()
            result.update(
                rss_peak_growth_mib=round((monitor.peak_kib - baseline) / 1024, 1),
                accepted_bytes=outcome.get("accepted"),
                outcome=outcome["outcome"],
                details=outcome.get("details", {}),
                echo=side.get("echo"), connect=side.get("connect"), slow_waits=side.get("slow"),
                side_error=side.get("error"),
                rss_samples=monitor.samples,
            )
            if monitor.capped:
                result["outcome"] = f"killed at the RSS cap ({rss_cap_mib} MiB); " + result["outcome"]
            if alive:
                result["hwm_growth_mib"] = round((server.hwm_kib() - baseline) / 1024, 1)
                if flood.per_connection:
                    count = result["details"].get(flood.per_connection) or 0
                    held = result["details"].get("rss_held_kib", monitor.peak_kib)
                    result["growth_per_connection_kib"] = round((held - baseline) / count, 1) if count else None
                if outcome.get("settle"):
                    fds_after = wait_until_still(server.fds, quiet=1.0, timeout=15,
                                                 until=lambda n: n <= fds_start)
                    rss_after = wait_until_still(server.rss_kib, quiet=1.0, timeout=5)
                    result["details"].update(fds_start=fds_start, fds_after=fds_after,
                                             rss_after_mib=round(rss_after / 1024, 1),
                                             rss_after_ratio=round(rss_after / baseline, 4))
                result["alive_after"] = liveness(server.port)
            result["server_alive"] = alive and server.alive()
            if not result["server_alive"]:
                result["exit_status"] = server.proc.returncode
                result["log_tail"] = server.log_tail()
    finally:
        os.sched_setaffinity(0, affinity)
    return result


def liveness(port: int) -> bool:
    """After the flood: a new connection gets its handshake and an echo within 5 s."""
    try:
        client = WsClient(port, "/echo", timeout=5)
        client.echo(b"still alive?", timeout=5)
        client.close()
        return True
    except (OSError, EOFError, ConnectionError, AssertionError):
        return False


# ---------------------------------------------------------------------------------------------
# The command


def format_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.0f} KiB"
    return f"{n} B"


def _f(value: Any) -> str:
    return "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def table(results: List[Dict[str, Any]]) -> str:
    lines = ["| flood | server | RSS peak +MiB | VmHWM +MiB | accepted | echo p50 / p99 / max ms | "
             "connect max ms | outcome |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        echo = r.get("echo") or {}
        connect_ = r.get("connect") or {}
        outcome = r.get("outcome", "")
        if r.get("note"):
            outcome += f" ({r['note']})"
        if r.get("growth_per_connection_kib") is not None:
            outcome += f"; {r['growth_per_connection_kib']:g} KiB per connection"
        details = r.get("details", {})
        if "rss_after_ratio" in details:
            outcome += (f"; RSS after/before {details['rss_after_ratio']:.3f}, fds "
                        f"{details['fds_start']} -> {details['fds_after']}")
        if echo.get("unanswered"):
            outcome += "; an echo was still unanswered at the end"
        if not r.get("server_alive", True):
            outcome += f"; SERVER DIED (status {r.get('exit_status')})"
        elif r.get("alive_after") is False:
            outcome += "; NOT SERVING AFTER"
        lines.append(
            f"| {r['flood']} | {r['server']} | {_f(r.get('rss_peak_growth_mib'))} | "
            f"{_f(r.get('hwm_growth_mib'))} | {format_bytes(r.get('accepted_bytes'))} | "
            f"{_f(echo.get('p50_ms'))} / {_f(echo.get('p99_ms'))} / {_f(echo.get('max_ms'))} | "
            f"{_f(connect_.get('max_ms'))} | {outcome} |")
    return "\n".join(lines)


def meta() -> Dict[str, Any]:
    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        return ""

    versions = {}
    for name in ("uvicorn", "websockets", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    tree = asgiws_tree()
    if tree == ROOT.resolve():
        source = git("rev-parse", "--short", "HEAD") + (
            " + uncommitted changes under asgiws/" if git("status", "--porcelain", "--", "asgiws") else "")
    else:
        note = tree / "SOURCE"  # a copy may say where it came from
        source = note.read_text().strip() if note.exists() else "unknown"
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "asgiws_tree": str(tree), "asgiws_source": source,
            "python": platform.python_version(), "cpus": len(cpus()),
            "cpu": platform.processor() or platform.machine(), "versions": versions}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="asgiws,uvicorn", help="comma-separated: asgiws, uvicorn")
    parser.add_argument("--small", action="store_true", help="the short CI sizes")
    parser.add_argument("--only", default="", help="comma-separated flood names (see --list)")
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--list", action="store_true", help="list the floods and exit")
    parser.add_argument("--asgiws-tree", default=None,
                        help="run asgiws from this source tree (a built copy); default: this repository")
    parser.add_argument("--rss-cap-mib", type=int, default=4096, help="kill a server past this RSS")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-seconds", type=float, default=1800, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe_main(args.probe, args.probe_seconds)
        return 0
    if args.list:
        for flood in FLOODS:
            print(f"{flood.name:28} {flood.about}")
        return 0
    if args.asgiws_tree:
        os.environ["FLOODS_ASGIWS_TREE"] = args.asgiws_tree
    names = [n for n in args.only.split(",") if n] or [flood.name for flood in FLOODS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown flood(s): {', '.join(unknown)}; --list shows them")
    servers = [s for s in args.servers.split(",") if s]
    results = []
    report = {"meta": meta(), "results": results}
    for name in names:
        for kind in servers:
            print(f"{name} on {kind} ...", file=sys.stderr, flush=True)
            result = run_flood(kind, BY_NAME[name], small=args.small, rss_cap_mib=args.rss_cap_mib)
            results.append(result)
            print(table([result]).splitlines()[-1], file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
