"""asgiws as a gunicorn worker class: `gunicorn -k asgiws.workers.AsgiwsWorker app:application`.

gunicorn's arbiter binds the sockets, forks the workers, replaces them and takes the signals sent
to it; each worker runs an asgiws `Server` on the sockets gunicorn bound, on its own event loop.
This module imports gunicorn, so nothing else in asgiws imports it: `asgiws` and `asgiws.run()`
never load gunicorn. (The `--workers N` supervisor is `asgiws.supervisors.multiprocess`.)

gunicorn setting                 asgiws setting
keepalive                        timeout_keep_alive
graceful_timeout                 timeout_graceful_shutdown, 1 s less: gunicorn kills the worker
                                 at graceful_timeout, and cancelling what is left and lifespan
                                 shutdown need that moment
limit_request_fields             limit_max_headers (0, gunicorn's "unlimited", keeps asgiws' default)
max_requests (+ jitter)          limit_max_requests
backlog                          backlog
certfile, keyfile, ca_certs,     TLS, through gunicorn's own `ssl_context()` (so its cert_reqs,
cert_reqs, ciphers, ssl_context  ciphers and ssl_context hook apply)
errorlog, accesslog, loglevel    the asgiws.error and asgiws.access loggers write to gunicorn's
                                 handlers; no --access-logfile, no access log

Every other asgiws setting keeps its default. Signals from the arbiter: SIGTERM → graceful
shutdown; SIGQUIT or SIGINT → quick shutdown (cancel what runs, no waiting); SIGUSR1 → reopen the
log files. The arbiter's heartbeat (`notify()`) is sent from the event loop, so a worker whose
loop is blocked is restarted by the arbiter after gunicorn's --timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any, Dict

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from asgiws.asgi.app import AppImportError
from asgiws.config import Config
from asgiws.server import Server, StartupError, run_event_loop


class AsgiwsWorker(Worker):
    """A gunicorn worker that serves the ASGI app with asgiws."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server: Any = None

    def _config(self) -> Config:
        cfg = self.cfg
        for name, gunicorn_logger in (("asgiws.error", self.log.error_log), ("asgiws.access", self.log.access_log)):
            logger = logging.getLogger(name)
            logger.handlers = list(gunicorn_logger.handlers)
            logger.setLevel(gunicorn_logger.level)
            logger.propagate = False
        settings: Dict[str, Any] = {
            "app": self.wsgi,  # gunicorn imported it ("app:application"); for us it is ASGI
            "timeout_keep_alive": cfg.keepalive,
            "timeout_graceful_shutdown": max(0.0, cfg.graceful_timeout - 1.0),
            "access_log": bool(self.log.access_log.handlers),
            "limit_max_requests": self.max_requests if cfg.max_requests > 0 else None,
        }
        if cfg.limit_request_fields > 0:
            settings["limit_max_headers"] = cfg.limit_request_fields
        if cfg.backlog > 0:
            settings["backlog"] = cfg.backlog
        return Config(**settings)

    def init_signals(self) -> None:
        # gunicorn's handlers stop a synchronous loop; ours go on the event loop in run().
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)

    def run(self) -> None:
        config = self._config()
        ssl_context = None
        if self.cfg.is_ssl:
            from gunicorn.sock import ssl_context as gunicorn_ssl_context

            ssl_context = gunicorn_ssl_context(self.cfg)
        self.server = Server(config, sockets=[listener.sock for listener in self.sockets], ssl_context=ssl_context)
        try:
            run_event_loop(config.new_event_loop(), self._serve())
        except (AppImportError, StartupError) as exc:
            self.log.error("%s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the arbiter stops rather than retry forever

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.server.handle_exit)
        loop.add_signal_handler(signal.SIGQUIT, self._quit)
        loop.add_signal_handler(signal.SIGINT, self._quit)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await self.server.startup()
            await self.server.main_loop()
            await self.server.shutdown()
        finally:
            heartbeat.cancel()

    def _quit(self) -> None:
        """Quick shutdown: the first call begins shutting down, the second stops the waiting."""
        self.server.handle_exit()
        self.server.handle_exit()

    async def _heartbeat(self) -> None:
        # `self.timeout` is already half of gunicorn's --timeout: the arbiter's own margin.
        interval = max(0.5, min(self.timeout, 5.0)) if self.timeout else 5.0
        while True:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.server.handle_exit()
                return
            await asyncio.sleep(interval)
