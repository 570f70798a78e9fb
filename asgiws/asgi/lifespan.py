"""The ASGI lifespan protocol (asgiref "lifespan" spec 2.0): startup and shutdown events.

The app runs once with a `lifespan` scope for the whole life of the server. Its `state` dict is the
namespace every request scope gets a shallow copy of, so what the app puts there at startup (a
database pool, a broker client) is visible to every request.

Modes (`--lifespan`):
    on    the app must support lifespan; any failure stops the server.
    auto  if the app raises (or returns) before answering `lifespan.startup`, it does not
          support lifespan: say so at info level and serve anyway. An explicit
          `lifespan.startup.failed` still stops the server.
    off   never call the app with a `lifespan` scope.

    IDLE ──startup sent──▶ STARTING ──startup.complete──▶ STARTED ──shutdown sent──▶ SHUTTING_DOWN
                              │                                                          │
                              ├─startup.failed──▶ FAILED          shutdown.complete ──▶ SHUT_DOWN
                              └─(auto) app raised / returned ──▶ UNSUPPORTED   shutdown.failed ──▶ FAILED
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, Callable, Dict, Optional

from . import UnexpectedMessage

logger = logging.getLogger("asgiws.error")


class LifespanPhase(enum.Enum):
    IDLE = "idle"  # nothing sent yet (and, with --lifespan off, never)
    STARTING = "starting"  # lifespan.startup sent; waiting for the app's answer
    STARTED = "started"  # lifespan.startup.complete received
    SHUTTING_DOWN = "shutting down"  # lifespan.shutdown sent
    SHUT_DOWN = "shut down"  # lifespan.shutdown.complete received
    FAILED = "failed"  # startup.failed / shutdown.failed received, or the app raised in `on` mode
    UNSUPPORTED = "unsupported"  # `auto` mode: the app did not take part; no more lifespan events


# (phase, message type the app sends) → next phase. Anything else is UnexpectedMessage.
TRANSITIONS = {
    (LifespanPhase.STARTING, "lifespan.startup.complete"): LifespanPhase.STARTED,
    (LifespanPhase.STARTING, "lifespan.startup.failed"): LifespanPhase.FAILED,
    (LifespanPhase.SHUTTING_DOWN, "lifespan.shutdown.complete"): LifespanPhase.SHUT_DOWN,
    (LifespanPhase.SHUTTING_DOWN, "lifespan.shutdown.failed"): LifespanPhase.FAILED,
}


class LifespanFailure(Exception):
    """Startup failed; the server must not serve. The message is one line."""


class Lifespan:
    def __init__(self, app: Callable[..., Any], mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        self.phase = LifespanPhase.IDLE
        self.state: Dict[str, Any] = {}  # the lifespan scope's "state"; requests get shallow copies
        self._receive_queue: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self._answered = asyncio.Event()  # set when the app answers, or its task ends
        self._task: Optional[asyncio.Task[None]] = None
        self._failure_message = ""

    async def startup(self) -> None:
        """Send `lifespan.startup` and wait for the answer. Raises LifespanFailure."""
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        self.phase = LifespanPhase.STARTING
        self._receive_queue.put_nowait({"type": "lifespan.startup"})
        # A hard reference to the task: the loop only keeps weak ones.
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._wait_for_answer()

        if self.phase is LifespanPhase.STARTED:
            logger.info("Application startup complete.")
        elif self.phase is LifespanPhase.UNSUPPORTED:
            logger.info("ASGI 'lifespan' protocol appears unsupported by the app; serving without it.")
        else:
            raise LifespanFailure(self._failure_message or "Application startup failed.")

    async def shutdown(self, timeout: Optional[float] = None) -> None:
        """Send `lifespan.shutdown` and wait for the answer (only after a completed startup), at
        most `timeout` seconds: past it the app's lifespan call is cancelled, so a hung cleanup
        cannot keep the process alive."""
        if self.phase is not LifespanPhase.STARTED or self._task is None or self._task.done():
            return  # never started, unsupported, failed, or the app already returned
        logger.info("Waiting for application shutdown.")
        self.phase = LifespanPhase.SHUTTING_DOWN
        self._answered.clear()
        self._receive_queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._wait_for_answer(), timeout)
        except asyncio.TimeoutError:
            logger.error("Application shutdown did not finish within %ss; cancelling it.", timeout)
            self.cancel()
            return
        if self.phase is LifespanPhase.SHUT_DOWN:
            logger.info("Application shutdown complete.")
        else:
            logger.error(self._failure_message or "Application shutdown failed.")

    async def _wait_for_answer(self) -> None:
        # The app answers by a message, or by ending (raising or returning) without one: `_run`
        # sets the event on its way out in every case.
        await self._answered.wait()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._app_ended(exc)
        else:
            self._app_ended(None)
        finally:
            self._answered.set()

    def _app_ended(self, exc: Optional[BaseException]) -> None:
        """The app's lifespan call ended; decide what that means in the current phase."""
        phase = self.phase
        if phase is LifespanPhase.STARTING:
            if self.mode == "auto":
                self.phase = LifespanPhase.UNSUPPORTED
                if exc is not None:
                    logger.debug("The app raised on the lifespan scope.", exc_info=exc)
                return
            self.phase = LifespanPhase.FAILED
            if exc is not None:
                logger.error("Exception in ASGI lifespan startup.", exc_info=exc)
                self._failure_message = f"Application startup failed: {type(exc).__name__}: {exc}"
            else:
                self._failure_message = "Application startup failed: the app returned without answering lifespan.startup."
        elif phase is LifespanPhase.SHUTTING_DOWN:
            self.phase = LifespanPhase.FAILED
            if exc is not None:
                logger.error("Exception in ASGI lifespan shutdown.", exc_info=exc)
            self._failure_message = "Application shutdown failed: the app ended without answering lifespan.shutdown."
        elif exc is not None and phase is LifespanPhase.STARTED:
            # Raised while serving (e.g. a background task inside the lifespan): no shutdown event.
            self.phase = LifespanPhase.FAILED
            logger.error("Exception in ASGI lifespan after startup.", exc_info=exc)
        elif exc is not None and not isinstance(exc, UnexpectedMessage):
            logger.error("Exception in ASGI lifespan.", exc_info=exc)

    async def _receive(self) -> Dict[str, Any]:
        return await self._receive_queue.get()

    async def _send(self, message: Dict[str, Any]) -> None:
        message_type = str(message.get("type"))
        try:
            self.phase = TRANSITIONS[(self.phase, message_type)]
        except KeyError:
            raise UnexpectedMessage(self.phase, message_type) from None
        if message_type in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            what = "startup" if message_type == "lifespan.startup.failed" else "shutdown"
            reason = message.get("message") or ""
            self._failure_message = f"Application {what} failed" + (f": {reason}" if reason else ".")
        self._answered.set()

    def cancel(self) -> None:
        """Forced exit: stop the app's lifespan call without a shutdown event."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
