"""Every module imports on a platform without AF_UNIX, SIGHUP or fork (as on Windows).

Those names are used only where a Unix socket or the worker supervisor is actually started, never
at import time. Simulated by deleting them before importing asgiws, in a fresh interpreter.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import importlib, os, pkgutil, signal, socket, sys
sys.path.insert(0, {root!r})
for module, names in ((socket, ["AF_UNIX"]), (os, ["fork"]),
                      (signal, ["SIGHUP", "SIGCHLD", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU"])):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
import asgiws
failed = []
for info in pkgutil.walk_packages(asgiws.__path__, "asgiws."):
    if info.name == "asgiws.workers":
        continue  # gunicorn itself runs only on Unix
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{{info.name}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_without_unix_only_names():
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
