"""The demo in a real browser: headless Chromium loads `asgiws asgiws.demo:app`, its WebSocket
connects with Chromium's own permessage-deflate offer, and a typed message comes back echoed.

Chromium is driven over the DevTools protocol with the `websockets` client. Skips where Debian's
`chromium` is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websockets
from conftest import stop_process_group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")


def start_chromium(profile: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def remove_profile(profile: Path) -> None:
    """A helper killed a moment ago may still finish a write that recreates a file: retry,
    bounded, until the directory is gone."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            shutil.rmtree(profile)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    """Chromium writes the port it picked into DevToolsActivePort."""
    deadline = time.monotonic() + TIMEOUT
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chromium exited with {proc.returncode}")
        if port_file.exists():
            text = port_file.read_text().split()
            if text:
                return int(text[0])
        time.sleep(0.05)
    pytest.fail("chromium did not open its DevTools port")


class DevTools:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(reply["error"])
                return reply["result"]

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"])
        return result["result"].get("value")


async def drive(page_url: str, devtools_url: str):
    async with websockets.connect(devtools_url, max_size=None) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        await devtools.call("Page.navigate", url=page_url)
        # Wait for the page's WebSocket to open, then type a message and wait for its echo.
        return await devtools.evaluate(
            """
            new Promise((resolve, reject) => {
              const deadline = Date.now() + 15000;
              const $ = (id) => document.getElementById(id);
              let sent = false;
              (function poll() {
                const ext = $("extensions") && $("extensions").textContent;
                if (!sent && $("send") && !$("send").disabled) {
                  $("text").value = "hello from chromium";
                  $("form").requestSubmit();
                  sent = true;
                }
                const log = $("log") ? $("log").textContent : "";
                if (sent && log.split("hello from chromium").length > 2) {
                  resolve({extensions: ext, log: log});
                } else if (Date.now() > deadline) {
                  reject(new Error("no echo; log: " + log + " ext: " + ext));
                } else {
                  setTimeout(poll, 50);
                }
              })();
            })
            """
        )


def test_demo_echo_in_chromium(spawn_server):
    with spawn_server("asgiws.demo:app") as server:
        with urllib.request.urlopen(server.url + "/", timeout=TIMEOUT) as response:
            assert response.status == 200
            assert b"WebSocket" in response.read()
        profile = Path(tempfile.mkdtemp(prefix="asgiws-chromium-"))
        chromium = start_chromium(profile)
        try:
            port = devtools_port(profile, chromium)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            result = asyncio.run(drive(server.url + "/", targets[0]["webSocketDebuggerUrl"]))
        finally:
            stop_process_group(chromium)  # its helpers write into the profile too
            remove_profile(profile)
        # Chromium offers permessage-deflate (with client_max_window_bits); we accepted it.
        assert "permessage-deflate" in result["extensions"]
        assert "hello from chromium" in result["log"]
