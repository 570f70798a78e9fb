"""asgiws: an ASGI server for apps that live on WebSockets.

    asgiws myapp:app                    # the command
    asgiws.run("myapp:app", port=8080)  # the same, from Python
"""

from asgiws.config import Config
from asgiws.runner import run
from asgiws.server import Server

__version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__", "run"]
