"""`--workers N`: a supervisor process and N worker processes, with real signals (asgiws.supervisors.multiprocess).

The app is tests/apps/production.py: GET /pid answers with the serving process's pid.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import TIMEOUT, http_get

APPS = Path(__file__).resolve().parent / "apps"
SERVING = r"Worker \[(\d+)\] is serving"


def spawn_workers(spawn_server, tmp_path: Path, *args: str, workers: int = 2):
    return spawn_server("production:app", "--workers", str(workers), "--lifespan", "on", *args,
                        app_dir=APPS, env={"PRODUCTION_EVENTS": str(tmp_path / "events")})  # fmt: skip


def serving_pids(proc) -> list:
    """The pids of the workers that reported serving so far (reading the log lines that came)."""
    while True:
        try:
            line = proc._lines.get_nowait()
        except queue.Empty:
            break
        if line is None:
            proc._lines.put(None)
            break
        proc.output.append(line)
    return [int(pid) for pid in re.findall(SERVING, proc.text)]


def get(proc, path: str = "/") -> bytes:
    return http_get(proc.host, proc.port, path)


def pids_answering(proc, expected: set) -> set:
    """Ask /pid on new connections until every pid in `expected` has answered (or time is up)."""
    seen: set = set()
    deadline = time.monotonic() + TIMEOUT
    while not expected <= seen and time.monotonic() < deadline:
        seen.add(int(get(proc, "/pid")))
    return seen


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_workers_serve_from_their_own_processes(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path, workers=3) as proc:
        workers = set(serving_pids(proc))
        assert len(workers) == 3 and proc.proc.pid not in workers
        assert pids_answering(proc, workers) == workers  # every worker accepts connections
        assert "running on http://127.0.0.1:" in proc.text and "with 3 workers" in proc.text
    # Each worker ran its own lifespan.
    lines = (tmp_path / "events").read_text().splitlines()
    assert sorted(lines) == sorted([f"startup {pid}" for pid in workers] + [f"shutdown {pid}" for pid in workers])


def test_killed_worker_is_replaced(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path) as proc:
        victim, survivor = serving_pids(proc)
        os.kill(victim, signal.SIGKILL)
        proc.wait_for_line(rf"Worker \[{victim}\] died \(killed by SIGKILL\); starting a new one")
        replacement = int(proc.wait_for_line(rf"Worker \[(?!{victim}\]|{survivor}\])(\d+)\] is serving").group(1))
        assert pids_answering(proc, {survivor, replacement}) == {survivor, replacement}


def test_worker_that_crashes_is_replaced(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path) as proc:
        victim, _ = serving_pids(proc)
        os.kill(victim, signal.SIGABRT)  # as a segfaulting extension would die
        proc.wait_for_line(rf"Worker \[{victim}\] died \(killed by SIGABRT\)")
        proc.wait_for_line(rf"Worker \[(?!{victim}\])(\d+)\] is serving")
        assert get(proc) == b"ok"


def test_worker_that_stops_answering_the_health_check_is_replaced(spawn_server, tmp_path):
    """--timeout-worker-healthcheck (uvicorn's): a stopped worker is killed, then replaced."""
    with spawn_workers(spawn_server, tmp_path, "--timeout-worker-healthcheck", "1") as proc:
        victim, survivor = serving_pids(proc)
        os.kill(victim, signal.SIGSTOP)
        proc.wait_for_line(rf"Worker \[{victim}\] did not answer the health check for 1s: killing it")
        proc.wait_for_line(rf"Worker \[{victim}\] died \(killed by SIGKILL\); starting a new one")
        replacement = int(proc.wait_for_line(rf"Worker \[(?!{victim}\]|{survivor}\])(\d+)\] is serving").group(1))
        assert pids_answering(proc, {survivor, replacement}) == {survivor, replacement}
        assert "did not answer the health check" not in proc.text.replace(f"[{victim}] did not", "")


def test_sighup_replaces_every_worker_without_failing_a_request(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path, workers=3) as proc:
        old = set(serving_pids(proc))
        results: list = []
        stop = threading.Event()

        def client_loop() -> None:
            deadline = time.monotonic() + 3 * TIMEOUT  # bounded even if the test body fails
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    results.append(int(get(proc, "/pid")))
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    results.append(exc)

        clients = [threading.Thread(target=client_loop, daemon=True) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            wait_until(lambda: len(results) > 50, "requests before the reload")
            proc.signal(signal.SIGHUP)
            proc.wait_for_line("Reload complete", timeout=3 * TIMEOUT)
            count = len(results)
            wait_until(lambda: len(results) > count + 50, "requests after the reload")
        finally:
            stop.set()
            for thread in clients:
                thread.join(TIMEOUT)
        failures = [result for result in results if isinstance(result, Exception)]
        assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:3]}"
        new = set(serving_pids(proc)) - old
        assert len(new) == 3
        for pid in old:
            assert f"Worker [{pid}] stopped (exit status 0)" in proc.text
            wait_until(lambda: gone(pid), f"old worker {pid} to exit")
        assert set(results[-20:]) <= new  # only new workers answer now
        assert pids_answering(proc, new) == new


def test_sighup_closes_the_replaced_workers_websockets_with_1012(spawn_server, tmp_path):
    """A rolling restart is a service restart: 1012, whatever --ws-shutdown-close-code (for a
    plain shutdown) says; the app sees the same code in its websocket.disconnect."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with spawn_workers(spawn_server, tmp_path, "--ws-shutdown-close-code", "1001") as proc:
        with connect(f"ws://{proc.host}:{proc.port}/ws", open_timeout=TIMEOUT) as websocket:
            websocket.send("hello")
            assert websocket.recv(timeout=TIMEOUT) == "hello"
            proc.signal(signal.SIGHUP)
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=3 * TIMEOUT)
        proc.wait_for_line("Reload complete", timeout=3 * TIMEOUT)
        assert closed.value.rcvd is not None, proc.text
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server restarting")
    assert "disconnect 1012" in (tmp_path / "events").read_text().splitlines()


# -- spreading connections over the workers (asgiws.supervisors.balance) -------------------


def hold_connections(proc, count: int) -> tuple:
    """Open `count` connections at once, ask each which worker serves it, keep them open:
    (the sockets, a Counter of pids)."""
    import collections
    import concurrent.futures

    def one(_: int) -> tuple:
        sock = socket.create_connection((proc.host, proc.port), timeout=TIMEOUT)
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", data, re.I).group(1)):  # fmt: skip
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection"
            data += chunk
        return sock, int(data.split(b"\r\n\r\n", 1)[1])

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        held = list(pool.map(one, range(count)))
    return [sock for sock, _ in held], collections.Counter(pid for _, pid in held)


def test_a_burst_of_connections_spreads_over_the_workers(spawn_server, tmp_path):
    """64 connects at once: the worker that wakes first used to take most or all of them (libuv
    accepts until the shared queue is empty; 64/0 and 2/62 were seen). Now a worker ahead of its
    share stops accepting until the others catch up (pause margin: 4 connections, or 1/8 of the
    share), so each holds about half. Bound loosely: a worker starved of CPU for MAX_PAUSE (0.25 s)
    lets the other take the rest, by design."""
    with spawn_workers(spawn_server, tmp_path) as proc:
        workers = set(serving_pids(proc))
        socks, per_worker = hold_connections(proc, 64)
        try:
            assert set(per_worker) == workers and min(per_worker.values()) >= 16, per_worker
        finally:
            for sock in socks:
                sock.close()


def test_a_stopped_worker_does_not_hold_up_the_shared_queue(spawn_server, tmp_path):
    """With one worker stopped, the other passes its share, pauses, and MAX_PAUSE later accepts
    again (and does not pause for COOLDOWN): every connection is served, none waits for the
    stopped worker."""
    with spawn_workers(spawn_server, tmp_path, "--log-level", "debug") as proc:
        stopped, serving = serving_pids(proc)
        os.kill(stopped, signal.SIGSTOP)
        try:
            socks, per_worker = hold_connections(proc, 24)
            try:
                assert per_worker == {serving: 24}
                proc.wait_for_line(rf"Worker \[{serving}\] holds 9 connections, its share 4.5: not accepting for up to 0.25s")
                proc.wait_for_line(rf"Worker \[{serving}\] holds \d+ connections, its share [\d.]+, after 0.25s: "
                                   r"accepting again \(not pausing for 1s\)")  # fmt: skip
            finally:
                for sock in socks:
                    sock.close()
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert pids_answering(proc, {stopped, serving}) == {stopped, serving}


def test_the_balance_decisions_step_by_step():
    """AcceptBalance's decisions on a stand-in clock and server (the processes are tested
    above): ahead of its share it pauses; past MAX_PAUSE it stays paused while the other worker
    takes connections, and listens again once within its share; when the other takes none (it is
    stopped), MAX_PAUSE ends the pause and COOLDOWN follows."""
    import types

    from asgiws.supervisors.balance import COOLDOWN, MAX_PAUSE, AcceptBalance, ConnectionTable

    class StandIn:  # what the balance uses of the loop and of asgiws.server.Server
        def __init__(self) -> None:
            self.now = 0.0
            self.server_state = types.SimpleNamespace(connections=set())
            self.events: list = []

        def time(self) -> float:
            return self.now

        def call_later(self, delay, callback):
            return types.SimpleNamespace(cancel=lambda: None)

        def pause_accepting(self) -> None:
            self.events.append("pause")

        def resume_accepting(self) -> None:
            self.events.append("resume")

    def balance_holding(mine: int) -> tuple:
        table, standin = ConnectionTable(2), StandIn()
        balance = AcceptBalance(table, 0, 2)
        balance.server = balance.loop = standin
        standin.server_state.connections.update(range(mine))
        return table, standin, balance

    table, standin, balance = balance_holding(30)
    balance.connection_opened()  # 30 > 15 + 4
    assert standin.events == ["pause"]
    for other in range(1, 6):  # the other worker takes connections: the pause goes on
        table.set(1, other)
        standin.now += MAX_PAUSE
        balance._check()
    assert standin.events == ["pause"] and balance.paused_at == standin.now
    table.set(1, 28)  # 30 against a share of 29: within it
    balance._check()
    assert standin.events == ["pause", "resume"] and balance.cooldown_until == 0.0

    table, standin, balance = balance_holding(9)  # 9 > 4.5 + 4; the other worker stopped
    balance.connection_opened()
    standin.now += MAX_PAUSE / 2
    balance._check()
    assert standin.events == ["pause"]
    standin.now += MAX_PAUSE / 2
    balance._check()
    assert standin.events == ["pause", "resume"] and balance.cooldown_until == standin.now + COOLDOWN
    standin.server_state.connections.add("one more")
    balance.connection_opened()  # cooling down: no pause
    assert standin.events == ["pause", "resume"]


def test_the_connection_table_is_shared_with_forked_workers():
    from asgiws.supervisors.balance import ConnectionTable, margin

    table = ConnectionTable(4)
    pid = os.fork()
    if pid == 0:
        table.set(2, 40)
        os._exit(0)
    os.waitpid(pid, 0)
    table.set(0, 24)
    assert table.total() == 64
    table.clear(2)
    assert table.total() == 24
    assert margin(2.0) == 4 and margin(320.0) == 40


def test_sigterm_stops_supervisor_and_workers_with_status_0(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path) as proc:
        workers = serving_pids(proc)
        assert get(proc) == b"ok"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    for pid in workers:
        assert f"Worker [{pid}] stopped (exit status 0)" in proc.text
        wait_until(lambda: gone(pid), f"worker {pid} to exit")
    lines = (tmp_path / "events").read_text().splitlines()
    assert sorted(line for line in lines if line.startswith("shutdown")) == sorted(f"shutdown {pid}" for pid in workers)


def test_sigint_stops_everything_with_status_0(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path) as proc:
        workers = serving_pids(proc)
        # Ctrl+C reaches the whole process group: the workers get SIGINT as well as the supervisor.
        for pid in [proc.proc.pid, *workers]:
            os.kill(pid, signal.SIGINT)
        assert proc.wait() == 0
    assert "forcing" not in proc.text  # one Ctrl+C: graceful everywhere


def test_sigterm_sent_to_every_process_is_still_graceful(spawn_server, tmp_path):
    """systemd's default KillMode sends SIGTERM to every process of the service; the supervisor
    forwards one too. Two SIGTERMs must not turn into a forced exit in a worker."""
    with spawn_workers(spawn_server, tmp_path) as proc:
        workers = serving_pids(proc)
        with httpx.Client(timeout=TIMEOUT) as client:
            result: list = []
            thread = threading.Thread(target=lambda: result.append(client.get(proc.url + "/slow?1")))
            thread.start()
            wait_until(lambda: "slow started" in (tmp_path / "events").read_text(), "the slow request")
            for pid in [*workers, proc.proc.pid]:
                os.kill(pid, signal.SIGTERM)
            thread.join(TIMEOUT)
        assert result and result[0].status_code == 200
        assert proc.wait() == 0
    assert "forcing" not in proc.text.lower()


def test_limit_max_requests_recycles_workers(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path, "--limit-max-requests", "3") as proc:
        first = set(serving_pids(proc))
        answered_by = [int(get(proc, "/pid")) for _ in range(12)]  # never refused, even mid-replacement
        proc.wait_for_line(r"Worker \[\d+\] exited \(exit status 0\); starting a new one")
        assert "Served 3 requests (--limit-max-requests): shutting down." in proc.text
        assert max(answered_by.count(pid) for pid in answered_by) <= 3  # the limit is exact
        assert len(set(answered_by)) >= 4  # so at least two workers were replaced
        wait_until(lambda: len(set(serving_pids(proc)) - first) >= 2, "replacements")


def test_limit_max_requests_single_process_exits(spawn_server, tmp_path):
    with spawn_server("production:app", "--limit-max-requests", "2", app_dir=APPS) as proc:
        assert get(proc) == b"ok"
        assert get(proc) == b"ok"
        assert proc.wait() == 0


def test_worker_that_fails_to_boot_stops_the_supervisor(spawn, tmp_path):
    (tmp_path / "failing.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n"
    )
    proc = spawn(["failing:app", "--workers", "2", "--port", "0", "--app-dir", str(tmp_path)])
    assert proc.wait() == 3  # STARTUP_FAILURE
    assert "Application startup failed: no database" in proc.text
    assert re.search(r"Worker \[\d+\] failed to boot \(exit status 1\): stopping", proc.text)


def test_workers_exit_when_the_supervisor_is_killed(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path) as proc:
        workers = serving_pids(proc)
        proc.proc.kill()
        proc.proc.wait(TIMEOUT)
        for pid in workers:
            wait_until(lambda: gone(pid), f"orphaned worker {pid} to exit")


def test_taken_port_fails_in_the_supervisor(spawn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = spawn(["production:app", "--workers", "2", "--port", str(taken.getsockname()[1]),
                      "--app-dir", str(APPS)])  # fmt: skip
        assert proc.wait() == 3  # STARTUP_FAILURE
    assert "address already in use" in proc.text
    assert "Started server process" not in proc.text  # no worker was started


def test_second_signal_forces_the_workers(spawn_server, tmp_path):
    with spawn_workers(spawn_server, tmp_path, "--timeout-graceful-shutdown", "30") as proc:
        hung = threading.Thread(target=lambda: _quietly(httpx.get, proc.url + "/hang", timeout=TIMEOUT), daemon=True)
        hung.start()
        wait_until(lambda: "hang started" in (tmp_path / "events").read_text(), "the hanging request")
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        proc.wait_for_line("Waiting for 1 connection")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert time.monotonic() - started < 5
    assert "Second signal received: forcing the workers to exit." in proc.text
    assert "hang cancelled" in (tmp_path / "events").read_text()


def _quietly(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the request is cut on purpose
        pass


def test_worker_that_does_not_exit_is_killed_after_the_margin(spawn_server, tmp_path):
    """A lifespan shutdown that blocks the worker's event loop (so its own lifespan timeout cannot
    cancel it) keeps the worker alive: the supervisor kills it SHUTDOWN_MARGIN seconds after the
    graceful and lifespan timeouts and still exits."""
    from asgiws.supervisors.multiprocess import SHUTDOWN_MARGIN

    (tmp_path / "stuck.py").write_text(
        "import time\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.startup.complete'})\n"
        "        await receive()\n"
        "        time.sleep(60)  # blocks the loop: never answers lifespan.shutdown\n"
    )
    with spawn_server("stuck:app", "--workers", "2", "--timeout-graceful-shutdown", "0.5",
                      "--timeout-lifespan-shutdown", "0.5", app_dir=tmp_path) as proc:  # fmt: skip
        workers = serving_pids(proc)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT + SHUTDOWN_MARGIN) == 0
        deadline = 0.5 + 0.5 + SHUTDOWN_MARGIN
        assert deadline - 0.5 <= time.monotonic() - started < deadline + 3
    for pid in workers:
        assert f"Worker [{pid}] did not exit in time: killing it" in proc.text
        wait_until(lambda: gone(pid), f"worker {pid} to exit")
