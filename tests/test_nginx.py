"""asgiws behind a real nginx, configured with docs/nginx/asgiws.conf: the file docs/deployment.md
shows, with only its ports, upstream addresses, certificate paths and (for the idle test)
proxy_read_timeout substituted.

nginx runs in the foreground (`daemon off; master_process off;`, so it stays the user running
the tests and needs no `user` line), with its prefix, pid, logs and temp files in tmp_path, in
front of two asgiws processes, over TCP and over Unix sockets. The clients connect from
127.0.0.2, so the client address asgiws reports can only have come through X-Forwarded-For.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import ROOT, TIMEOUT

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
OPENSSL = shutil.which("openssl")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")

DOC_CONFIG = ROOT / "docs" / "nginx" / "asgiws.conf"
APPS = ROOT / "tests" / "apps"
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address asgiws does not trust, unlike nginx's 127.0.0.1


def test_deployment_doc_shows_the_tested_config():
    """docs/deployment.md shows docs/nginx/asgiws.conf verbatim (this test runs that file)."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"^```nginx\n(.*?)^```$", doc, flags=re.M | re.S)
    assert DOC_CONFIG.read_text() in blocks, "docs/deployment.md must show docs/nginx/asgiws.conf unchanged"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def substitute(text: str, replacements: dict) -> str:
    for old, new in replacements.items():
        assert text.count(old) == 1, f"docs/nginx/asgiws.conf should contain {old!r} once"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert path, key path)."""
    if OPENSSL is None:
        pytest.skip("openssl is needed to make the test certificate")
    directory = tmp_path_factory.mktemp("cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class Nginx:
    def __init__(self, tmp_path: Path, certificate, upstreams, read_timeout=None):
        self.https_port, self.http_port = free_port(), free_port()
        cert, key = certificate
        replacements = {
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "server 127.0.0.1:8000;": f"server {upstreams[0]};",
            "server 127.0.0.1:8001;": f"server {upstreams[1]};",
            "/etc/letsencrypt/live/example.com/fullchain.pem": str(cert),
            "/etc/letsencrypt/live/example.com/privkey.pem": str(key),
        }
        if read_timeout is not None:
            replacements["proxy_read_timeout 60s;"] = f"proxy_read_timeout {read_timeout};"
        prefix = tmp_path / "nginx"
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "temp" / name).mkdir(parents=True, exist_ok=True)
        (prefix / "asgiws.conf").write_text(substitute(DOC_CONFIG.read_text(), replacements))
        (prefix / "nginx.conf").write_text(f"""
            daemon off;
            master_process off;
            pid {prefix}/nginx.pid;
            error_log {prefix}/error.log info;
            events {{ worker_connections 256; }}
            http {{
                access_log {prefix}/access.log;
                client_body_temp_path {prefix}/temp/body;
                proxy_temp_path {prefix}/temp/proxy;
                fastcgi_temp_path {prefix}/temp/fastcgi;
                uwsgi_temp_path {prefix}/temp/uwsgi;
                scgi_temp_path {prefix}/temp/scgi;
                include {prefix}/asgiws.conf;
            }}
        """)
        self.prefix = prefix
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start:\n{self.log()}")
                time.sleep(0.05)
        self.url = f"https://localhost:{self.https_port}"
        self.ws_url = f"wss://localhost:{self.https_port}"
        self.ssl = ssl.create_default_context(cafile=str(cert))

    def log(self) -> str:
        out = self.proc.stdout.read().decode() if self.proc.poll() is not None and self.proc.stdout else ""
        error_log = self.prefix / "error.log"
        return out + (error_log.read_text() if error_log.exists() else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=self.ssl, local_address=CLIENT_ADDRESS)
        return httpx.Client(transport=transport, timeout=TIMEOUT, trust_env=False)

    def websocket(self, path="/", **kwargs):
        kwargs.setdefault("ping_interval", None)  # only the server's pings, in these tests
        return connect(self.ws_url + path, ssl=self.ssl, proxy=None, open_timeout=TIMEOUT,
                       source_address=(CLIENT_ADDRESS, 0), **kwargs)  # fmt: skip


@contextlib.contextmanager
def deployment(spawn_server, tmp_path, certificate, unix=False, asgiws_args=(), read_timeout=None):
    """Two asgiws instances (TCP, or Unix sockets) behind nginx: (nginx, [instance pids])."""
    with contextlib.ExitStack() as stack:
        upstreams, pids = [], []
        for index in range(2):
            args = ["deployment:app", "--lifespan", "off", *asgiws_args]
            if unix:
                path = tmp_path / f"asgiws-{index}.sock"
                args += ["--uds", str(path), "--forwarded-allow-ips", "unix:"]
            proc = stack.enter_context(spawn_server(*args, app_dir=APPS))
            upstreams.append(f"unix:{proc.uds}" if unix else f"127.0.0.1:{proc.port}")
            pids.append(proc.proc.pid)
        nginx = Nginx(tmp_path, certificate, upstreams, read_timeout=read_timeout)
        stack.callback(nginx.stop)
        yield nginx, pids


def check_http_and_websocket(nginx, pids):
    with nginx.client() as client:
        # A client's own X-Forwarded-For is kept as the left part of the list; asgiws picks the
        # right-most address nginx did not vouch for: the real client.
        response = client.get(nginx.url + "/some/path?x=1", headers={"X-Forwarded-For": "6.6.6.6"})
        assert response.status_code == 200, response.text
        info = response.json()
        assert info["client"] == [CLIENT_ADDRESS, 0]
        assert info["scheme"] == "https"
        assert info["host"] == f"localhost:{nginx.https_port}"
        assert info["path"] == "/some/path"
        assert info["pid"] in pids

    with contextlib.ExitStack() as stack:
        sockets, seen = [], set()
        for _ in range(4):  # round robin: two connections in a row go to different instances
            ws = stack.enter_context(nginx.websocket("/ws"))
            sockets.append(ws)
            info = json.loads(ws.recv(TIMEOUT))
            assert info["client"] == [CLIENT_ADDRESS, 0] and info["scheme"] == "wss", info
            seen.add(info["pid"])
            if seen == set(pids):
                break
        assert seen == set(pids), f"WebSockets reached {seen}, not both instances {pids}"
        for ws in sockets:
            ws.send("hello " * 1000)
            assert ws.recv(TIMEOUT) == "hello " * 1000
            ws.send(b"\x00\xff" * 50000)
            assert ws.recv(TIMEOUT) == b"\x00\xff" * 50000


@needs_nginx
def test_http_and_websocket_over_tcp(spawn_server, tmp_path, certificate):
    with deployment(spawn_server, tmp_path, certificate) as (nginx, pids):
        check_http_and_websocket(nginx, pids)


@needs_nginx
def test_http_and_websocket_over_unix_sockets(spawn_server, tmp_path, certificate):
    with deployment(spawn_server, tmp_path, certificate, unix=True) as (nginx, pids):
        check_http_and_websocket(nginx, pids)


@needs_nginx
def test_plain_http_redirects_to_https(spawn_server, tmp_path, certificate):
    with deployment(spawn_server, tmp_path, certificate) as (nginx, _):
        response = httpx.get(f"http://localhost:{nginx.http_port}/a?b=c", trust_env=False)
    assert response.status_code == 301
    assert response.headers["location"] == "https://localhost/a?b=c"


@needs_nginx
def test_idle_websocket_outlives_proxy_read_timeout_thanks_to_pings(spawn_server, tmp_path, certificate):
    args = ("--ws-ping-interval", "0.5")
    with deployment(spawn_server, tmp_path, certificate, asgiws_args=args, read_timeout="2s") as (nginx, _):
        with nginx.websocket("/idle") as ws:
            json.loads(ws.recv(TIMEOUT))
            time.sleep(5)  # idle for two and a half proxy_read_timeouts
            ws.send("still here")
            assert ws.recv(TIMEOUT) == "still here"


@needs_nginx
def test_without_pings_nginx_closes_the_idle_websocket(spawn_server, tmp_path, certificate):
    """The control for the test above: the same idle time with pings off is cut by nginx."""
    args = ("--ws-ping-interval", "none")
    with deployment(spawn_server, tmp_path, certificate, asgiws_args=args, read_timeout="2s") as (nginx, _):
        with nginx.websocket("/idle") as ws:
            json.loads(ws.recv(TIMEOUT))
            time.sleep(5)
            with pytest.raises(ConnectionClosed):
                ws.send("anyone?")
                ws.recv(TIMEOUT)


@needs_nginx
@pytest.mark.parametrize("early_hints", [False, True], ids=["off", "on"])
def test_early_hints_behind_this_nginx(spawn_server, tmp_path, certificate, early_hints):
    """--early-hints behind nginx. Off, the page comes through nginx as usual. On, nginx 1.29 and
    later pass the 103 on (its `early_hints` directive); older ones (Debian 12 has 1.22) take the
    upstream's 103 for the final response and send the real response's head to the client as
    if it were body: what the client gets is not nginx's response (docs/deployment.md)."""
    args = ("--early-hints",) if early_hints else ()
    with deployment(spawn_server, tmp_path, certificate, asgiws_args=args) as (nginx, _):
        with socket.create_connection(("127.0.0.1", nginx.https_port), timeout=TIMEOUT) as plain:
            with nginx.ssl.wrap_socket(plain, server_hostname="localhost") as sock:
                sock.sendall(b"GET /hints HTTP/1.1\r\nHost: localhost\r\n\r\n")
                received = b""
                sock.settimeout(2)  # the first response, or what nginx sends for it, comes at once
                try:
                    while b"the page" not in received:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                except socket.timeout:
                    pass
    if not early_hints:
        assert received.startswith(b"HTTP/1.1 200 OK\r\nServer: nginx") and received.endswith(b"the page")
    elif nginx_version() >= (1, 29):  # pragma: no cover - not the Debian 12 nginx CI installs
        assert received.startswith(b"HTTP/1.1 103 Early Hints\r\n") and received.endswith(b"the page")
        assert b"HTTP/1.1 200 OK\r\nServer: nginx" in received
    else:
        # The 103 is nginx's final answer, and asgiws's own 200 head arrives as its "body".
        assert received.startswith(b"HTTP/1.1 103 Early Hints\r\nServer: nginx"), received
        assert b"\r\n\r\nHTTP/1.1 200 OK\r\n" in received and b"server: asgiws" in received


def nginx_version() -> tuple:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=TIMEOUT).stderr
    return tuple(int(part) for part in re.search(r"nginx/(\d+)\.(\d+)", out).groups())
