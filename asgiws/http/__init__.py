"""HTTP/1.1 on httptools: `protocol.HttpProtocol` parses requests on a connection, serves the ASGI
`http` scope (one `cycle.RequestCycle` per request) and hands WebSocket upgrades over to the
WebSocket layer.

`protocol.py` and `cycle.py` are also compiled, each from its own source with the `.pxd` beside
it (setup.py), and the import system prefers the compiled module to a `.py` of the same name.
With ASGIWS_NO_EXTENSIONS=1 (`asgiws._extensions`) they are loaded from their `.py` instead, as
the WebSocket codec and bridge fall back to their twins: the whole test suite can run on the
pure-Python path."""

from __future__ import annotations

import importlib.util
import os
import sys

from asgiws._extensions import extensions_disabled

# cycle first: protocol imports it.
SOURCE_MODULES = ("cycle", "protocol")


def _load_from_source() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for name in SOURCE_MODULES:
        full_name = f"{__name__}.{name}"
        spec = importlib.util.spec_from_file_location(full_name, os.path.join(here, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[full_name] = module
        spec.loader.exec_module(module)
        globals()[name] = module


if extensions_disabled():
    _load_from_source()
