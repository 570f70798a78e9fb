"""Listening sockets: --backlog is what listen(2) gets, --uds with --uds-permissions, --fd
(socket activation), each in one process and under the --workers supervisor."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import TIMEOUT

APPS = Path(__file__).resolve().parent / "apps"
WORKERS = pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on 127.0.0.1:port, as the kernel reports it (ss shows
    it as Send-Q of a LISTEN socket)."""
    output = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                            timeout=TIMEOUT, check=True).stdout  # fmt: skip
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return int(lines[0].split()[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@WORKERS
def test_backlog_is_applied(spawn_server, workers):
    with spawn_server("production:app", "--backlog", "77", "--workers", workers, app_dir=APPS) as proc:
        assert listen_backlog(proc.port) == 77


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_backlog_is_applied_to_an_inherited_socket(spawn_server):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port, fd = listener.getsockname()[1], listener.fileno()
        assert listen_backlog(port) == 5
        with spawn_server("production:app", "--fd", str(fd), "--backlog", "99", app_dir=APPS, port=False,
                          pass_fds=(fd,)):  # fmt: skip
            assert listen_backlog(port) == 99


@WORKERS
@pytest.mark.parametrize("permissions, expected", [((), 0o666), (("--uds-permissions", "0o660"), 0o660),
                                                   (("--uds-permissions", "600"), 0o600)])  # fmt: skip
def test_unix_socket_permissions(spawn_server, tmp_path, workers, permissions, expected):
    path = str(tmp_path / "app.sock")
    with spawn_server("production:app", "--uds", path, *permissions, "--workers", workers, app_dir=APPS) as proc:
        assert proc.uds == path
        assert stat.S_IMODE(os.stat(path).st_mode) == expected
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=TIMEOUT) as client:
            assert client.get("http://localhost/").text == "ok"
            pids = {client.get("http://localhost/pid").text for _ in range(5)}
            assert str(proc.proc.pid) not in pids or workers == "1"
        proc.signal()
        assert proc.wait() == 0
    assert not os.path.exists(path)  # the socket file is removed on exit


def test_bad_uds_permissions_are_refused(spawn):
    proc = spawn(["production:app", "--uds", "/tmp/x.sock", "--uds-permissions", "0o1777"])
    assert proc.wait() == 2
    assert "uds_permissions" in proc.text or "--uds-permissions" in proc.text


@WORKERS
def test_inherited_fd(spawn_server, workers):
    """Socket activation: the test binds and listens, the server serves on the descriptor."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port, fd = listener.getsockname()[1], listener.fileno()
        with spawn_server("production:app", "--fd", str(fd), "--workers", workers, app_dir=APPS, port=False,
                          pass_fds=(fd,)) as proc:  # fmt: skip
            assert proc.port == port
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).text == "ok"


def test_inherited_unix_socket_fd(spawn_server, tmp_path):
    path = str(tmp_path / "activated.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        fd = listener.fileno()
        with spawn_server("production:app", "--fd", str(fd), app_dir=APPS, port=False, pass_fds=(fd,)) as proc:
            assert proc.uds == path
            with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=TIMEOUT) as client:
                assert client.get("http://localhost/").text == "ok"
    assert os.path.exists(path)  # not ours to remove: whoever bound it owns the file
