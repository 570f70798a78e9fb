"""TLS for direct https:// and wss:// (--ssl-certfile, --ssl-keyfile, --ssl-keyfile-password,
--ssl-ca-certs), against a server process, with certificates the test makes (`cryptography`)."""

from __future__ import annotations

import datetime
import ipaddress
import platform
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from asgiws.config import Config
from conftest import TIMEOUT

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

APPS = Path(__file__).resolve().parent / "apps"
PASSWORD = "correct horse"


def _name(common_name: str) -> "x509.Name":
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Key identifiers, and key usage on the CA: Python 3.13's default context verifies with
        # VERIFY_X509_STRICT, which refuses a chain without them ("Missing Authority Key Identifier").
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password: str = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())  # fmt: skip
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """A test CA; a server certificate for 127.0.0.1 signed by it, with its key encrypted with
    PASSWORD; a client certificate signed by it (for mutual TLS)."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("asgiws test CA", ca_key, "asgiws test CA", ca_key, ca=True)
    server = _certificate("localhost", server_key, "asgiws test CA", ca_key, server=True)
    client = _certificate("test client", client_key, "asgiws test CA", ca_key)
    files = {
        "ca": _pem(ca),
        "cert": _pem(server),
        "key": _key_pem(server_key, PASSWORD),
        "plain_key": _key_pem(server_key),
        "client_cert": _pem(client),
        "client_key": _key_pem(client_key),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return {name: str(path) for name, path in paths.items()}


def client_context(pki: dict, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if with_certificate:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


def spawn_tls(spawn_server, pki: dict, *args: str):
    return spawn_server("production:app", "--ssl-certfile", pki["cert"], "--ssl-keyfile", pki["key"], *args,
                        app_dir=APPS, env={"ASGIWS_SSL_KEYFILE_PASSWORD": PASSWORD})  # fmt: skip


async def wss_exchange(port: int, context: ssl.SSLContext) -> list:
    from websockets.asyncio.client import connect

    async with connect(f"wss://127.0.0.1:{port}/ws", ssl=context, open_timeout=TIMEOUT) as ws:
        await ws.send("hello over TLS")
        echoed = await ws.recv()
        await ws.send("scheme")
        return [echoed, await ws.recv()]


@pytest.mark.anyio
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_https_and_wss(spawn_server, pki, workers):
    with spawn_tls(spawn_server, pki, "--workers", workers) as proc:
        assert f"asgiws running on https://127.0.0.1:{proc.port}" in proc.text
        async with httpx.AsyncClient(verify=client_context(pki), timeout=TIMEOUT) as client:
            response = await client.get(f"https://127.0.0.1:{proc.port}/scheme")
        assert response.status_code == 200 and response.text == "https"
        assert await wss_exchange(proc.port, client_context(pki)) == ["hello over TLS", "wss"]


def test_a_worker_listening_again_after_a_pause_still_speaks_tls(spawn_server, pki):
    """--workers 2 with one worker stopped: the other passes its share, pauses its accepting, and
    listens again on a new duplicate of the shared socket (asgiws.supervisors.balance), with the
    same TLS context: every connection, before and after, gets an HTTPS answer."""
    import concurrent.futures
    import os
    import re
    import signal
    import socket

    with spawn_tls(spawn_server, pki, "--workers", "2", "--log-level", "debug") as proc:
        stopped, serving = (int(pid) for pid in re.findall(r"Worker \[(\d+)\] is serving", proc.text)[:2])
        context = client_context(pki)

        def one(_: int) -> ssl.SSLSocket:
            sock = context.wrap_socket(socket.create_connection(("127.0.0.1", proc.port), timeout=TIMEOUT),
                                       server_hostname="127.0.0.1")  # fmt: skip
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"%d" % serving):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            return sock

        os.kill(stopped, signal.SIGSTOP)
        try:
            with concurrent.futures.ThreadPoolExecutor(24) as pool:
                held = list(pool.map(one, range(24)))
            proc.wait_for_line(rf"Worker \[{serving}\] holds \d+ connections, its share [\d.]+, after 0.25s: accepting again")
            for sock in held:
                sock.close()
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_plain_http_to_a_tls_port_is_not_served(spawn_server, pki):
    with spawn_tls(spawn_server, pki) as proc:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{proc.port}/", timeout=TIMEOUT)
        # ...and the server is none the worse for it.
        assert httpx.get(f"https://127.0.0.1:{proc.port}/", verify=client_context(pki), timeout=TIMEOUT).text == "ok"


def test_unencrypted_key_needs_no_password(spawn_server, pki):
    with spawn_server("production:app", "--ssl-certfile", pki["cert"], "--ssl-keyfile", pki["plain_key"],
                      app_dir=APPS) as proc:  # fmt: skip
        assert httpx.get(f"https://127.0.0.1:{proc.port}/scheme", verify=client_context(pki), timeout=TIMEOUT).text == "https"


@pytest.mark.anyio
async def test_mutual_tls_with_ca_certs(spawn_server, pki):
    with spawn_tls(spawn_server, pki, "--ssl-ca-certs", pki["ca"]) as proc:
        url = f"https://127.0.0.1:{proc.port}/scheme"
        with_cert = client_context(pki, with_certificate=True)
        async with httpx.AsyncClient(verify=with_cert, timeout=TIMEOUT) as client:
            assert (await client.get(url)).text == "https"
        assert await wss_exchange(proc.port, with_cert) == ["hello over TLS", "wss"]
        # Without a client certificate the handshake fails (TLS 1.3 reports it on the first read).
        async with httpx.AsyncClient(verify=client_context(pki), timeout=TIMEOUT) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(url)


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda pki: ["--ssl-keyfile-password", "wrong"], "TLS: could not load"),
        (lambda pki: ["--ssl-keyfile-password", PASSWORD, "--ssl-ca-certs", "/nonexistent/ca.pem"],
         "TLS: could not read /nonexistent/ca.pem: No such file or directory"),
    ],
    ids=["wrong-password", "missing-ca-file"],
)
def test_bad_tls_files_fail_startup_with_one_line(spawn, pki, args, message):
    proc = spawn(["production:app", "--port", "0", "--app-dir", str(APPS), "--ssl-certfile", pki["cert"],
                  "--ssl-keyfile", pki["key"], *args(pki)])  # fmt: skip
    assert proc.wait() == 3  # STARTUP_FAILURE
    errors = [line for line in proc.output if line.startswith("ERROR")]
    assert len(errors) == 1 and message in errors[0], proc.text
    assert "Traceback" not in proc.text


def test_ssl_options_need_a_certificate():
    from asgiws.config import Config, ConfigError

    with pytest.raises(ConfigError, match="need ssl_certfile"):
        Config(app="x:y", ssl_keyfile="key.pem")


def test_uvicorn_ssl_settings_shape_the_context(pki):
    """--ssl-cert-reqs, --ssl-version and --ssl-ciphers (uvicorn's flags) reach the context."""
    from asgiws.server import make_ssl_context

    base = {"app": "x:y", "ssl_certfile": pki["cert"], "ssl_keyfile": pki["plain_key"]}
    assert make_ssl_context(Config(**base)).verify_mode == ssl.CERT_NONE
    assert make_ssl_context(Config(**base, ssl_ca_certs=pki["ca"])).verify_mode == ssl.CERT_REQUIRED
    assert make_ssl_context(Config(**base, ssl_ca_certs=pki["ca"], ssl_cert_reqs=0)).verify_mode == ssl.CERT_NONE
    assert make_ssl_context(Config(**base, ssl_cert_reqs=1)).verify_mode == ssl.CERT_OPTIONAL
    pinned = make_ssl_context(Config(**base, ssl_version=5))
    assert pinned.minimum_version == pinned.maximum_version == ssl.TLSVersion.TLSv1_2
    ciphers = make_ssl_context(Config(**base, ssl_ciphers="ECDHE+AESGCM")).get_ciphers()
    assert ciphers and all("GCM" in c["name"] for c in ciphers if c["protocol"] == "TLSv1.2")


def test_startup_raises_the_malloc_mmap_threshold_for_tls_reads():
    """uvloop's TLS transport allocates a 256 KiB bytes per read for an HTTP connection: the
    server makes glibc serve such blocks from its heap (asgiws.server.raise_malloc_mmap_threshold),
    not with an mmap + munmap each (which halved HTTPS requests per second). Checked in a fresh
    interpreter by glibc's own count of mmapped blocks (mallinfo2)."""
    code = (
        "import ctypes, ctypes.util\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',"
        " 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
        "libc.mallinfo2.restype = Info\n"
        "from asgiws.server import raise_malloc_mmap_threshold\n"
        "raise_malloc_mmap_threshold()\n"
        "before = libc.mallinfo2().hblks\n"
        "block = bytes(900 * 1024)\n"
        "print(libc.mallinfo2().hblks - before)\n"
    )
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    import ctypes.util

    if not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"):
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # A 900 KiB block (larger than anything the imports free, so only the warm-up's 1 MiB
    # explains it) came from the heap, not an mmap; 256 KiB reads then do too.
    assert result.stdout.strip() == "0"
