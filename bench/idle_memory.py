"""Idle WebSocket connection: where each byte of server memory goes.

    python bench/idle_memory.py                       # 2000 idle connections to asgiws
    python bench/idle_memory.py --conns 5000 --repeats 3
    ASGIWS_BASE_DIR=/work/main python bench/idle_memory.py --base   # before/after, one run

An asgiws server (the same command line as bench/run.py's, pinned to core 0) serves
bench/apps.py's echo app. A client process pinned to core 1 (bench/loadgen.py's picows client)
opens 50 connections and closes them (so lazy imports and first-use allocations are done), then
opens --conns WebSocket connections that the app accepts and that stay idle: no message, deflate
off. The server is measured twice, in two separate runs of it:

1. RSS: resident memory of the server before and after the connections open, per connection:
   the total, what bench/run.py's idle_mem scenario reports. tracemalloc is off.
2. Accounting: tracemalloc is started in the server once the warm-up connections are gone; with
   the connections open, the bytes it traces per connection, and the objects the connections
   made, each counted once under the first owner it is reachable from (sys.getsizeof, walking
   gc.get_referents from each connection's parts in this order):
       scope: headers / extensions / state / the rest of the scope; codec: FrameParser, then the
       sans-I/O Connection; the app's Task and everything reachable from it only (its coroutine
       frames: _run_asgi → the app → `await receive()`, the future it waits on, the bound
       receive/send methods, the Context); the transport; the protocol object and what only it
       holds; the keepalive slot sets;
   plus the growth of containers that existed before (ServerState's sets, asyncio's WeakSet of
   tasks, the Keepalive's slot dict, …) and new objects no owner reaches (grouped by type).
   What tracemalloc traces but no Python object accounts for is C memory allocated through
   Python's allocators (libuv's uv_tcp_t, which uvloop allocates with PyMem_RawMalloc). What RSS
   has beyond the traced bytes was never traced: glibc and pymalloc overhead (size classes,
   chunk headers, partly used pools), libuv's own malloc (its watcher array). Kernel socket
   buffers are not in RSS at all.

The server process runs this file with --serve: a thread that waits for the parent's commands
(files in a directory named by ASGIWS_IDLE_CTL), then asgiws's own command line. The thread
only takes the GIL while measuring, between loop iterations of a server that has nothing to do.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers as srv  # noqa: E402
from loadgen import proc_tree, rss_bytes  # noqa: E402

WARM_CONNS = 50
SETTLE_S = 1.5
TRACE_DEPTH = 1  # frames per traced block: the allocating line is what the site table shows
CTL_ENV = "ASGIWS_IDLE_CTL"


# ----------------------------------------------------------------------------- in the server


def _new_objects_by_owner(protocols, base_ids: set) -> tuple[dict, set]:
    """{owner: {"bytes", "objects", "types": {type: bytes}}} over all connections, and the ids
    of every object claimed. An object is counted once, under the first owner it is reachable
    from; objects that existed before the connections (the baseline) and the protocols
    themselves (outside their own row) stop the walk."""
    claimed: set = set()
    protocol_ids = {id(p) for p in protocols}
    owners: dict = {}

    def walk(owner: str, roots, allow=()) -> None:
        row = owners.setdefault(owner, {"bytes": 0, "objects": 0, "types": {}})
        todo = list(roots)
        while todo:
            obj = todo.pop()
            i = id(obj)
            if i in claimed or i in base_ids or (i in protocol_ids and i not in allow):
                continue
            claimed.add(i)
            size = sys.getsizeof(obj)
            name = type(obj).__name__
            row["bytes"] += size
            row["objects"] += 1
            row["types"][name] = row["types"].get(name, 0) + size
            todo.extend(gc.get_referents(obj))

    for p in protocols:
        scope = p.scope
        walk("scope: headers list", [scope.get("headers")])
        walk("scope: extensions dicts", [scope.get("extensions")])
        walk("scope: state dict", [scope.get("state")])
        walk("scope: the dict and its other values", [scope])
        conn = p.conn
        walk("codec: FrameParser", [conn.parser])
        walk("codec: Connection (sans-I/O)", [conn])
        walk("app: Task, coroutine frames, future, bound methods", [p.app_task])
        walk("transport: uvloop TCPTransport", [p.transport])
        walk("protocol object (+ what only it holds)", [p], allow=(id(p),))
    return owners, claimed


class _Server:
    """The measuring side, run by the control thread in the server process."""

    def __init__(self) -> None:
        self.base_objects: list = []
        self.base_ids: set = set()
        self.base_sizes: dict = {}
        self.rss0 = 0
        self.traced0 = 0

    def base(self, args: dict) -> dict:
        gc.collect()
        self.base_objects = gc.get_objects()
        self.base_ids = {id(o) for o in self.base_objects}
        self.base_sizes = {id(o): sys.getsizeof(o) for o in self.base_objects
                           if isinstance(o, (dict, set, list))}
        # The tool's own containers are not the connections'.
        self.base_ids.update((id(self.base_objects), id(self.base_ids), id(self.base_sizes)))
        self.rss0 = rss_bytes([os.getpid()])
        if args.get("trace"):
            import tracemalloc
            tracemalloc.start(TRACE_DEPTH)  # last: the baseline's own memory is not traced
        return {"rss": self.rss0, "objects": len(self.base_objects)}

    def measure(self, args: dict) -> dict:
        gc.collect()
        out: dict = {"rss": rss_bytes([os.getpid()])}
        if args.get("trace"):
            import tracemalloc
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            snapshot = snapshot.filter_traces([tracemalloc.Filter(False, __file__),
                                               tracemalloc.Filter(False, tracemalloc.__file__)])
            stats = snapshot.statistics("lineno")
            out["traced"] = sum(s.size for s in stats)
            out["sites"] = [[f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                             s.size, s.count] for s in stats[:15]]
            del snapshot, stats  # not to be counted as new objects below
            out.update(self._objects())
        return out

    def _objects(self) -> dict:
        from asgiws.asgi import keepalive as keepalive_module
        from asgiws.asgi.websocket import WebSocketProtocol

        objects = gc.get_objects()
        protocols = [o for o in objects if type(o) is WebSocketProtocol
                     and o.status == 101 and o.transport is not None
                     and not o.transport.is_closing()]
        owners, claimed = _new_objects_by_owner(protocols, self.base_ids)
        claimed.update((id(objects), id(protocols), id(claimed)))
        # Keepalive: the sets of its slots (new objects), its slot dict's growth below.
        slot_sets = [s for per_loop in keepalive_module._keepalives.values()
                     for k in per_loop.values() for s in k.slots.values()]
        row = owners.setdefault("keepalive: slot sets", {"bytes": 0, "objects": 0, "types": {}})
        for s in slot_sets:
            if id(s) not in self.base_ids and id(s) not in claimed:
                claimed.add(id(s))
                row["bytes"] += sys.getsizeof(s)
                row["objects"] += 1
        # Containers that existed before and grew: one slot (or more) per connection.
        names = _container_names()
        grown = []
        for o in self.base_objects:
            before = self.base_sizes.get(id(o))
            if before is None or id(o) == id(self.base_ids):
                continue
            after = sys.getsizeof(o)
            if after - before >= 1024:
                name = names.get(id(o)) or _holder(o, self.base_objects)
                grown.append([name, after - before])
        grown.sort(key=lambda g: -g[1])
        # New objects no owner reached, by type.
        leftover: dict = {}
        for o in objects:
            i = id(o)
            if i in claimed or i in self.base_ids or o is objects:
                continue
            name = type(o).__name__
            entry = leftover.setdefault(name, [0, 0])
            entry[0] += sys.getsizeof(o)
            entry[1] += 1
        del objects
        return {"connections": len(protocols), "owners": owners, "grown": grown,
                "leftover": leftover, "sizes": _static_sizes()}


def _short(filename: str) -> str:
    for marker in ("/asgiws/", "/bench/", "/asyncio/", "/site-packages/"):
        if marker in filename:
            return filename[filename.index(marker) + 1:]
    return os.path.basename(filename)


def _holder(container, base_objects: list) -> str:
    """"<type> of <len> in <its holder's type>.<attribute>" for a container that grew."""
    text = f"{type(container).__name__} of {len(container)}"
    for ref in gc.get_referrers(container):
        if ref is base_objects or type(ref).__name__ == "frame":
            continue
        if isinstance(ref, dict):  # an instance's __dict__: name its owner
            for owner in gc.get_referrers(ref):
                if getattr(owner, "__dict__", None) is ref:
                    attr = next((k for k, v in ref.items() if v is container), "?")
                    return f"{text} in {type(owner).__module__}.{type(owner).__qualname__}.{attr}"
        else:
            return f"{text} in a {type(ref).__module__}.{type(ref).__qualname__}"
    return text


def _container_names() -> dict:
    """Names for the containers a connection adds itself to."""
    names = {}
    for o in gc.get_objects():
        if type(o).__name__ == "ServerState":
            names[id(o.connections)] = "ServerState.connections (set)"
            names[id(o.tasks)] = "ServerState.tasks (set)"
    all_tasks = getattr(asyncio.tasks, "_all_tasks", None)
    if all_tasks is not None and hasattr(all_tasks, "data"):
        names[id(all_tasks.data)] = "asyncio's WeakSet of all tasks (its set)"
    for o in gc.get_objects():
        if isinstance(o, weakref.WeakValueDictionary) and \
                any(type(v).__name__ == "TCPTransport" for v in o.values()):
            names[id(o.data)] = "uvloop Loop._transports (WeakValueDictionary fd → transport)"
    from asgiws.asgi import keepalive as keepalive_module
    for per_loop in keepalive_module._keepalives.values():
        for k in per_loop.values():
            names[id(k.slots)] = "Keepalive.slots (dict)"
    return names


def _static_sizes() -> dict:
    """Sizes of things no walk sees, for the write-up."""
    sizes: dict = {}
    try:  # libuv is linked into uvloop's extension; uv_handle_size(UV_TCP) is its uv_tcp_t
        import ctypes
        import uvloop.loop
        lib = ctypes.CDLL(uvloop.loop.__file__)
        lib.uv_handle_size.restype = ctypes.c_size_t
        sizes["uv_tcp_t"] = lib.uv_handle_size(12)  # UV_TCP in uv.h's uv_handle_type
    except (OSError, AttributeError, ImportError):
        sizes["uv_tcp_t"] = None
    return sizes


def _control(ctl_dir: str) -> None:
    server = _Server()
    for step in ("base", "measure"):
        command = os.path.join(ctl_dir, step + ".cmd")
        while not os.path.exists(command):
            time.sleep(0.05)
        with open(command) as f:
            args = json.load(f)
        try:
            result = getattr(server, step)(args)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as data
            import traceback
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        _write_json(os.path.join(ctl_dir, step + ".json"), result)


def _write_json(path: str, data: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def serve(argv: list) -> None:
    threading.Thread(target=_control, args=(os.environ[CTL_ENV],), daemon=True).start()
    from asgiws.cli import main
    main(argv)


# ------------------------------------------------------------------------------- the client


async def _client(url: str, conns: int) -> None:
    from loadgen import Stats, connect_all, make_listeners

    spec = {"size": 0}
    Idle = make_listeners(Stats(), spec)[3]
    warm, _ = await connect_all([lambda *_: Idle() for _ in range(WARM_CONNS)], url, spec)
    await asyncio.sleep(0.3)
    for transport, _ in warm:
        transport.disconnect()
    await asyncio.sleep(1.0)
    print("warm", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    connected, errors = await connect_all([lambda *_: Idle() for _ in range(conns)], url, spec)
    await asyncio.sleep(SETTLE_S)
    alive = sum(1 for transport, _ in connected if not transport.is_disconnected)
    print(json.dumps({"alive": alive, "errors": sorted(set(errors))[:3]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for transport, _ in connected:
        transport.disconnect(graceful=False)


# ------------------------------------------------------------------------------- the parent


def _server(base: bool) -> srv.Server:
    script = os.path.abspath(__file__)

    def argv(app, port, backlog):
        asgiws_argv = srv._asgiws(app, port, backlog)  # [python, -m, asgiws, ...]
        return [srv.PYTHON, script, "--serve"] + asgiws_argv[3:]

    return srv.Server("asgiws-base" if base else "asgiws", "asgiws", "asgi", argv,
                      repo=srv.base_dir if base else None)


def _wait_file(path: str, running: srv.Running, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if not running.alive():
            raise SystemExit(f"server exited: {running.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {os.path.basename(path)} after {timeout:.0f}s")
        time.sleep(0.05)
    with open(path) as f:
        result = json.load(f)
    if "error" in result:
        raise SystemExit(f"server: {result['error']}\n{result.get('traceback', '')}")
    return result


def one_run(base: bool, conns: int, trace: bool, logdir: str) -> dict:
    ctl = tempfile.mkdtemp(prefix="ctl-", dir=logdir)
    os.environ[CTL_ENV] = ctl
    server = _server(base)
    running = srv.Running(server, "echo", 4096, os.path.join(ctl, "server.log"))
    client = None
    try:
        error = running.wait_ready()
        if error:
            raise SystemExit(f"{server.name}: {error}")
        client = subprocess.Popen(
            ["taskset", "-c", srv.CLIENT_CORE, srv.PYTHON, os.path.abspath(__file__), "--client",
             running.url("/"), str(conns)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if client.stdout.readline().strip() != "warm":
            raise SystemExit("client failed during warm-up")
        _write_json(os.path.join(ctl, "base.cmd"), {"trace": trace})
        before = _wait_file(os.path.join(ctl, "base.json"), running)
        tree_rss0 = rss_bytes(proc_tree(running.pid))
        client.stdin.write("open\n")
        client.stdin.flush()
        opened = json.loads(client.stdout.readline())
        tree_rss1 = rss_bytes(proc_tree(running.pid))
        _write_json(os.path.join(ctl, "measure.cmd"), {"trace": trace})
        after = _wait_file(os.path.join(ctl, "measure.json"), running)
        client.stdin.write("close\n")
        client.stdin.flush()
        client.wait(timeout=60)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        running.stop()
    n = after.get("connections") or opened["alive"]
    result = {"alive": opened["alive"], "n": n, "errors": opened["errors"],
              "rss_per_conn": (tree_rss1 - tree_rss0) / opened["alive"],
              "rss_before_mib": before["rss"] / 2**20}
    if trace:
        result.update(after)
        result["traced_per_conn"] = after["traced"] / n
    return result


def report(name: str, rss_runs: list, acct: dict) -> list:
    """Markdown lines: bytes per connection by owner."""
    n = acct["n"]
    rss = statistics.median(r["rss_per_conn"] for r in rss_runs)
    lines = [f"#### {name}: {n} idle connections; RSS {rss / 1024:.2f} KiB/conn "
             f"(median of {len(rss_runs)}: " + ", ".join(f"{r['rss_per_conn']:.0f}" for r in rss_runs)
             + " B)", "", "| owner | B/conn | objects/conn | by type (B/conn) |", "|---|---:|---:|---|"]
    walked = 0.0
    for owner, row in acct["owners"].items():
        walked += row["bytes"] / n
        types = ", ".join(f"{t} {b / n:.0f}" for t, b in
                          sorted(row["types"].items(), key=lambda kv: -kv[1]) if b / n >= 1)
        lines.append(f"| {owner} | {row['bytes'] / n:.0f} | {row['objects'] / n:.2f} | {types} |")
    for what, grew in acct["grown"]:
        if grew / n >= 1:
            walked += grew / n
            lines.append(f"| growth of {what} | {grew / n:.0f} | | |")
    other = sorted(acct["leftover"].items(), key=lambda kv: -kv[1][0])
    left = sum(b for b, _ in acct["leftover"].values()) / n
    walked += left
    lines.append(f"| new objects no owner reaches | {left:.0f} | "
                 f"{sum(c for _, c in acct['leftover'].values()) / n:.2f} | "
                 + ", ".join(f"{t} {b / n:.0f}" for t, (b, c) in other if b / n >= 1) + " |")
    traced = acct["traced_per_conn"]
    lines.append(f"| **Python objects, total** | **{walked:.0f}** | | |")
    lines.append(f"| traced, not a Python object (C memory through Python's allocators: "
                 f"uv_tcp_t = {acct['sizes'].get('uv_tcp_t')} B, …) | {traced - walked:.0f} | | |")
    lines.append(f"| **tracemalloc, total traced** | **{traced:.0f}** | | |")
    lines.append(f"| not traced: RSS − traced (malloc/pymalloc overhead, libuv's malloc) "
                 f"| {rss - traced:.0f} | | |")
    lines.append(f"| **RSS delta** | **{rss:.0f}** | | |")
    lines.append("")
    lines.append("tracemalloc, top allocation sites (B/conn, blocks/conn):")
    lines.append("")
    for site, size, count in acct["sites"][:10]:
        if size / n >= 4:
            lines.append(f"    {site:55s} {size / n:7.0f} {count / n:6.2f}")
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        import uvloop
        uvloop.run(_client(sys.argv[2], int(sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000, help="idle connections [2000]")
    p.add_argument("--repeats", type=int, default=1, help="RSS runs per server (median) [1]")
    p.add_argument("--base", action="store_true",
                   help="also measure the checkout in ASGIWS_BASE_DIR, first")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args()
    logdir = tempfile.mkdtemp(prefix="idle-memory-")
    results = {}
    for base in ([True, False] if args.base else [False]):
        name = "asgiws (base: " + srv.base_dir() + ")" if base else "asgiws (this checkout)"
        rss_runs = [one_run(base, args.conns, False, logdir) for _ in range(args.repeats)]
        acct = one_run(base, args.conns, True, logdir)
        results[name] = {"rss": rss_runs, "accounting": acct}
        print("\n".join(report(name, rss_runs, acct)), flush=True)
        print(flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
