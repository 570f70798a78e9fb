"""Log setup for `asgiws` run from the CLI or `asgiws.run()`.

Two loggers, uvicorn's split:
    asgiws.error   server events and app errors → stderr (the startup line is here)
    asgiws.access  one line per HTTP request and one per WebSocket session, at its end → stdout,
                   only with --access-log

--log-format json makes both handlers write one JSON object per line (`JsonFormatter`): the
time, level, logger and message, and the record's named fields (the access records' client,
method, path, status, duration_ms, bytes, ws_close_code, ...: docs/observability.md). The
formatter is usable from a --log-config file too ("()": "asgiws.logging.JsonFormatter").

--log-config FILE replaces the handlers above with a `logging.config.dictConfig` dictionary
read from FILE (.json; .yaml / .yml with PyYAML installed), or with `logging.config.fileConfig`
for an .ini file (uvicorn takes all three). Levels the file gives the asgiws
loggers win; a logger it leaves without one gets --log-level. `disable_existing_loggers`
defaults to false, since the asgiws loggers exist before the file is read and would otherwise
go silent. --no-access-log silences asgiws.access either way.

Embedding `Server` in your own program leaves logging to you: nothing here runs unless called.
"""

from __future__ import annotations

import configparser
import datetime
import json
import logging
import logging.config
import os
import sys
from typing import Any, Dict, Optional

from asgiws.config import ConfigError

# uvicorn's TRACE, below DEBUG. asgiws logs nothing at it: trace shows what debug shows, and
# what an app or library logs at level 5.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

FORMAT = "%(levelname)s: %(message)s"

# ANSI colours for the level name, as uvicorn uses them.
LEVEL_COLOURS = {
    TRACE: "\x1b[34m", logging.DEBUG: "\x1b[36m", logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m", logging.CRITICAL: "\x1b[91m",
}  # fmt: skip


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # StreamHandler is generic only in typeshed; subscripting it fails at run time
    """Marks the handlers this module installed, so a second call replaces rather than doubles."""


class ColourFormatter(logging.Formatter):
    """FORMAT with the level name in colour (--use-colors)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        colour = LEVEL_COLOURS.get(record.levelno)
        if colour is None:
            return super().formatMessage(record)
        coloured = logging.makeLogRecord(record.__dict__)
        coloured.levelname = f"{colour}{record.levelname}\x1b[0m"
        return super().formatMessage(coloured)


# What every LogRecord has; anything else on a record came from `extra=` and is a named field.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: timestamp (ISO 8601, UTC, milliseconds), level,
    logger, message, the record's named fields (`extra=`), and the traceback, if any, as text.
    A value JSON cannot hold is written as its str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }  # fmt: skip
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(log_level: str = "info", access_log: bool = True, log_config: Optional[str] = None,
                      use_colors: Optional[bool] = None, log_format: str = "text") -> None:  # fmt: skip
    """Set up the asgiws loggers. Raises ConfigError when `log_config` cannot be used.

    `use_colors`: colour the level names of the default handlers; None: when the stream is a
    terminal. `log_format`: text, or json (`JsonFormatter`, never coloured). A --log-config file
    sets its own formatters.
    """
    level = LOG_LEVELS[log_level]
    error_logger = logging.getLogger("asgiws.error")
    access_logger = logging.getLogger("asgiws.access")

    for logger in (error_logger, access_logger):
        for handler in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(handler)

    if log_config is not None:
        is_ini = log_config.lower().endswith(".ini")
        dict_config = None if is_ini else read_log_config(log_config)
        if is_ini and not os.path.isfile(log_config):
            raise ConfigError(f"log_config: cannot read {log_config}: no such file")
        for logger in (error_logger, access_logger):
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
        try:
            if dict_config is not None:
                logging.config.dictConfig(dict_config)
            else:
                logging.config.fileConfig(log_config, disable_existing_loggers=False)
        except (ValueError, TypeError, AttributeError, ImportError, KeyError, RuntimeError,
                configparser.Error) as exc:  # fmt: skip
            raise ConfigError(f"log_config: {log_config}: {type(exc).__name__}: {exc}") from None
        for logger in (error_logger, access_logger):
            if logger.level == logging.NOTSET:
                logger.setLevel(level)
    else:
        for logger, stream in ((error_logger, sys.stderr), (access_logger, sys.stdout)):
            handler = _Handler(stream)
            colours = use_colors if use_colors is not None else _is_terminal(stream)
            if log_format == "json":
                handler.setFormatter(JsonFormatter())
            else:
                handler.setFormatter(ColourFormatter(FORMAT) if colours else logging.Formatter(FORMAT))
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False

    if not access_log:
        # Above CRITICAL: the protocols check `isEnabledFor(INFO)` once per connection and skip
        # building the line at all.
        access_logger.setLevel(logging.CRITICAL + 1)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def read_log_config(path: str) -> Dict[str, Any]:
    """The dictConfig dictionary in `path` (.json, or .yaml / .yml with PyYAML). Raises ConfigError."""
    lowered = path.lower()
    if not lowered.endswith((".json", ".yaml", ".yml")):
        raise ConfigError(f"log_config: expected a .json, .yaml, .yml or .ini file, got {path}")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"log_config: cannot read {path}: {exc.strerror or exc}") from None
    if lowered.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"log_config: {path} is not valid JSON: {exc}") from None
    else:
        try:
            import yaml  # type: ignore[import-untyped]  # PyYAML is optional; its stubs are a separate package
        except ImportError:
            raise ConfigError(
                f"log_config: {path} is YAML, which needs PyYAML (pip install PyYAML); or give a .json file"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"log_config: {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"log_config: {path} must hold a mapping (a logging.dictConfig dictionary)")
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    return data
