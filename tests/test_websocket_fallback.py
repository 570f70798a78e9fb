"""The pure-Python WebSocket data path (asgiws/_codec_py.py, asgiws/asgi/_bridge_py.py) as a
server runs it: chosen at import by ASGIWS_NO_EXTENSIONS=1 (or a missing extension), announced
at startup, serving. Its behaviour is tested by the whole WebSocket suite run under
ASGIWS_NO_EXTENSIONS=1, and its codec against _reference.py in test_codec_parser.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from conftest import ROOT

ECHO_APP = "tests.apps.echo:app"
WARNING = ("asgiws: C extensions not available (ASGIWS_NO_EXTENSIONS=1); using the pure-Python "
           "WebSocket codec, several times slower")


def test_no_extensions_server_warns_and_serves_a_handshake_and_echo(spawn_server):
    with spawn_server(ECHO_APP, env={"ASGIWS_NO_EXTENSIONS": "1"}) as proc:
        with connect(f"ws://{proc.host}:{proc.port}/", max_size=None, compression=None) as ws:
            ws.send("héllo, wörld")
            assert ws.recv(timeout=10) == "héllo, wörld"
            large = os.urandom(200_000)  # fragmented by nobody, parsed over many reads
            ws.send(large)
            assert ws.recv(timeout=10) == large
            ws.send(["frag", "mented ", "😀"])  # a fragmented text message, assembled
            assert ws.recv(timeout=10) == "fragmented 😀"
        with connect(f"ws://{proc.host}:{proc.port}/") as ws:  # permessage-deflate
            ws.send("compressed " * 100)
            assert ws.recv(timeout=10) == "compressed " * 100
    assert proc.text.count(WARNING) == 1, proc.text
    assert "not a setting" not in proc.text


def test_the_extensions_run_when_built(spawn_server):
    pytest.importorskip("asgiws._codec", reason="the extensions are not built")
    pytest.importorskip("asgiws.asgi._bridge", reason="the extensions are not built")
    with spawn_server(ECHO_APP, env={"ASGIWS_NO_EXTENSIONS": "0"}) as proc:
        with connect(f"ws://{proc.host}:{proc.port}/") as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
    assert "C extensions not available" not in proc.text


@pytest.mark.parametrize("value, compiled", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_selection_at_import(value, compiled):
    """What ASGIWS_NO_EXTENSIONS selects, in a fresh interpreter (the choice is made once, at
    import)."""
    if compiled:
        pytest.importorskip("asgiws.asgi._bridge", reason="the extensions are not built")
    code = ("from asgiws import codec; from asgiws.asgi import bridge, websocket\n"
            "print(codec.FrameParser.__module__, websocket.WebSocketProtocol.__mro__[1].__module__,"
            " bridge.fallback_warning())")
    env = dict(os.environ, ASGIWS_NO_EXTENSIONS=value, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split(" ", 2)
    if compiled:
        assert out == ["asgiws._codec", "asgiws.asgi._bridge", "None\n"]
    else:
        assert out[:2] == ["asgiws._codec_py", "asgiws.asgi._bridge_py"]
        assert out[2].startswith("asgiws: C extensions not available (ASGIWS_NO_EXTENSIONS=1)")
