"""The ASGI WebSocket app's state (asgiref www spec 2.5), shared by both implementations of the
bridge (`_bridge.pyx`, compiled, and `_bridge_py.py`); `websocket.py` moves it (`_transition`)."""

import enum


class AppState(enum.Enum):
    CONNECTING = "CONNECTING"  # websocket.connect delivered or pending; no answer yet
    DENIAL = "DENIAL"          # websocket.http.response.start sent; body streaming
    CONNECTED = "CONNECTED"    # accepted: 101 written
    CLOSED = "CLOSED"          # closed by the app, refused, or the connection is gone
