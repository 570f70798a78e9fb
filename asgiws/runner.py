"""`run()`: from settings to a serving process, as the `asgiws` command and `asgiws.run()` do it.

The top of the process layer (docs/architecture.md, "What lives where"): it builds the `Config`,
sets up logging, and starts either one `Server` or the `--workers` supervisor. It imports them;
nothing below imports it. `asgiws.cli` parses the command line and calls it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from asgiws.asgi.app import AppImportError
from asgiws.config import Config, ConfigError
from asgiws.logging import configure_logging
from asgiws.server import Server, StartupError
from asgiws.supervisors.multiprocess import Supervisor

logger = logging.getLogger("asgiws.error")


def run(app: Any, **settings: Any) -> None:
    """Serve `app` (an ASGI callable or "module:attribute") until SIGINT / SIGTERM.

    Takes the settings of `Config` as keyword arguments, and behaves like the `asgiws` command:
    logs to stderr, and exits with status 1 (one line on stderr) if the server cannot start.
    An invalid setting raises ConfigError.
    """
    config = Config(app=app, **settings)
    configure_logging(config.log_level, config.access_log, config.log_config)
    try:
        if config.workers > 1:
            status = Supervisor(config).run()
            if status:
                sys.exit(status)
        else:
            Server(config).run()
    except (AppImportError, StartupError, ConfigError) as exc:
        # A failure inside the user's module deserves its traceback; the rest is one line.
        cause = exc.__cause__ if isinstance(exc, AppImportError) else None
        logger.error("%s", exc, exc_info=cause)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl+C before the signal handlers were installed
        pass
