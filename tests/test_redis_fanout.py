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
