"""`run()`: from settings to a serving process, as the `asgiws` command and `asgiws.run()` do it.

The top of the process layer (docs/architecture.md, "What lives where"): it builds the `Config`,
sets up logging, and starts one `Server`, the `--workers` supervisor or the `--reload` one. It
imports them; nothing below imports it. `asgiws.cli` parses the command line and calls it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict, List

from asgiws.asgi.app import AppImportError
from asgiws.config import UVICORN_WS, Config, ConfigError
from asgiws.logging import configure_logging
from asgiws.server import Server, StartupError, make_ssl_context
from asgiws.supervisors.multiprocess import Supervisor
from asgiws.supervisors.reload import ReloadSupervisor

logger = logging.getLogger("asgiws.error")

# uvicorn's and gunicorn's exit status when the server could not start.
STARTUP_FAILURE = 3


def run(app: Any, **settings: Any) -> None:
    """Serve `app` (an ASGI callable or "module:attribute") until SIGINT / SIGTERM.

    Takes the settings of `Config` as keyword arguments, and behaves like the `asgiws` command:
    logs to stderr, and exits with status 3 (one line on stderr) if the server cannot start.
    An invalid setting raises ConfigError.
    """
    config = _configure(app, settings)
    try:
        if config.reload:
            ReloadSupervisor(config).run()
        elif config.workers > 1:
            if Supervisor(config).run():
                sys.exit(STARTUP_FAILURE)  # a worker failed to boot
        else:
            Server(config).run()
    except (AppImportError, StartupError, ConfigError) as exc:
        _startup_failed(exc)
    except KeyboardInterrupt:  # Ctrl+C before the signal handlers were installed
        pass


def check(app: Any, **settings: Any) -> Config:
    """`asgiws --check`: everything `run()` does before it binds a socket — the settings, logging,
    importing the app (and calling its factory), the TLS files, the event loop — then return.

    Exits with status 3 as `run()` does when the app or the TLS files cannot be loaded; an
    invalid setting raises ConfigError.
    """
    config = _configure(app, settings)
    try:
        config.load()
        make_ssl_context(config)
        config.new_event_loop().close()
    except (AppImportError, StartupError, ConfigError) as exc:
        _startup_failed(exc)
    return config


def _configure(app: Any, settings: Dict[str, Any]) -> Config:
    """The settings checked, logging set up, and the notes on them logged: what run() and
    check() both do first."""
    config = Config(app=app, **settings)
    configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors,
                      config.log_format)
    for note in notes(config):
        logger.warning("%s", note)
    return config


def _startup_failed(exc: Exception) -> None:
    # A failure inside the user's module deserves its traceback; the rest is one line.
    cause = exc.__cause__ if isinstance(exc, AppImportError) else None
    logger.error("%s", exc, exc_info=cause)
    sys.exit(STARTUP_FAILURE)


def notes(config: Config) -> List[str]:
    """Startup warnings for settings asgiws takes with a meaning of its own (uvicorn's names)."""
    found = []
    given = [f"--{name.replace('_', '-')}" for name in ("reload_dir", "reload_include", "reload_exclude")
             if getattr(config, name) is not None]  # fmt: skip
    if given and not config.reload:
        found.append(f"{', '.join(given)}: no effect without --reload")
    if config.ws in UVICORN_WS:
        found.append(f"--ws {config.ws}: asgiws has its own WebSocket implementation and uses it "
                     "(--ws auto); uvicorn's choice of library does not apply.")  # fmt: skip
    return found
