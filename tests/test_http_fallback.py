"""The HTTP connection and request cycle without their compiled modules: `asgiws/http/protocol.py`
and `cycle.py` are compiled as they are (their `.pxd` makes the classes cdef), and with
ASGIWS_NO_EXTENSIONS=1 the same `.py` runs as plain Python (`asgiws/http/__init__.py`). The
behaviour is one source either way; the whole HTTP suite runs on the fallback with
`ASGIWS_NO_EXTENSIONS=1 python -m pytest tests/test_http*.py`. Here: which one a process runs,
and a server on the fallback serving pipelined and chunked requests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, RawConnection

ECHO_APP = "tests.apps.echo:app"


def compiled_http_built() -> bool:
    return any(name.startswith("protocol.") and name.endswith((".so", ".pyd"))
               for name in os.listdir(ROOT / "asgiws" / "http"))


@pytest.mark.parametrize("value, compiled", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_selection_at_import(value, compiled):
    """What ASGIWS_NO_EXTENSIONS selects, in a fresh interpreter (the choice is made once, at
    import): the compiled modules where they are built, the sources otherwise."""
    if compiled and not compiled_http_built():
        pytest.skip("the HTTP modules are not compiled in this checkout")
    code = ("import asgiws.http.protocol as p, asgiws.http.cycle as c, asgiws.http as h\n"
            "print(p.__file__, c.__file__, c.Connection in p.HttpProtocol.__mro__, h.protocol is p)")
    env = dict(os.environ, ASGIWS_NO_EXTENSIONS=value, PYTHONPATH=str(ROOT))
    protocol, cycle, same_cycle, attribute = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    suffix = (".so", ".pyd") if compiled else (".py",)
    assert protocol.endswith(suffix) and cycle.endswith(suffix), (protocol, cycle)
    assert same_cycle == "True" and attribute == "True"


def test_a_server_on_the_fallback_serves_pipelined_and_chunked_requests(spawn_server):
    with spawn_server(ECHO_APP, env={"ASGIWS_NO_EXTENSIONS": "1"}) as proc:
        with RawConnection(proc) as conn:
            conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.read_response().status == 200
            assert conn.read_response().status == 200
            conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\r\nabc\r\n0\r\n\r\n")
            response = conn.read_response()
            assert (response.status, response.body) == (200, b"ok")
            conn.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400, then close
            assert conn.read_response().status == 400
            assert conn.read_to_eof() == b""
