"""The frame codec the server runs, chosen once, at import: the C extension (`asgiws._codec`)
when it imports, else the pure-Python fallback (`asgiws._codec_py`, same interface and
behaviour, several times slower). `ASGIWS_NO_EXTENSIONS=1` picks the fallback on purpose.

Everything above the codec imports it from here, never `_codec` or `_codec_py` directly (the
tests do, to compare both with `_reference.py`). `FALLBACK_REASON` says why the fallback runs
(None when the extension does); `asgiws.asgi.bridge` makes the same choice for the bridge and
the server logs it at startup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional

from asgiws._extensions import NO_EXTENSIONS_ENV, extensions_disabled

FALLBACK_REASON: Optional[str] = None
if TYPE_CHECKING:
    # Type checkers see the compiled codec's interface (_codec.pyi), which both implement.
    from . import _codec as implementation
elif extensions_disabled():
    from . import _codec_py as implementation

    FALLBACK_REASON = f"{NO_EXTENSIONS_ENV}=1"
else:
    try:
        # Not `from . import _codec`: while asgiws/__init__ runs, its ImportError blames a
        # circular import instead of saying that the module is not there.
        implementation = importlib.import_module("asgiws._codec")
    except ImportError as exc:
        from . import _codec_py as implementation

        FALLBACK_REASON = f"asgiws._codec: {exc}"

COMPILED = FALLBACK_REASON is None

OP_CONTINUATION = implementation.OP_CONTINUATION
OP_TEXT = implementation.OP_TEXT
OP_BINARY = implementation.OP_BINARY
OP_CLOSE = implementation.OP_CLOSE
OP_PING = implementation.OP_PING
OP_PONG = implementation.OP_PONG
ProtocolError = implementation.ProtocolError
Frame = implementation.Frame
FrameParser = implementation.FrameParser
Utf8Validator = implementation.Utf8Validator
build_close_payload = implementation.build_close_payload
build_frame = implementation.build_frame
build_header = implementation.build_header
is_valid_close_code = implementation.is_valid_close_code
mask = implementation.mask
mask_impl = implementation.mask_impl
mask_inplace = implementation.mask_inplace
parse_close_payload = implementation.parse_close_payload
utf8_valid = implementation.utf8_valid
# An unmasked final frame, what a server sends (the extension's are cdef functions, for the
# compiled bridge; its build_* with their defaults are the same thing).
server_frame = getattr(implementation, "server_frame", implementation.build_frame)
server_header = getattr(implementation, "server_header", implementation.build_header)
