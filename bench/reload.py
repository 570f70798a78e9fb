"""How long `asgiws --reload` takes from saving a file to the first response with the new code.

    python bench/reload.py                 # with watchfiles (the `reload` extra), 10 edits
    python bench/reload.py --polling       # watchfiles hidden: the polling fallback
    python bench/reload.py --edits 20 --delay 0.25

Starts `asgiws app:app --reload` on a tiny app in a temporary directory, then, once a second,
saves a new version of it (written beside it and renamed over it, as editors do) and asks for
GET / on a new connection every 10 ms until the new version answers. Prints, per edit, the time
to the new response and the time until the reloader logged the change, then the median and the
range. docs/processes.md quotes its figures.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

APP = '''VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": VERSION.encode()}})
'''


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polling", action="store_true", help="hide watchfiles: measure the polling fallback")
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.25, help="--reload-delay")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()

        def save(version: str) -> None:
            partial = project / ".app.py.partial"
            partial.write_text(APP.format(version=version))
            partial.replace(project / "app.py")

        save("v0")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
        if args.polling:  # a watchfiles package that fails to import, first on the path
            hidden = Path(tmp) / "hidden" / "watchfiles"
            hidden.mkdir(parents=True)
            (hidden / "__init__.py").write_text("raise ImportError('hidden by bench/reload.py')\n")
            env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), env["PYTHONPATH"]])
        command = [sys.executable, "-m", "asgiws", "app:app", "--reload", "--reload-dir", str(project),
                   "--app-dir", str(project), "--port", "0", "--lifespan", "off", "--no-access-log",
                   "--reload-delay", str(args.delay)]  # fmt: skip
        server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        lines: "queue.Queue[tuple]" = queue.Queue()

        def read() -> None:
            assert server.stderr is not None
            for line in server.stderr:
                lines.put((time.monotonic(), line))

        threading.Thread(target=read, daemon=True).start()
        try:
            port = None
            while port is None:
                _, line = lines.get(timeout=30)
                sys.stderr.write(line)
                match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
                port = int(match.group(1)) if match else None
            served, seen = [], []
            for edit in range(1, args.edits + 1):
                time.sleep(1.0)
                version = f"v{edit}".encode()
                saved = time.monotonic()
                save(version.decode())
                while get(port) != version:
                    assert time.monotonic() - saved < 30, "no reload within 30 s"
                    time.sleep(0.01)
                served.append(time.monotonic() - saved)
                detected = None
                while not lines.empty():
                    at, line = lines.get()
                    if detected is None and "Detected changes" in line:
                        detected = at - saved
                seen.append(detected)
                print(f"edit {edit}: served after {served[-1]:.2f}s"
                      + (f", change seen after {detected:.2f}s" if detected is not None else ""))  # fmt: skip
            mode = "polling" if args.polling else "watchfiles"
            print(f"{mode}, --reload-delay {args.delay}: save to new response median {statistics.median(served):.2f}s "
                  f"(min {min(served):.2f}, max {max(served):.2f}) over {len(served)} edits; change seen: median "
                  f"{statistics.median([s for s in seen if s is not None]):.2f}s")  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
