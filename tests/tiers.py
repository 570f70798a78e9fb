"""Which test files form the core tier: the tests run against an installed wheel on every
supported Python other than CI's main one (.ci/core_tier.sh), and against each wheel
cibuildwheel builds (tests/packaging/installed.py).

The core tier is what differs from one Python version or one build to another: the codec (the
C extensions, compiled for that Python), the sans-I/O WebSocket core, and HTTP and WebSocket
served over real sockets. It leaves out what needs a system tool (nginx, Chromium, Docker,
Redis, Autobahn's Python 2.7), floods and fuzzing (stress), reload and the process layer, and
what reads the source tree rather than the installed package. About 3 minutes on one core.

Every tests/test_*.py is named in exactly one of CORE and NOT_CORE (tests/test_packaging.py
checks it), so a new test file is classified on purpose.
"""

CORE = {
    # the frame codec: C extensions against the pure-Python reference
    "test_codec_mask.py": "codec",
    "test_codec_parser.py": "codec",
    "test_codec_utf8.py": "codec",
    # the WebSocket core, driven by bytes
    "test_websocket_connection.py": "sans-I/O",
    "test_websocket_deflate.py": "sans-I/O",
    "test_websocket_handshake.py": "sans-I/O",
    # HTTP over real sockets
    "test_http.py": "HTTP",
    "test_http_framing.py": "HTTP",
    "test_limits.py": "HTTP",
    "test_backpressure.py": "HTTP",
    "test_lifespan.py": "HTTP",
    "test_http_extensions.py": "HTTP",
    # WebSocket over real sockets
    "test_websocket.py": "WebSocket",
    "test_websocket_hostile.py": "WebSocket",
    "test_websocket_frameworks.py": "WebSocket",
    "test_websocket_fallback.py": "WebSocket",
    "test_keepalive.py": "WebSocket",
    # a platform without AF_UNIX, fork or uvloop: serves HTTP and WebSocket on asyncio
    "test_imports_portable.py": "WebSocket",
}

NOT_CORE = {
    "test_autobahn.py": "Autobahn|Testsuite needs its Python 2.7 virtualenv; runs on the main Python",
    "test_demo_browser.py": "Chromium",
    "test_dockerfile.py": "Docker",
    "test_nginx.py": "nginx",
    "test_proxy.py": "nginx",
    "test_origin.py": "nginx and Chromium for its browser half",
    "test_stress.py": "stress: floods",
    "test_live_fuzz.py": "stress: the live-server fuzzer",
    "test_http_hostile.py": "floods of pipelined requests and tiny chunks (half a minute on one core)",
    "test_uvicorn_flags.py": "reload and the process layer",
    "test_workers.py": "reload and the --workers supervisor",
    "test_gunicorn.py": "the process layer under gunicorn",
    "test_shutdown.py": "signals and the process layer",
    "test_listen.py": "sockets and inherited fds: the process layer",
    "test_tls.py": "the ssl module's, not the wheel's, behaviour",
    "test_logging.py": "the process layer",
    "test_cli.py": "the command line: the same code on every Python",
    "test_config_docs.py": "reads docs/ in the source tree",
    "test_imports.py": "reads the source tree with ast",
    "test_packaging.py": "builds an sdist from the source tree",
    "test_typing.py": "runs mypy on the source tree",
    "test_docs_recipes.py": "runs the commands of docs/ from the source tree",
    "test_kubernetes.py": "reads docs/deployment.md from the source tree",
    "test_metrics.py": "the metrics extra and the --workers supervisor",
    "test_redis_fanout.py": "redis-server and nginx",
    "test_reload.py": "reload",
    "test_openloop.py": "bench/ tooling in the source tree (the open-loop load generator)",
    "test_bench_baseline.py": "bench/ tooling in the source tree (the regression baseline's diff)",
    "test_bench_ceilings.py": "bench/ tooling in the source tree (the store-and-forward floor)",
    "test_http_fallback.py": "which files of the source tree the HTTP modules load from (compiled or .py)",
}
