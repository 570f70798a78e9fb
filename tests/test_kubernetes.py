"""docs/deployment.md, "Kubernetes: probes and shutdown": the documented health route and pod
spec, run for real. asgiws runs with the spec's args (its address and port substituted), the
probes are made as the kubelet makes them (an HTTP GET on a new connection with the probe's
timeout; a status 200-399 passes), before and during a graceful shutdown, and the spec's
terminationGracePeriodSeconds is checked against the timeouts it gives."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import TIMEOUT, free_port, spawn

yaml = pytest.importorskip("yaml", reason="the test extra installs PyYAML")

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
SECTION = DOC.read_text(encoding="utf-8").split("### Kubernetes: probes and shutdown", 1)[1].split("\n## ", 1)[0]
HEALTH_PY = re.search(r"```python\n(.*?)```", SECTION, re.S)[1]
POD = yaml.safe_load(re.search(r"```yaml\n(.*?)```", SECTION, re.S)[1])
CONTAINER = POD["containers"][0]

# What `main_app` is in the test: /slow answers after SLOW seconds, so a request is in flight
# when SIGTERM comes.
SLOW = 1.5
MAIN_APP = f'''
import asyncio


async def main_app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep({SLOW})
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"done"}})
'''


def args_with(port: int) -> list:
    """The spec's args after the `asgiws` command, with the address and port substituted."""
    args = list(CONTAINER["args"])
    assert args[0] == "asgiws"
    args = args[1:]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("myapp:app")] = "health:app"
    return args


def probe(spec: dict, port: int) -> bool:
    """One kubelet httpGet probe: a new connection, the probe's timeout, 200-399 passes."""
    get = spec["httpGet"]
    assert get["port"] == CONTAINER["ports"][0]["containerPort"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=spec["timeoutSeconds"])
    try:
        conn.request("GET", get["path"], headers={"User-Agent": "kube-probe/1.30"})
        return 200 <= conn.getresponse().status < 400
    except OSError:  # refused, reset, or timed out
        return False
    finally:
        conn.close()


def wait_for_lines(server, pattern: str, count: int) -> None:
    """Read the server's stderr until `count` lines match `pattern`."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + TIMEOUT
    while len([line for line in server.output if regex.search(line)]) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"fewer than {count} lines matching {pattern!r}:\n{server.text}"
        line = server._lines.get(timeout=remaining)
        assert line is not None, f"the server exited:\n{server.text}"
        server.output.append(line)


def option(name: str) -> float:
    args = CONTAINER["args"]
    return float(args[args.index(name) + 1])


def test_termination_grace_period_covers_the_shutdown():
    budget = POD["terminationGracePeriodSeconds"]
    pre_stop = CONTAINER["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + option("--timeout-graceful-shutdown") + option("--timeout-lifespan-shutdown")
    assert budget > needed, (budget, needed)
    # The readiness probe must notice a shutdown well within the preStop sleep + grace.
    readiness = CONTAINER["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= pre_stop


@pytest.mark.parametrize("workers", [1, 2])
def test_probes_before_and_during_graceful_shutdown(tmp_path, workers):
    (tmp_path / "health.py").write_text(MAIN_APP + "\n" + HEALTH_PY)
    port = free_port()
    extra = ["--workers", str(workers)] if workers > 1 else []
    # --timeout-graceful-shutdown from the spec stays: the slow request ends well before it.
    server = spawn([*args_with(port), "--app-dir", str(tmp_path), "--lifespan", "off", *extra])
    try:
        server.wait_for_line(r"asgiws running on http://127\.0\.0\.1:\d+")
        readiness, liveness = CONTAINER["readinessProbe"], CONTAINER["livenessProbe"]
        assert probe(readiness, port) and probe(liveness, port)

        # A request in flight, then SIGTERM (what the kubelet sends after preStop).
        result = {}
        started = threading.Event()

        def slow_request():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            conn.request("GET", "/slow")
            started.set()
            response = conn.getresponse()
            result["status"], result["body"] = response.status, response.read()

        client = threading.Thread(target=slow_request)
        client.start()
        assert started.wait(TIMEOUT)
        time.sleep(0.2)  # let the request reach the app (it sleeps SLOW seconds there)
        server.signal(signal.SIGTERM)
        wait_for_lines(server, r"^INFO: Shutting down\s*$", workers)  # every serving process

        # While the server drains, the readiness probe fails: the pod is leaving.
        assert server.proc.poll() is None
        assert not probe(readiness, port)
        assert server.proc.poll() is None and client.is_alive(), "the shutdown did not wait for the request"

        client.join(TIMEOUT)
        assert result == {"status": 200, "body": b"done"}  # the request in flight finished
        assert server.wait() == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
