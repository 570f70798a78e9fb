"""Signals for a supervisor's select() loop: one path for all of them.

The handlers do nothing; `signal.set_wakeup_fd` writes each signal's number to a pipe, which
wakes the supervisor's select(), and the numbers are read from there in the main loop — never
inside a handler, where most of the supervisor's work (forking, logging) is unsafe.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Iterable, List, Tuple


class SignalPipe:
    def __init__(self, signals: Iterable[int]) -> None:
        self.signals: Tuple[int, ...] = tuple(signals)
        self.fd = -1  # the read end: select() on it
        self._write_fd = -1

    def install(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self.fd, False)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in self.signals:
            signal.signal(sig, _ignore)

    def remove(self) -> None:
        if self.fd < 0:
            return
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        self.close()

    def close(self) -> None:
        """Close the pipe without touching the handlers: in a forked child, which resets its own."""
        for fd in (self.fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._write_fd = -1

    def received(self) -> List[int]:
        """The signals that arrived since the last call, in order (none if none)."""
        try:
            return list(os.read(self.fd, 512))
        except BlockingIOError:
            return []


def _ignore(signum: int, frame: Any) -> None:
    pass
