"""`ServerState`: what the server and its connection protocols share in one process.

It sits below both (docs/architecture.md, "What lives where"): the protocols (`asgiws.http`,
`asgiws.asgi.websocket`) add themselves and their app tasks to it, the server (`asgiws.server`)
reads it to shut down gracefully. Neither imports the other for it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Set, Tuple

# A connection closing after its last word (an HTTP error response; a WebSocket's Close, after a
# protocol violation or in the closing handshake) sends FIN after it, then reads and drops what
# its peer still sends, for this long at most: closing with bytes unread makes the kernel answer
# them with RST, which can destroy that last word before the peer reads it. (nginx's
# lingering_close.)
LINGER_TIMEOUT = 2.0


class ServerState:
    """Shared by the server and every connection protocol in one process."""

    def __init__(self) -> None:
        self.connections: Set[Any] = set()  # live protocol objects; each has .shutdown()
        self.tasks: Set[asyncio.Task[Any]] = set()  # app tasks, for graceful shutdown
        # HTTP requests answered, counted only with --limit-max-requests (the protocol adds one
        # per completed response).
        self.total_requests = 0
        # --limit-max-requests: called once, when the request that reaches the limit completes.
        self.request_limit: Optional[int] = None
        self.on_request_limit: Any = None
        # The Close (code, reason) every open WebSocket gets on shutdown: --ws-shutdown-close-code,
        # or 1012 "server restarting" when a supervisor restarts this process (Server.handle_exit).
        self.ws_shutdown_close: Tuple[int, str] = (1012, "server shutting down")
        # --metrics-port: an asgiws.metrics.Metrics the protocols record into, or None. Each
        # connection reads it once when it is made (no metrics: nothing recorded, nothing timed).
        self.metrics: Any = None
        # --workers: an asgiws.supervisors.balance.AcceptBalance told of each new connection (it
        # may pause this worker's accepting), or None.
        self.balance: Any = None
