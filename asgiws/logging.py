"""Log setup for `asgiws` run from the CLI or `asgiws.run()`.

Two loggers, uvicorn's split:
    asgiws.error   server events and app errors → stderr (the startup line is here)
    asgiws.access  one line per HTTP request → stdout, only with --access-log

Embedding `Server` in your own program leaves logging to you: nothing here runs unless called.
"""

from __future__ import annotations

import logging
import sys

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

FORMAT = "%(levelname)s: %(message)s"


class _Handler(logging.StreamHandler):
    """Marks the handlers this module installed, so a second call replaces rather than doubles."""


def configure_logging(log_level: str = "info", access_log: bool = True) -> None:
    level = LOG_LEVELS[log_level]
    error_logger = logging.getLogger("asgiws.error")
    access_logger = logging.getLogger("asgiws.access")

    for logger, stream in ((error_logger, sys.stderr), (access_logger, sys.stdout)):
        for handler in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(handler)
        handler = _Handler(stream)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False

    if not access_log:
        # Above CRITICAL: the protocols check `isEnabledFor(INFO)` once per connection and skip
        # building the line at all.
        access_logger.setLevel(logging.CRITICAL + 1)
