"""The recipes in the docs a switching team reads first are run here, against real servers.

Every fenced block in those pages carries, just before it, one of:
    <!-- recipe: NAME -->     a command (or manifest) this module runs; RECIPES[NAME] is its text,
                              so a doc whose command changes fails here until the test follows
    <!-- reproduce: NAME -->  a message troubleshooting.md quotes; REPRODUCERS[NAME] makes asgiws
                              print it, and every line of the block must appear in its output
    <!-- from PATH -->        code quoted from a file of the repository, verbatim
    *Not run by the tests: why.*   a visible sentence, for what no test can run (kubectl)
and every sh/yaml/python/text block must have one. The scaling and chat recipes are run by
tests/test_redis_fanout.py, whose SCALING_COMMANDS are their text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from asgiws.config import Config, IMPORT_TIME_ENV
from conftest import ROOT, TIMEOUT, free_port, spawn, spawn_server
from test_redis_fanout import SCALING_COMMANDS, needs_redis, redis_server, split_command

PAGES = [
    "docs/coming-from-uvicorn.md",
    "docs/fastapi.md",
    "docs/django-channels.md",
    "docs/scaling.md",
    "docs/kubernetes.md",
    "docs/troubleshooting.md",
    "examples/chat/README.md",
    "docs/observability.md",
]
CHAT = ROOT / "examples" / "chat"
CHANNELS = ROOT / "examples" / "channels"

RECIPES = {
    "switch": "asgiws myapp:app --port 8000 --workers 4 --proxy-headers --forwarded-allow-ips 127.0.0.1",
    "check": "asgiws myapp:app --port 8000 --workers 4 --check",
    "scaling": "\n".join(SCALING_COMMANDS),  # run by tests/test_redis_fanout.py
    "chat-readme": "\n".join(SCALING_COMMANDS[:2]),  # the same, one instance
    "fastapi-run": "REDIS_URL=redis://127.0.0.1:6379/0 CHAT_INSTANCE=a CHAT_TOKENS=tok-alice=alice "
                   "asgiws app:app --app-dir examples/chat --workers 4 --ws-allowed-origins same-host",
    "channels-run": "asgiws chatsite:application --app-dir examples/channels",
    "kubernetes-deployment": None,  # a manifest: checked by its own test below
    "log-config-json": None,  # a dictConfig file: served with by its own test below
    "metrics-run": "pip install 'asgiws[metrics]'        # prometheus-client\n"
                   "asgiws myapp:app --metrics-port 9100  # http://127.0.0.1:9100/metrics",
}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"<!-- (recipe|reproduce|from):? (.+?) -->")


def blocks(page: str) -> List[Tuple[str, str, str, str]]:
    """(language, text, marker kind, marker value) for each fenced block of a page."""
    text = (ROOT / page).read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").split("\n")
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        if marker:
            found.append((match.group(1), match.group(2), marker.group(1), marker.group(2)))
            continue
        paragraph = []  # the paragraph just before the block
        for line in reversed(before):
            if not line.strip():
                break
            paragraph.insert(0, line)
        kind = "not run" if " ".join(paragraph).startswith("*Not run by the tests:") else ""
        found.append((match.group(1), match.group(2), kind, " ".join(paragraph)))
    return found


def recipe(name: str) -> str:
    for page in PAGES:
        for _, text, kind, value in blocks(page):
            if kind == "recipe" and value == name:
                return text.strip()
    raise AssertionError(f"no page has the recipe {name!r}")


# -- the pages themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_run_quoted_or_says_why_not(page):
    for language, text, kind, value in blocks(page):
        if language in ("", "ini", "nginx") and not kind:
            continue  # pictures and configuration excerpts, not recipes
        assert kind, f"{page}: a {language} block has no recipe/reproduce marker nor a 'Not run' reason:\n{text}"
        if kind == "recipe":
            assert value in RECIPES, f"{page}: recipe {value!r} is not run by tests/test_docs_recipes.py"
            if RECIPES[value] is not None:
                assert text.strip() == RECIPES[value], f"{page}: recipe {value!r} differs from what the test runs"
        elif kind == "reproduce":
            assert value in REPRODUCERS, f"{page}: message {value!r} has no reproducer"
        elif kind == "from":
            assert text in (ROOT / value).read_text(), f"{page}: the excerpt is no longer in {value}"


def test_every_recipe_the_tests_run_is_in_a_page():
    for name in RECIPES:
        recipe(name)
    quoted = {value for page in PAGES for _, _, kind, value in blocks(page) if kind == "reproduce"}
    assert quoted == set(REPRODUCERS)


def test_readme_links_every_new_page():
    readme = (ROOT / "README.md").read_text()
    for page in [*PAGES[:6], "CHANGELOG.md"]:
        assert f"({page})" in readme, f"README.md does not link {page}"


# -- running the recipes ---------------------------------------------------------------------------


MYAPP = '''
async def app(scope, receive, send):
    if scope["type"] == "http":
        body = repr((scope["client"], scope["scheme"])).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
'''


def clean_env(extra: Dict[str, str]) -> Dict[str, str]:
    """The environment for an asgiws run outside spawn(): no ASGIWS_* / UVICORN_* settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASGIWS_", "UVICORN_")) or k in IMPORT_TIME_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def asgiws_args(command: str, app_dir: Path) -> Tuple[Dict[str, str], List[str]]:
    """A recipe's `asgiws ...` line as spawn() arguments: port 0, the app from app_dir."""
    env, argv = split_command(command)
    assert argv[0] == "asgiws", command
    args = argv[1:]
    if "--port" in args:
        args[args.index("--port") + 1] = "0"
    else:
        args += ["--port", "0"]
    if "--app-dir" in args:
        args[args.index("--app-dir") + 1] = str(app_dir)
    else:
        args += ["--app-dir", str(app_dir)]
    return env, args


@contextlib.contextmanager
def serving(command: str, app_dir: Path, replacements: Optional[Dict[str, str]] = None):
    for old, new in (replacements or {}).items():
        command = command.replace(old, new)
    env, args = asgiws_args(command, app_dir)
    with spawn_server(*args, env=env) as proc:
        yield proc, proc.port


def test_coming_from_uvicorn_switch(tmp_path):
    (tmp_path / "myapp.py").write_text(MYAPP)
    with serving(recipe("switch"), tmp_path) as (proc, port):
        assert "with 4 workers" in proc.text
        response = httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "203.0.113.7",
                             "X-Forwarded-Proto": "https"}, trust_env=False, timeout=TIMEOUT)  # fmt: skip
        assert response.text == "(('203.0.113.7', 0), 'https')"  # proxy headers believed from 127.0.0.1


def test_coming_from_uvicorn_check(tmp_path):
    (tmp_path / "myapp.py").write_text(MYAPP)
    env, argv = split_command(recipe("check"))
    result = subprocess.run([sys.executable, "-m", "asgiws", *argv[1:]], cwd=tmp_path, capture_output=True,
                            text=True, timeout=TIMEOUT, env=clean_env(env))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "asgiws: check passed" in result.stdout + result.stderr


@needs_redis
def test_fastapi_recipe_auth_and_origin_policy(tmp_path):
    with redis_server(tmp_path, SCALING_COMMANDS[0]) as redis_port, \
            serving(recipe("fastapi-run"), CHAT, {"6379": str(redis_port)}) as (proc, port):  # fmt: skip
        url = f"ws://127.0.0.1:{port}/ws"
        same_host = f"http://127.0.0.1:{port}"
        with connect(url + "?token=tok-alice", origin=same_host, open_timeout=TIMEOUT, proxy=None) as ws:
            hello = json.loads(ws.recv(TIMEOUT))
            assert hello["user"] == "alice" and hello["instance"] == "a"
            ws.send(json.dumps({"text": "hi"}))
            assert json.loads(ws.recv(TIMEOUT))["text"] == "hi"
            ws.send(json.dumps({"text": "x" * 5000}))  # over MAX_TEXT: 1008 after accept
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
            assert closed.value.rcvd.code == 1008
        for origin, token in (("https://evil.example", "tok-alice"), (same_host, "nope")):
            with pytest.raises(InvalidStatus) as refused:
                connect(url + f"?token={token}", origin=origin, open_timeout=TIMEOUT, proxy=None).close()
            assert refused.value.response.status_code == 403


def test_django_channels_recipe(tmp_path):
    pytest.importorskip("channels", reason="Django Channels is in the test extra: pip install -e '.[test]'")
    with serving(recipe("channels-run"), CHANNELS) as (proc, port):
        response = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=TIMEOUT)
        assert response.status_code == 200 and response.text == "hello from Django\n"
        url = f"ws://127.0.0.1:{port}/ws/room/lobby/"
        with connect(url, open_timeout=TIMEOUT) as a, connect(url, open_timeout=TIMEOUT) as b:
            a.send(json.dumps({"text": "hello room"}))
            assert json.loads(a.recv(TIMEOUT)) == {"text": "hello room"}
            assert json.loads(b.recv(TIMEOUT)) == {"text": "hello room"}
        with pytest.raises(InvalidStatus) as refused:  # the consumer's close() before accept()
            connect(f"ws://127.0.0.1:{port}/ws/room/no-dashes/", open_timeout=TIMEOUT).close()
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as refused:  # no route: URLRouter raises before accept
            connect(f"ws://127.0.0.1:{port}/ws/nowhere/", open_timeout=TIMEOUT).close()
        assert refused.value.response.status_code == 500
        proc.wait_for_line("No route found for path")


@needs_redis
def test_kubernetes_deployment(tmp_path):
    yaml = pytest.importorskip("yaml")
    deployment = yaml.safe_load(recipe("kubernetes-deployment"))
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["command"]
    assert command[0] == "asgiws"

    def flag(name: str, default: float) -> float:
        return float(command[command.index(name) + 1]) if name in command else default

    # The grace period covers the preStop sleep, the graceful and lifespan shutdowns and the
    # supervisor's margin for a worker (5 s), as the page says.
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = flag("--timeout-graceful-shutdown", Config.timeout_graceful_shutdown)
    lifespan = flag("--timeout-lifespan-shutdown", Config.timeout_lifespan_shutdown)
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + lifespan + 5

    args = list(command[1:])
    args[args.index("--app-dir") + 1] = str(CHAT)
    args[args.index("--port") + 1] = "0"
    with redis_server(tmp_path, SCALING_COMMANDS[0]) as redis_port:
        # The values the manifest takes from the cluster (the Service's name, the pod's, a Secret).
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "CHAT_INSTANCE": "chat-0", "CHAT_TOKENS": "tok-kube=kube"}
        assert {variable["name"] for variable in container["env"]} == set(env)
        check = subprocess.run([sys.executable, "-m", "asgiws", *args, "--check"], capture_output=True, text=True,
                               timeout=TIMEOUT, env=clean_env(env))  # fmt: skip
        assert check.returncode == 0, check.stderr

        proc = spawn(args, env=env)
        try:
            port = int(proc.wait_for_line(r"asgiws running on http://0\.0\.0\.0:(\d+)").group(1))
            assert "WARNING" not in proc.text, proc.text  # --ws-allowed-origins silences the origin warning
            probe = container["readinessProbe"]["httpGet"]["path"]
            assert httpx.get(f"http://127.0.0.1:{port}{probe}", trust_env=False, timeout=TIMEOUT).status_code == 200
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()  # the tcpSocket probe
            with connect(f"ws://127.0.0.1:{port}/ws?token=tok-kube", open_timeout=TIMEOUT, proxy=None) as ws:
                assert json.loads(ws.recv(TIMEOUT))["instance"] == "chat-0"
                started = time.monotonic()
                proc.signal()  # the kubelet's SIGTERM, after preStop
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(TIMEOUT)
            assert closed.value.rcvd.code == 1012  # clients reconnect, to the other pods
            assert proc.wait(pod["terminationGracePeriodSeconds"] - pre_stop) == 0
            assert time.monotonic() - started < pod["terminationGracePeriodSeconds"] - pre_stop
        finally:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()


# -- troubleshooting.md: make each message happen ----------------------------------------------------

FAILING_LIFESPAN = '''
import contextlib
from fastapi import FastAPI

@contextlib.asynccontextmanager
async def lifespan(app):
    raise ConnectionRefusedError("cannot reach the database")
    yield

app = FastAPI(lifespan=lifespan)
'''

Reproduction = Tuple[str, Dict[str, str]]  # (asgiws's output, {text in the doc: the regex it stands for})


def run_to_exit(tmp_path: Path, *args: str, status: int) -> str:
    result = subprocess.run([sys.executable, "-m", "asgiws", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT, env=clean_env({}))  # fmt: skip
    assert result.returncode == status, result.stderr
    return result.stderr


@contextlib.contextmanager
def running(tmp_path: Path, *args: str, env: Optional[Dict[str, str]] = None):
    (tmp_path / "myapp.py").write_text(MYAPP)
    with spawn_server(*args, env=env, app_dir=tmp_path) as proc:
        yield proc, proc.port


def reproduce_import(tmp_path) -> Reproduction:
    return run_to_exit(tmp_path, "myapp:app", status=3), {}


def reproduce_attribute(tmp_path) -> Reproduction:
    (tmp_path / "myapp.py").write_text(MYAPP)
    return run_to_exit(tmp_path, "myapp:application", status=3), {}


def reproduce_address_in_use(tmp_path) -> Reproduction:
    (tmp_path / "myapp.py").write_text(MYAPP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        return run_to_exit(tmp_path, "myapp:app", "--port", str(port), status=3), {"8000": str(port)}


def reproduce_refused_flag(tmp_path) -> Reproduction:
    return run_to_exit(tmp_path, "myapp:app", "--interface", "wsgi", status=2), {}


def reproduce_bad_value(tmp_path) -> Reproduction:
    return run_to_exit(tmp_path, "myapp:app", "--ws-max-size", "1k", status=2), {}


def reproduce_lifespan_failed(tmp_path) -> Reproduction:
    pytest.importorskip("fastapi")
    (tmp_path / "failing.py").write_text(FAILING_LIFESPAN)
    return run_to_exit(tmp_path, "failing:app", "--port", "0", status=3), {}


def reproduce_origin_warning(tmp_path) -> Reproduction:
    with running(tmp_path, "myapp:app", "--host", "0.0.0.0", "--port", "0") as (proc, port):
        proc.wait_for_line("WARNING: WebSocket handshakes are accepted")
        return proc.text, {"0.0.0.0:8000": re.escape(f"0.0.0.0:{port}")}


def reproduce_fallback_warning(tmp_path) -> Reproduction:
    with running(tmp_path, "myapp:app", "--port", "0", env={"ASGIWS_NO_EXTENSIONS": "1"}) as (proc, _):
        return proc.text, {}


def reproduce_origin_403(tmp_path) -> Reproduction:
    args = ("asgiws.demo:app", "--port", "0", "--ws-allowed-origins", "https://app.example.com")
    with running(tmp_path, *args) as (proc, port):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/ws", origin="https://evil.example", open_timeout=TIMEOUT, proxy=None)
        assert refused.value.response.status_code == 403
        proc.wait_for_line("Refused WebSocket handshake")
        return proc.text, {"203.0.113.7:0": r"127\.0\.0\.1:\d+"}


def reproduce_concurrency_503(tmp_path) -> Reproduction:
    with running(tmp_path, "asgiws.demo:app", "--port", "0", "--limit-concurrency", "1") as (proc, port):
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT, proxy=None):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT, proxy=None)
            assert refused.value.response.status_code == 503
        proc.wait_for_line("Concurrency limit")
        return proc.text, {}


def reproduce_close_1009(tmp_path) -> Reproduction:
    with running(tmp_path, "asgiws.demo:app", "--port", "0", "--ws-max-size", "1024") as (proc, port):
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT, proxy=None) as ws:
            ws.send("x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
        assert closed.value.rcvd.code == 1009
        proc.wait_for_line("failed: 1009")
        return proc.text, {}


def reproduce_close_1006(tmp_path) -> Reproduction:
    args = ("asgiws.demo:app", "--port", "0", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")
    with running(tmp_path, *args) as (proc, port):
        # A raw client that completes the handshake and then never answers a Ping.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            received = b""
            while True:  # read until the server drops the connection, bounded by the socket timeout
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        proc.wait_for_line("no Pong within")
        return proc.text, {}


REPRODUCERS: Dict[str, Callable[[Path], Reproduction]] = {
    "import": reproduce_import,
    "attribute": reproduce_attribute,
    "address-in-use": reproduce_address_in_use,
    "refused-flag": reproduce_refused_flag,
    "bad-value": reproduce_bad_value,
    "lifespan-failed": reproduce_lifespan_failed,
    "origin-warning": reproduce_origin_warning,
    "fallback-warning": reproduce_fallback_warning,
    "origin-403": reproduce_origin_403,
    "concurrency-503": reproduce_concurrency_503,
    "close-1009": reproduce_close_1009,
    "close-1006": reproduce_close_1006,
}


def quoted_messages() -> Dict[str, str]:
    return {value: text for _, text, kind, value in blocks("docs/troubleshooting.md") if kind == "reproduce"}


@pytest.mark.parametrize("name", sorted(REPRODUCERS))
def test_troubleshooting_message_is_what_asgiws_prints(name, tmp_path):
    output, stands_for = REPRODUCERS[name](tmp_path)
    for line in quoted_messages()[name].strip().split("\n"):
        pattern = re.escape(line)
        for literal, regex in stands_for.items():
            pattern = pattern.replace(re.escape(literal), regex)
        assert re.search(pattern, output), f"troubleshooting.md quotes\n  {line}\nbut asgiws printed:\n{output}"


def test_observability_log_config_recipe(tmp_path):
    """docs/observability.md's dictConfig: access records as JSON lines in a file."""
    (tmp_path / "myapp.py").write_text(MYAPP)
    config = json.loads(recipe("log-config-json"))
    access_file = tmp_path / "access.jsonl"
    config["handlers"]["access"]["filename"] = str(access_file)
    (tmp_path / "logging.json").write_text(json.dumps(config))
    with serving(f"asgiws myapp:app --log-config {tmp_path / 'logging.json'}", tmp_path) as (proc, port):
        assert httpx.get(f"http://127.0.0.1:{port}/items?page=2", trust_env=False, timeout=TIMEOUT).status_code == 200
        deadline = time.monotonic() + TIMEOUT
        while not (access_file.exists() and access_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
    record = json.loads(access_file.read_text().splitlines()[0])
    assert record["logger"] == "asgiws.access" and record["path"] == "/items" and record["query"] == "page=2"
    assert record["status"] == 200 and record["method"] == "GET"


def test_observability_metrics_recipe(tmp_path):
    """docs/observability.md's two lines: prometheus-client installed (the test extra has it),
    and the server's /metrics on the metrics port."""
    from prometheus_client.parser import text_string_to_metric_families

    command = recipe("metrics-run").splitlines()[1].split("#")[0].strip()
    (tmp_path / "myapp.py").write_text(MYAPP)
    metrics_port = free_port()
    with serving(command, tmp_path, {"9100": str(metrics_port)}) as (proc, port):
        proc.wait_for_line(r"Metrics on ")
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=TIMEOUT).status_code == 200
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", trust_env=False, timeout=TIMEOUT).text
            samples = {(s.name, s.labels.get("status")): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            if samples.get(("asgiws_http_requests_total", "200")) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert samples.get(("asgiws_http_requests_total", "200")) == 1.0, text
