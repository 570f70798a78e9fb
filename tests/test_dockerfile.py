"""The Dockerfile, built the way Docker would build it, on this machine (CI has no Docker engine).

The test reads the Dockerfile's RUN and CMD lines, checks they are the commands below, and runs
those commands here with the image's paths swapped for temporary ones: the build context is
copied as .dockerignore says, `pip wheel --no-deps -w DIST .` builds the wheel, `python -m venv`
and `VENV/bin/pip install --no-cache-dir DIST/*.whl` install it, and the CMD serves the demo
from that virtualenv (on 127.0.0.1, port 0, instead of 0.0.0.0:8000). The wheel must carry the
compiled codec and none of its sources. Needs the package index (the build requirements,
httptools, uvloop).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, STARTUP_LINE, TIMEOUT, ServerProcess

pytestmark = pytest.mark.slow
BUILD_TIMEOUT = 600  # compiling the codec, and fetching the build requirements


def instructions(dockerfile: Path) -> list:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = " ".join((pending + line).split())
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments))
    return result


def stages(dockerfile: Path) -> list:
    found: list = []
    for keyword, arguments in instructions(dockerfile):
        if keyword == "FROM":
            found.append([(keyword, arguments)])
        else:
            found[-1].append((keyword, arguments))
    return found


def run_lines(stage: list) -> list:
    return [arguments for keyword, arguments in stage if keyword == "RUN"]


def test_dockerfile_says_what_the_test_runs():
    build, runtime = stages(ROOT / "Dockerfile")
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert any("apt-get install" in line and "build-essential" in line for line in run_lines(build))
    assert ("COPY", ". .") in build
    assert run_lines(build)[-1] == "pip wheel --no-deps -w /dist ."

    assert runtime[0] == ("FROM", "python:3.11-slim")
    assert run_lines(runtime)[0] == "python -m venv /opt/asgiws"
    assert ("COPY", "--from=build /dist /dist") in runtime
    assert run_lines(runtime)[1] == "/opt/asgiws/bin/pip install --no-cache-dir /dist/*.whl && rm -rf /dist"
    assert not any("build-essential" in line or "gcc" in line for line in run_lines(runtime))  # no compiler
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("useradd ") and line.endswith(" " + users[-1]) for line in run_lines(runtime))
    assert ("EXPOSE", "8000") in runtime
    cmd = [arguments for keyword, arguments in runtime if keyword == "CMD"]
    assert json.loads(cmd[-1]) == ["asgiws", "asgiws.demo:app", "--host", "0.0.0.0", "--port", "8000"]
    env = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert "PATH=/opt/asgiws/bin:$PATH" in env


def copy_context(destination: Path) -> None:
    """COPY . . with .dockerignore applied (the patterns this repository uses: names, paths,
    `**/` prefixes and globs)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip

    def ignored(relative: str) -> bool:
        for pattern in patterns:
            if pattern.startswith("**/"):
                if fnmatch.fnmatch(os.path.basename(relative), pattern[3:]) or fnmatch.fnmatch(relative, pattern[3:]):
                    return True
            elif fnmatch.fnmatch(relative, pattern):
                return True
        return False

    for directory, subdirectories, files in os.walk(ROOT):
        relative_dir = os.path.relpath(directory, ROOT)
        subdirectories[:] = [d for d in subdirectories if not ignored(os.path.normpath(os.path.join(relative_dir, d)))]
        for name in files:
            relative = os.path.normpath(os.path.join(relative_dir, name))
            if not ignored(relative):
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target)


def run(command: list, cwd: Path = None) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """The Dockerfile's steps, here: build context, wheel, virtualenv with the wheel installed."""
    top = tmp_path_factory.mktemp("docker")
    src, dist, venv = top / "src", top / "dist", top / "opt-asgiws"
    src.mkdir()
    copy_context(src)
    assert not list(src.rglob("*.so")) and not (src / ".git").exists()
    # RUN pip wheel --no-deps -w /dist .
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), "."], cwd=src)
    wheels = glob.glob(str(dist / "*.whl"))
    assert len(wheels) == 1, wheels
    # RUN python -m venv /opt/asgiws
    run([sys.executable, "-m", "venv", str(venv)])
    # RUN /opt/asgiws/bin/pip install --no-cache-dir /dist/*.whl
    run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", *wheels])
    return {"wheel": Path(wheels[0]), "venv": venv, "top": top}


def test_wheel_has_the_compiled_codec_and_no_sources(image):
    names = zipfile.ZipFile(image["wheel"]).namelist()
    for module in ("asgiws/_codec.", "asgiws/asgi/_bridge.", "asgiws/http/cycle.", "asgiws/http/protocol."):
        assert [n for n in names if n.startswith(module) and n.endswith(".so")], names
    assert not [n for n in names if n.endswith((".pyx", ".c"))], names
    for expected in ("asgiws/__main__.py", "asgiws/workers.py", "asgiws/demo/index.html", "asgiws/_codec.pyi",
                     "asgiws/asgi/_bridge.pyi"):
        assert expected in names
    assert not [n for n in names if n.startswith("tests/")]


@pytest.mark.anyio
async def test_installed_wheel_serves_the_demo(image):
    from websockets.asyncio.client import connect

    venv, top = image["venv"], image["top"]
    # The image runs the installed package: no PYTHONPATH, and not from the source tree.
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import asgiws._codec, asgiws; print(asgiws.__file__)"],
                           capture_output=True, text=True, cwd=top, timeout=TIMEOUT, env={"PATH": os.environ["PATH"]})  # fmt: skip
    assert check.returncode == 0 and check.stdout.startswith(str(venv)), check

    # CMD ["asgiws", "asgiws.demo:app", "--host", "0.0.0.0", "--port", "8000"], on loopback here.
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(venv / "bin" / "asgiws"), "asgiws.demo:app", "--host", "127.0.0.1", "--port", "0"],
                            cwd=top, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    server = ServerProcess(proc, _lines(proc))
    try:
        match = server.wait_for_line(STARTUP_LINE.pattern)
        server.host, server.port = match.group(1), int(match.group(2))
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            page = await client.get(server.url + "/")
        assert page.status_code == 200 and "new WebSocket(" in page.text
        async with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=TIMEOUT) as ws:
            await ws.send("from the wheel")
            assert await ws.recv() == "from the wheel"
        proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lines(proc: subprocess.Popen):
    import queue
    import threading

    lines: "queue.Queue" = queue.Queue()

    def reader() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    return lines
