"""The WebSocket bridge base class the server runs, chosen once, at import: the compiled
`_bridge` when the codec is compiled too (it is built on the codec's C API), else the
pure-Python `_bridge_py` (which works over either codec). See `asgiws.codec` for the choice of
codec and `ASGIWS_NO_EXTENSIONS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .. import codec

_BRIDGE_MISSING: Optional[str] = None
if TYPE_CHECKING:
    # Type checkers see the compiled bridge's interface (_bridge.pyi), which both implement.
    from ._bridge import FINISHED, WebSocketBridge, coalescer_for_loop
elif codec.COMPILED:
    try:
        from ._bridge import FINISHED, WebSocketBridge, coalescer_for_loop
    except ImportError as exc:
        from ._bridge_py import FINISHED, WebSocketBridge, coalescer_for_loop

        _BRIDGE_MISSING = f"asgiws.asgi._bridge: {exc}"
else:
    from ._bridge_py import FINISHED, WebSocketBridge, coalescer_for_loop

COMPILED = codec.COMPILED and _BRIDGE_MISSING is None


def fallback_warning() -> Optional[str]:
    """The line the server logs at startup when any of the WebSocket data path runs in pure
    Python, naming why and the cost; None when it is all compiled."""
    if COMPILED:
        return None
    reason = codec.FALLBACK_REASON or _BRIDGE_MISSING
    what = "codec" if not codec.COMPILED else "bridge"
    return (f"asgiws: C extensions not available ({reason}); using the pure-Python WebSocket "
            f"{what}, several times slower")


__all__ = ["COMPILED", "FINISHED", "WebSocketBridge", "coalescer_for_loop", "fallback_warning"]
