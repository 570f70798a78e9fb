"""The ASGI side of the server: app loading, lifespan, and the errors apps can see.

Kept import-light (no httptools, no C codec): the HTTP protocol and the CLI import from here.
"""

from __future__ import annotations

from typing import Any


class ClientDisconnected(OSError):
    """`send()` was called after the connection closed (ASGI www spec 2.4).

    Apps may catch it to clean up. The server raised it, so the server does not log it as an error
    when it propagates out of the app.
    """


class UnexpectedMessage(RuntimeError):
    """The app sent a message its connection's state does not allow, e.g. `http.response.body`
    before `http.response.start`. Names the state and the message type."""

    def __init__(self, state: Any, message_type: Any) -> None:
        state_name = getattr(state, "name", state)
        super().__init__(f"Unexpected ASGI message {message_type!r} in state {state_name}.")
        self.state = state
        self.message_type = message_type


def thrown_exception(typ: Any, val: Any = None, tb: Any = None) -> BaseException:
    """The exception a coroutine's `throw(typ[, val[, tb]])` raises: for the server's own
    coroutine objects (what `send()` and `receive()` return), which must answer throw() as a
    native coroutine does."""
    exc: BaseException = typ if val is None else val
    if isinstance(exc, type):
        exc = exc()
    if tb is not None:
        exc = exc.with_traceback(tb)
    return exc


__all__ = ["ClientDisconnected", "UnexpectedMessage", "thrown_exception"]
