"""Whether the compiled extensions are wanted. `ASGIWS_NO_EXTENSIONS=1` asks for the pure-Python
code everywhere: the WebSocket codec and bridge fall back to their twins (`asgiws.codec`,
`asgiws.asgi.bridge`), and the HTTP connection and request cycle load from their `.py` rather
than the modules compiled from it (`asgiws.http`). Read at import, so it is an environment
variable only."""

from __future__ import annotations

import os

NO_EXTENSIONS_ENV = "ASGIWS_NO_EXTENSIONS"


def extensions_disabled() -> bool:
    """ASGIWS_NO_EXTENSIONS is set to anything but "" or "0"."""
    return os.environ.get(NO_EXTENSIONS_ENV, "").strip() not in ("", "0")
