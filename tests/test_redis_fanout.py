"""examples/chat scaled out, as docs/scaling.md lays it out: a real redis-server, asgiws
`--workers 4` as instance A, a single-process asgiws as instance B, and nginx in front of both
with docs/nginx/asgiws.conf (tests/test_nginx.py's Nginx runs it).

The hello message names the process (pid) and the instance each client reached, which proves
the clients are spread over several workers of A and over B; then every client sends, and
every client must receive every message, each sender's in order. The commands that start
Redis and the two instances are the ones docs/scaling.md shows (SCALING_COMMANDS; its test in
tests/test_docs_recipes.py checks the page shows them unchanged).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import ROOT, TIMEOUT
from test_nginx import Nginx, certificate, free_port, needs_nginx  # noqa: F401 (certificate: a fixture)

pytest.importorskip("redis", reason="the redis client is in the test extra: pip install -e '.[test]'")

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)")

# As docs/scaling.md shows them; the test substitutes free ports for 6379, 8000 and 8001.
TOKENS = "tok-alice=alice,tok-bob=bob,tok-carol=carol"
SCALING_COMMANDS = [
    "redis-server --port 6379 --save '' --appendonly no",
    f"REDIS_URL=redis://127.0.0.1:6379/0 CHAT_INSTANCE=a CHAT_TOKENS={TOKENS} "
    "asgiws app:app --app-dir examples/chat --workers 4 --port 8000",
    f"REDIS_URL=redis://127.0.0.1:6379/0 CHAT_INSTANCE=b CHAT_TOKENS={TOKENS} "
    "asgiws app:app --app-dir examples/chat --port 8001",
]
TOKEN_LIST = [pair.split("=")[0] for pair in TOKENS.split(",")]

MIN_CLIENTS = 9
MAX_CLIENTS = 60  # connections tried before deciding the spread is not coming
MESSAGES_PER_SENDER = 15


def split_command(line: str) -> Tuple[Dict[str, str], List[str]]:
    """`A=1 B=2 prog args...` -> ({"A": "1", "B": "2"}, ["prog", "args", ...])."""
    words = shlex.split(line)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def substitute(line: str, replacements: Dict[str, str]) -> str:
    for old, new in replacements.items():
        line = line.replace(old, new)
    return line


@contextlib.contextmanager
def redis_server(tmp_path: Path, command: str):
    """redis-server as the doc starts it, on a free port, in tmp_path; yields its port."""
    port = free_port()
    env, argv = split_command(substitute(command, {"6379": str(port)}))
    assert argv[0] == "redis-server"
    log = tmp_path / "redis.log"
    proc = subprocess.Popen([REDIS_SERVER, *argv[1:], "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--logfile", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("redis-server did not start:\n" + (log.read_text() if log.exists() else ""))
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chat_instance(spawn_server, command: str, redis_port: int):
    env, argv = split_command(substitute(command, {"6379": str(redis_port)}))
    assert argv[0] == "asgiws"
    args = argv[1:]
    args[args.index("--port") + 1] = "0"
    args[args.index("--app-dir") + 1] = str(ROOT / "examples" / "chat")
    with spawn_server(*args, env=env) as proc:
        yield proc


@contextlib.contextmanager
def chat_deployment(spawn_server, tmp_path, certificate):
    """Redis, instance A (4 workers), instance B, nginx: (nginx, A's supervisor pid)."""
    with contextlib.ExitStack() as stack:
        redis_port = stack.enter_context(redis_server(tmp_path, SCALING_COMMANDS[0]))
        a = stack.enter_context(chat_instance(spawn_server, SCALING_COMMANDS[1], redis_port))
        b = stack.enter_context(chat_instance(spawn_server, SCALING_COMMANDS[2], redis_port))
        nginx = Nginx(tmp_path, certificate, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        stack.callback(nginx.stop)
        yield nginx


def hello(ws) -> dict:
    message = json.loads(ws.recv(TIMEOUT))
    assert message["type"] == "hello", message
    return message


@needs_redis
@needs_nginx
def test_messages_reach_every_client_on_every_worker_and_instance(spawn_server, tmp_path, certificate):
    with chat_deployment(spawn_server, tmp_path, certificate) as nginx, contextlib.ExitStack() as stack:
        clients, hellos = [], []

        def spread() -> Tuple[set, set]:
            return {h["pid"] for h in hellos if h["instance"] == "a"}, {h["pid"] for h in hellos if h["instance"] == "b"}

        # nginx alternates between A and B; within A the kernel hands each connection to one of
        # the four workers, so keep connecting (bounded) until two of them have clients.
        for index in range(MAX_CLIENTS):
            token = TOKEN_LIST[index % len(TOKEN_LIST)]
            ws = stack.enter_context(nginx.websocket(f"/ws?token={token}"))
            clients.append(ws)
            hellos.append(hello(ws))
            a_pids, b_pids = spread()
            if len(clients) >= MIN_CLIENTS and len(a_pids) >= 2 and b_pids:
                break
        a_pids, b_pids = spread()
        assert len(a_pids) >= 2 and b_pids, f"after {len(clients)} clients: A's workers {a_pids}, B {b_pids}"
        assert {h["user"] for h in hellos} == {"alice", "bob", "carol"}

        # Every client sends, interleaved, so that messages from every worker and instance are
        # in flight at once.
        for seq in range(1, MESSAGES_PER_SENDER + 1):
            for index, ws in enumerate(clients):
                ws.send(json.dumps({"text": f"message {seq} from client {index}"}))

        expected = len(clients) * MESSAGES_PER_SENDER
        orders = []
        for index, ws in enumerate(clients):
            received = [json.loads(ws.recv(TIMEOUT)) for _ in range(expected)]
            by_sender: Dict[str, List[int]] = {}
            for message in received:
                assert message["type"] == "message", message
                by_sender.setdefault(message["sender"], []).append(message["seq"])
            assert len(by_sender) == len(clients), f"client {index} heard {len(by_sender)} senders"
            for sender, seqs in by_sender.items():
                assert seqs == list(range(1, MESSAGES_PER_SENDER + 1)), f"client {index}, from {sender}: {seqs}"
            orders.append([(m["sender"], m["seq"]) for m in received])
            # Messages came from every process that had a client.
            assert {(m["instance"], m["pid"]) for m in received} == {(h["instance"], h["pid"]) for h in hellos}
        # Redis delivers its channel's messages to every subscriber in one order, so every client
        # sees not only each sender's messages in order but the same interleaving.
        assert all(order == orders[0] for order in orders)


@needs_redis
@needs_nginx
def test_the_chat_refuses_strangers_and_bad_messages(spawn_server, tmp_path, certificate):
    with chat_deployment(spawn_server, tmp_path, certificate) as nginx:
        for path in ("/ws", "/ws?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                nginx.websocket(path).close()
            assert refused.value.response.status_code == 403  # websocket.close before accept
        with nginx.websocket(f"/ws?token={TOKEN_LIST[0]}") as ws:
            hello(ws)
            ws.send("not json")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
            assert closed.value.rcvd.code == 1008  # after accept: a Close frame
        with nginx.client() as http:
            health = http.get(nginx.url + "/healthz")
        assert health.status_code == 200 and health.json()["instance"] in ("a", "b")


def read_frames(sock: socket.socket) -> List[Tuple[int, bytes]]:
    """Read a server's (unmasked, uncompressed) frames until its Close: [(opcode, payload)]."""
    buffer, frames = b"", []

    def need(count: int) -> None:
        nonlocal buffer
        while len(buffer) < count:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no Close after {len(frames)} frames") from None
            assert chunk, f"connection closed after {len(frames)} frames, without a Close"
            buffer += chunk

    while True:
        need(2)
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        header = 2
        if length == 126:
            need(4)
            length, header = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            need(10)
            length, header = int.from_bytes(buffer[2:10], "big"), 10
        need(header + length)
        frames.append((opcode, buffer[header:header + length]))
        buffer = buffer[header + length:]
        if opcode == 0x8:
            return frames


@needs_redis
def test_a_client_that_does_not_read_is_cut_off_not_buffered(spawn_server, tmp_path):
    """examples/chat bounds what waits for one client (OUTBOX_BYTES, 1 MiB): a client that stops
    reading while the room is busy gets a Close with 1013 once that is full; the others go on."""
    with redis_server(tmp_path, SCALING_COMMANDS[0]) as redis_port, \
            chat_instance(spawn_server, SCALING_COMMANDS[2], redis_port) as b:  # fmt: skip
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes back up
        slow.settimeout(TIMEOUT)
        with slow:
            slow.connect(("127.0.0.1", b.port))
            slow.sendall(f"GET /ws?token={TOKEN_LIST[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
            head = b""
            while b"\r\n\r\n" not in head:
                head += slow.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            # Then it reads nothing while another client sends 8 MB (its own messages come back
            # to it: max_queue=None keeps it reading them).
            text = "x" * 4000
            sent = 2000  # 8 MB: more than the outbox (1 MiB) and the kernel's send buffer (up to 4 MiB) hold
            with connect(f"ws://127.0.0.1:{b.port}/ws?token={TOKEN_LIST[0]}", open_timeout=TIMEOUT, max_queue=None,
                         proxy=None) as fast:  # fmt: skip
                hello(fast)
                for _ in range(sent):
                    fast.send(json.dumps({"text": text}))
                for seq in range(1, sent + 1):
                    assert json.loads(fast.recv(TIMEOUT))["seq"] == seq
            frames = read_frames(slow)
        opcode, payload = frames[-1]
        assert int.from_bytes(payload[:2], "big") == 1013 and payload[2:] == b"too slow"
        delivered = len(frames) - 2  # less the hello and the Close
        assert 0 < delivered < sent, delivered
