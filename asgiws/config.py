"""Every asgiws setting, in one table.

`Config` is a dataclass; each field is declared with `setting(...)`, which records its default,
one line of what it is for, how it parses from text, and which `--help` group it belongs to. From
that one table the rest is derived:

- the command-line flag: `port` → `--port`, `ws_max_size` → `--ws-max-size`; a bool gets
  `--name` / `--no-name`; a list (`ListParser`) takes commas, and its flag may be repeated;
- the environment variable: `port` → `ASGIWS_PORT`;
- `docs/settings.md`, which `tests/test_config_docs.py` checks against `SETTINGS`.

This module imports nothing heavier than the standard library: the CLI builds its parser from it
before anything else (httptools, uvloop, the C codec) is loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from asgiws.headers import ResponseFields  # standard library only, like this module
from asgiws.websocket.origin import OriginPolicy, origin_policy  # standard library only, like this module

ASGIApp = Callable[..., Any]


class ConfigError(ValueError):
    """A setting has a value it cannot take. The message names the setting, and is one line."""


# ---------------------------------------------------------------------------------------------
# Value parsers: text (a flag or an environment variable) → value, with range checks.
# A parser is also used to check values given from Python (`Config(port=-1)`).
# ---------------------------------------------------------------------------------------------

LOOP_CHOICES = ("auto", "uvloop", "asyncio", "none")

BOOL_WORDS = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip


class ValueParser:
    """Parses one kind of setting value from text and checks a value's range.

    `kind` is what `--help` and docs/settings.md show as the value's type (e.g. `seconds|none`).
    """

    def __init__(
        self,
        kind: str,
        convert: Callable[[str], Any],
        check: Callable[[Any], Optional[str]] = lambda value: None,
        nullable: bool = False,
        refused: Optional[Dict[Any, str]] = None,
    ) -> None:
        self.kind = kind
        self._convert = convert
        self._check = check
        self.nullable = nullable  # `none` (any case) and None are accepted and mean "disabled"
        # Values another server (uvicorn) takes and asgiws does not, each with the one-line reason
        # that names what to use instead.
        self.refused = refused or {}

    def __call__(self, text: str) -> Any:
        text = text.strip()
        if self.nullable and text.lower() == "none":
            return None
        try:
            value = self._convert(text)
        except ValueError:
            raise ValueError(f"expected {self.describe()}, got {text!r}") from None
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if value is None and self.nullable:
            return
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value in self.refused:
            raise ValueError(f"{value!r} is not available: {self.refused[value]}")
        problem = self._check(value)
        if problem is not None:
            raise ValueError(f"expected {problem}, got {value!r}")

    @property
    def metavar(self) -> str:
        """The value's type as --help and docs/settings.md show it, e.g. `seconds|none`."""
        return self.kind + ("|none" if self.nullable else "")

    def describe(self) -> str:
        return {
            "int": "an integer",
            "seconds": "a number of seconds",
            "bytes": "a number of bytes",
            "bool": "true or false",
            "octal": "permissions in octal (e.g. 660)",
        }.get(self.kind.split("|")[0], self.kind) + (" or none" if self.nullable else "")


def _to_bool(text: str) -> bool:
    try:
        return BOOL_WORDS[text.lower()]
    except KeyError:
        raise ValueError(text) from None


def _is(types: Any, problem: str, ok: Callable[[Any], bool]) -> Callable[[Any], Optional[str]]:
    """A range check: `problem` (what was expected) unless the value has one of `types` and is `ok`."""

    def check(value: Any) -> Optional[str]:
        # bool is an int subclass, but `port=True` is a mistake, not port 1.
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            return problem
        return None if isinstance(value, types) and ok(value) else problem

    return check


text_value = ValueParser("text", str, _is(str, "text", lambda v: True))
path_or_none = ValueParser("path", str, _is(str, "a path", bool), nullable=True)
text_or_none = ValueParser("text", str, _is(str, "text", bool), nullable=True)
# File permissions as chmod takes them: 660, 0660 and 0o660 are all 0o660.
octal_value = ValueParser("octal", lambda text: int(text, 8),
                          _is(int, "permissions in octal, 0o000-0o777", lambda v: 0 <= v <= 0o777))  # fmt: skip
bool_value = ValueParser("bool", _to_bool, _is(bool, "true or false", lambda v: True))
bool_or_none = ValueParser("bool", _to_bool, _is(bool, "true or false", lambda v: True), nullable=True)
port_value = ValueParser("int", int, _is(int, "a port number 0-65535", lambda v: 0 <= v <= 65535))
fd_or_none = ValueParser("int", int, _is(int, "a file descriptor >= 0", lambda v: v >= 0), nullable=True)
count_value = ValueParser("int", int, _is(int, "an integer >= 1", lambda v: v >= 1))
count_or_zero = ValueParser("int", int, _is(int, "an integer >= 0", lambda v: v >= 0))
count_or_zero_or_none = ValueParser("int", int, _is(int, "an integer >= 0", lambda v: v >= 0), nullable=True)
count_or_none = ValueParser("int", int, _is(int, "an integer >= 1", lambda v: v >= 1), nullable=True)
bytes_value = ValueParser("bytes", int, _is(int, "a number of bytes >= 1", lambda v: v >= 1))
seconds_value = ValueParser(
    "seconds", float, _is((int, float), "a number of seconds >= 0", lambda v: v >= 0)
)
positive_seconds = ValueParser(
    "seconds", float, _is((int, float), "a number of seconds > 0", lambda v: v > 0)
)
seconds_or_none = ValueParser(
    "seconds", float, _is((int, float), "a number of seconds > 0", lambda v: v > 0), nullable=True
)
# RFC 6455 §7.4: codes an endpoint may send. 1004-1006 and 1015 are reserved / never on the wire.
close_code_value = ValueParser(
    "int",
    int,
    _is(int, "a close code 1000-4999 other than 1004, 1005, 1006, 1015",
        lambda v: 1000 <= v <= 4999 and v not in (1004, 1005, 1006, 1015)),
)  # fmt: skip


def _root_path_check(value: Any) -> Optional[str]:
    if not isinstance(value, str) or (value and not value.startswith("/")) or value.endswith("/"):
        return 'empty, or a path starting with "/" and not ending with "/"'
    return None


root_path_value = ValueParser("text", str, _root_path_check)


def _trusted_peers_check(value: Any) -> Optional[str]:
    from asgiws.http.proxy import parse_trusted  # standard library only, like this module

    try:
        parse_trusted(value)
    except (ValueError, AttributeError):
        return 'IP addresses, CIDR networks, "*" or "unix:", separated by commas'
    return None


trusted_peers_value = ValueParser("text", str, _trusted_peers_check)


class ListParser(ValueParser):
    """A comma-separated list → a tuple of its entries; `check` judges the whole list (a list or
    tuple from Python). Its flag may be repeated, and the entries add up."""

    def __init__(self, kind: str, check: Callable[[Any], Optional[str]], nullable: bool = False,
                 separator: str = ",") -> None:  # fmt: skip
        super().__init__(kind, lambda text: tuple(e.strip() for e in text.split(separator) if e.strip()),
                         check, nullable)  # fmt: skip


def _origins_check(value: Any) -> Optional[str]:
    expected = "origins (https://app.example.com, https://*.example.com, same-host or *) separated by commas"
    if not isinstance(value, (list, tuple)) or not all(isinstance(entry, str) for entry in value):
        return expected
    try:
        OriginPolicy(value)
    except ValueError as exc:
        return f"{expected}; {exc}"
    return None


origins_value = ListParser("origins", _origins_check, nullable=True)


def _headers_check(value: Any) -> Optional[str]:
    expected = "NAME:VALUE (a header field name, a colon, its value)"
    if not isinstance(value, (list, tuple)):
        return expected
    for entry in value:
        if not isinstance(entry, str):
            return expected
        name, colon, field_value = entry.partition(":")
        if not colon or not _TOKEN.fullmatch(name.strip()) or "\r" in entry or "\n" in entry:
            return expected
        try:
            field_value.strip().encode("latin-1")
        except UnicodeEncodeError:
            return expected + " in Latin-1"
    return None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2: a field name is a token
# One header per --header flag (its value may hold commas); one per line in ASGIWS_HEADER.
headers_value = ListParser("name:value", _headers_check, nullable=True, separator="\n")


def _texts_check(expected: str) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        if isinstance(value, (list, tuple)) and all(isinstance(entry, str) and entry for entry in value):
            return None
        return expected

    return check


# One directory or glob pattern per flag, as uvicorn takes them (a path may hold a comma); one
# per line in the environment variable.
reload_dirs_value = ListParser("path", _texts_check("directories"), nullable=True, separator="\n")
reload_patterns_value = ListParser("glob", _texts_check("glob patterns (e.g. *.html)"), nullable=True, separator="\n")
def _names_check(value: Any) -> Optional[str]:
    expected = "names separated by commas"
    if not isinstance(value, (list, tuple)) or not all(isinstance(entry, str) and entry for entry in value):
        return expected
    return None


names_value = ListParser("names", _names_check, nullable=True)
port_or_none = ValueParser("int", int, _is(int, "a port number 0-65535", lambda v: 0 <= v <= 65535), nullable=True)


def _loop_check(value: Any) -> Optional[str]:
    if isinstance(value, str) and (value in LOOP_CHOICES or (":" in value and all(value.partition(":")[::2]))):
        return None
    return "auto, uvloop, asyncio, none, or the import path of a function that returns a new loop (module:function)"


loop_value = ValueParser(
    "|".join(LOOP_CHOICES) + "|module:function", lambda text: text if ":" in text else text.lower(), _loop_check,
    refused={"zuvloop": "asgiws does not support zuvloop; use auto, uvloop, asyncio or an import path"},
)  # fmt: skip

# The ssl module's protocol numbers (uvicorn's --ssl-version takes them). asgiws' context is
# ssl.create_default_context (TLS 1.2 or later, negotiated); 5 pins it to TLS 1.2 alone.
SSL_VERSIONS = {2: "TLS (negotiated)", 17: "TLS (negotiated)", 5: "TLS 1.2 only"}
ssl_version_value = ValueParser(
    "int", int, _is(int, "2 or 17 (TLS 1.2 or later, negotiated) or 5 (TLS 1.2 only)", lambda v: v in SSL_VERSIONS),
    refused={3: "TLS 1.0 is insecure and asgiws serves TLS 1.2 or later (--ssl-version 17, the default)",
             4: "TLS 1.1 is insecure and asgiws serves TLS 1.2 or later (--ssl-version 17, the default)",
             16: "that is ssl.PROTOCOL_TLS_CLIENT, a client's protocol; a server uses 17 (the default)"},
)  # fmt: skip
# ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED.
cert_reqs_value = ValueParser(
    "int", int, _is(int, "0 (no client certificate), 1 (optional) or 2 (required)", lambda v: v in (0, 1, 2)),
    nullable=True,
)  # fmt: skip


def choice(*choices: str, refused: Optional[Dict[Any, str]] = None) -> ValueParser:
    def check(value: Any) -> Optional[str]:
        return None if value in choices else "one of " + ", ".join(choices)

    return ValueParser("|".join(choices), lambda text: text.lower(), check, refused=refused)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, as the CLI and the docs see it."""

    name: str
    default: Any
    help: str
    parse: ValueParser
    group: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "ASGIWS_" + self.name.upper()

    @property
    def is_bool(self) -> bool:
        return self.parse.kind == "bool"

    @property
    def is_list(self) -> bool:
        return isinstance(self.parse, ListParser)

    @property
    def default_text(self) -> str:
        """The default as a user would type it: `none`, `true`, `""`, `127.0.0.1`, `16777216`."""
        return self.text(self.default)

    def text(self, value: Any) -> str:
        """A value of this setting as a user would type it (a list: as JSON)."""
        if isinstance(value, (list, tuple)):
            return json.dumps(list(value))
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.parse is octal_value:
            return oct(value)
        if value == "":
            return '""'
        return str(value)


def setting(default: Any, help: str, parse: ValueParser, group: str) -> Any:
    return dataclasses.field(
        default=default, metadata={"asgiws": {"help": help, "parse": parse, "group": group}}
    )


LISTEN, APP, LIMITS, WS, LOGGING, HEADERS, RELOAD, METRICS = (
    "Listening", "Application", "Limits and timeouts", "WebSocket", "Logging", "Response headers", "Reload",
    "Metrics",
)  # fmt: skip
LOG_FORMAT_CHOICES = ("text", "json")

LIFESPAN_CHOICES = ("auto", "on", "off")
LOG_LEVEL_CHOICES = ("critical", "error", "warning", "info", "debug", "trace")
# uvicorn's names for its WebSocket implementations: asgiws has one of its own, used for all of them.
UVICORN_WS = ("websockets", "websockets-sansio", "wsproto")
# How many bytes of --ws-read-high-water one message of uvicorn's --ws-max-queue stands for: its
# default, 32 messages, is asgiws' default bound, 1 MiB.
WS_QUEUE_ITEM_BYTES = 32 * 1024


@dataclass
class Config:
    """Everything the server needs to know, with defaults that are safe to run in production."""

    # The app itself is positional on the command line (`asgiws module:attribute`).
    app: Union[str, ASGIApp, None] = setting(
        None, "The ASGI application, as module:attribute (e.g. myapp:app), or an ASGI callable from Python.",
        text_value, APP)  # fmt: skip

    host: str = setting(
        "127.0.0.1", 'Address to bind; "0.0.0.0" for every IPv4 interface, "::" for IPv6. Local-only by default.',
        text_value, LISTEN)  # fmt: skip
    port: int = setting(8000, "TCP port to bind; 0 picks a free port (the startup line shows which).",
                        port_value, LISTEN)
    uds: Optional[str] = setting(
        None, "Listen on this Unix domain socket path instead of host/port (a stale socket file is removed).",
        path_or_none, LISTEN)  # fmt: skip
    fd: Optional[int] = setting(
        None, "Serve on an already-listening socket inherited as this file descriptor (e.g. systemd).",
        fd_or_none, LISTEN)  # fmt: skip
    backlog: int = setting(2048, "Queue length for connections not yet accepted (listen(2) backlog).",
                           count_value, LISTEN)

    loop: str = setting(
        "auto", "Event loop: auto uses uvloop when it is installed, else asyncio (none, uvicorn's word, is asyncio too); or module:function, a function that returns a new event loop.",
        loop_value, APP)  # fmt: skip
    lifespan: str = setting(
        "auto", "ASGI lifespan events: auto runs them if the app supports them, on requires them, off skips them.",
        choice(*LIFESPAN_CHOICES), APP)  # fmt: skip
    factory: bool = setting(False, "Treat APP as a factory: call it with no arguments to get the ASGI app.",
                            bool_value, APP)
    app_dir: str = setting(".", "Directory put first on sys.path before importing APP.", text_value, APP)
    root_path: str = setting(
        "", 'Path prefix the app is mounted under behind a proxy (ASGI "root_path"), e.g. /api.',
        root_path_value, APP)  # fmt: skip
    interface: str = setting(
        "auto", "How to call APP: auto tells ASGI 3 from ASGI 2 by its signature; asgi3 or asgi2 say it outright.",
        choice("auto", "asgi3", "asgi2", refused={
            "wsgi": "asgiws serves ASGI apps only; wrap a WSGI app in a2wsgi's WSGIMiddleware (pip install a2wsgi)"}),
        APP)  # fmt: skip
    http: str = setting(
        "auto", "HTTP/1.1 parser: httptools, the only one asgiws has (auto is httptools too; uvicorn's h11 is refused).",
        choice("auto", "httptools", refused={
            "h11": "asgiws parses HTTP/1.1 with httptools only (as strict as h11, and faster); use auto or httptools",
            "zttp": "asgiws parses HTTP/1.1 with httptools only; use auto or httptools"}),
        APP)  # fmt: skip
    reset_contextvars: bool = setting(
        False, "Run each HTTP request and WebSocket session in a fresh contextvars.Context, so no context variable set elsewhere (lifespan, instrumentation) reaches the app.",
        bool_value, APP)  # fmt: skip
    env_file: Optional[str] = setting(
        None, "Load environment variables from this .env file before importing APP (needs python-dotenv: pip install 'asgiws[dotenv]'); they do not set asgiws' own settings.",
        path_or_none, APP)  # fmt: skip

    timeout_keep_alive: float = setting(
        5, "Close an idle keep-alive connection after this many seconds without a new request.",
        seconds_value, LIMITS)  # fmt: skip
    timeout_header: float = setting(
        10.0, "Close a connection whose request head is not complete this many seconds after it began (slowloris).",
        positive_seconds, LIMITS)  # fmt: skip
    limit_max_head: int = setting(
        65536, "Largest request head (request line + headers) in bytes; larger gets HTTP 431.",
        bytes_value, LIMITS)  # fmt: skip
    limit_max_headers: int = setting(100, "Most header fields in a request; more gets HTTP 431.",
                                     count_value, LIMITS)
    limit_concurrency: Optional[int] = setting(
        None, "Answer HTTP 503 once this many connections or app tasks are live (none: no limit).",
        count_or_none, LIMITS)  # fmt: skip
    timeout_graceful_shutdown: float = setting(
        30.0, "On shutdown, wait this long for connections and app tasks to finish before cancelling them.",
        seconds_value, LIMITS)  # fmt: skip
    timeout_lifespan_shutdown: float = setting(
        10.0, "On shutdown, wait this long for the app to answer lifespan.shutdown before cancelling its lifespan call.",
        seconds_value, LIMITS)  # fmt: skip

    ws: str = setting(
        "auto", "WebSocket support: auto (asgiws' own implementation) or none (HTTP only: an upgrade request is served as plain HTTP). uvicorn's websockets, websockets-sansio and wsproto are taken as auto.",
        choice("auto", "none", *UVICORN_WS), WS)  # fmt: skip
    ws_max_size: int = setting(
        16 * 1024 * 1024, "Largest WebSocket message in bytes (after decompression); larger closes with 1009.",
        bytes_value, WS)  # fmt: skip
    ws_ping_interval: Optional[float] = setting(
        20.0, "Send a WebSocket Ping every this many seconds, to find dead peers and keep proxies open (none: never).",
        seconds_or_none, WS)  # fmt: skip
    ws_ping_timeout: Optional[float] = setting(
        20.0, "Drop a WebSocket connection whose Pong does not arrive within this many seconds (none: wait forever).",
        seconds_or_none, WS)  # fmt: skip
    ws_per_message_deflate: bool = setting(
        True, "Offer permessage-deflate compression (RFC 7692) to WebSocket clients that ask for it.",
        bool_value, WS)  # fmt: skip
    ws_close_timeout: float = setting(
        10.0, "After sending a Close, drop the TCP connection if the peer's Close has not come within this many seconds.",
        positive_seconds, WS)  # fmt: skip
    ws_accept_timeout: float = setting(
        10.0, "Fail the WebSocket handshake if the app has not accepted or closed within this many seconds.",
        positive_seconds, WS)  # fmt: skip
    ws_allowed_origins: Optional[Tuple[str, ...]] = setting(
        None, "Pages that may open a WebSocket, by Origin; others get HTTP 403 (cross-site WebSocket hijacking): https://app.example.com, https://*.example.com, same-host, or * for any. Comma-separated; the flag can be repeated (none: no check).",
        origins_value, WS)  # fmt: skip
    ws_require_origin: bool = setting(
        False, "Refuse (HTTP 403) a WebSocket handshake without an Origin header, i.e. from a client that is not a browser.",
        bool_value, WS)  # fmt: skip
    ws_shutdown_close_code: int = setting(
        1012, "Close code sent to every WebSocket on server shutdown (1012: service restart, clients reconnect).",
        close_code_value, WS)  # fmt: skip
    ws_high_water: int = setting(
        65536, "WebSocket write buffer high-water mark in bytes: await send() waits while more than this is unsent.",
        bytes_value, WS)  # fmt: skip
    ws_read_high_water: int = setting(
        1048576, "Pause reading a WebSocket once this many received bytes wait for the app (each message counted with its overhead); resume below a quarter.",
        bytes_value, WS)  # fmt: skip
    ws_max_queue: Optional[int] = setting(
        None, "uvicorn's bound on received messages waiting for the app; asgiws bounds them in bytes, so N sets ws_read_high_water to N x 32 KiB (uvicorn's 32 is asgiws' 1 MiB) unless that is set too (none: ws_read_high_water alone).",
        count_or_none, WS)  # fmt: skip
    ws_frame_overhead: int = setting(
        64, "Bytes every received data frame counts toward ws_max_size besides its payload, so a message in many tiny or empty fragments hits the limit (1009) like a large one.",
        count_or_zero, WS)  # fmt: skip
    early_hints: bool = setting(
        False, "Let the app send 103 Early Hints (the ASGI http.response.early_hint extension) to HTTP/1.1 clients. Off by default: nginx before 1.29 mishandles a 103 from upstream, so keep it off behind an older proxy.",
        bool_value, APP)  # fmt: skip
    timeout_write_stall: Optional[float] = setting(
        60.0, "Drop a connection whose peer reads nothing for this many seconds while the server has bytes waiting for it (the app sees a disconnect; none: never).",
        seconds_or_none, LIMITS)  # fmt: skip

    log_level: str = setting("info", "Log level of the asgiws loggers.", choice(*LOG_LEVEL_CHOICES), LOGGING)
    access_log: bool = setting(True, 'Log one line per HTTP request and one per WebSocket session to the "asgiws.access" logger.',
                               bool_value, LOGGING)
    use_colors: Optional[bool] = setting(
        None, "Colour the level names in the default log format (none: when the log goes to a terminal).",
        bool_or_none, LOGGING)  # fmt: skip
    log_format: str = setting(
        "text", "Format of the default log handlers: text (one line per record) or json (one JSON object per line, with the access records' named fields; docs/observability.md).",
        choice(*LOG_FORMAT_CHOICES), LOGGING)  # fmt: skip
    log_redact_query_params: Optional[Tuple[str, ...]] = setting(
        ("token", "access_token", "auth"), "Query parameters whose values the access log replaces with [redacted] (names compared without regard to case): browsers cannot set headers on a WebSocket, so credentials travel in its query string (none: log queries as they are).",
        names_value, LOGGING)  # fmt: skip

    # -- metrics ------------------------------------------------------------------------------
    metrics_port: Optional[int] = setting(
        None, "Serve Prometheus metrics on this port at /metrics (needs the metrics extra: pip install 'asgiws[metrics]'); with --workers, the supervisor serves the sum of the workers' figures (none: no metrics, and no cost).",
        port_or_none, METRICS)  # fmt: skip
    metrics_host: str = setting(
        "127.0.0.1", "Address the --metrics-port listener binds: loopback by default, since the figures are for the operator, not the public.",
        text_value, METRICS)  # fmt: skip

    # -- what the server adds to every response it writes --------------------------------------
    server_header: bool = setting(
        True, "Add server: asgiws to every response (HTTP, the WebSocket 101 and refusals) that has none.",
        bool_value, HEADERS)  # fmt: skip
    date_header: bool = setting(
        True, "Add the date header (RFC 9110 6.6.1) to every response (HTTP, the WebSocket 101 and refusals) that has none.",
        bool_value, HEADERS)  # fmt: skip
    header: Optional[Tuple[str, ...]] = setting(
        None, "Add this NAME:VALUE header to every response (HTTP, the WebSocket 101 and refusals); the flag can be repeated, the environment variable takes one per line. A server header given here replaces server: asgiws.",
        headers_value, HEADERS)  # fmt: skip

    # -- behind a proxy; log configuration file ---------------------------------------------
    proxy_headers: bool = setting(
        True, "Take the client address, scheme and host from X-Forwarded-* or Forwarded headers sent by a peer in forwarded_allow_ips.",
        bool_value, "Behind a proxy")  # fmt: skip
    forwarded_allow_ips: str = setting(
        "127.0.0.1", 'Peers trusted to send proxy headers: comma-separated IPs, CIDR networks, "*" (any), "unix:" (a Unix socket peer). FORWARDED_ALLOW_IPS is read when neither the flag nor ASGIWS_FORWARDED_ALLOW_IPS is given.',
        trusted_peers_value, "Behind a proxy")  # fmt: skip
    log_config: Optional[str] = setting(
        None, "Logging configuration file: a logging.dictConfig dictionary in JSON, or YAML if PyYAML is installed, or a logging.fileConfig .ini file; it replaces the default handlers.",
        path_or_none, LOGGING)  # fmt: skip

    # -- worker processes; TLS; Unix socket permissions ----------------------------------------
    workers: int = setting(
        1, "Worker processes sharing the listening socket, under a supervisor that restarts them (1: a single process, no supervisor). WEB_CONCURRENCY is read when neither the flag nor ASGIWS_WORKERS is given.",
        count_value, "Processes")  # fmt: skip
    limit_max_requests: Optional[int] = setting(
        None, "A process exits gracefully after this many HTTP requests; with --workers the supervisor replaces it (none: never).",
        count_or_none, "Processes")  # fmt: skip
    timeout_worker_healthcheck: Optional[float] = setting(
        5, "With --workers, kill and replace a worker that does not answer the supervisor's health check (a thread in it writes to a pipe every second) for this many seconds: a stopped process, or one stuck holding the GIL (none: no check).",
        seconds_or_none, "Processes")  # fmt: skip
    limit_max_requests_jitter: int = setting(
        0, "Add a random 0 to N requests to limit_max_requests in each process, so workers do not all restart at once.",
        count_or_zero, "Processes")  # fmt: skip
    # Python's default, 700, is about 50 requests' worth of in-flight objects: a loop turn that reads
    # more requests than that before their tasks run (a stall, then a burst over thousands of
    # keep-alive connections) sets off young collections that promote the in-flight objects, and
    # then full collections that walk every connection's objects (about 16 per HTTP connection:
    # 0.2-0.5 s each at 10,000 connections), which make the next burst bigger.
    # bench/RESULTS.md, "Why HTTP saturated at 10,000 connections".
    gc_threshold: Optional[int] = setting(
        100_000, "Generation-0 threshold of Python's cyclic garbage collector (gc.set_threshold), set at startup: new container objects, net of those freed, between collections. High, so that the objects of requests in flight die by reference counting before a collection moves them to the old generation (none: keep Python's, 700).",
        count_or_none, "Processes")  # fmt: skip

    # -- --reload (development) ----------------------------------------------------------------
    reload: bool = setting(
        False, "Restart the server when a watched file changes (development): a supervisor keeps the listening socket open, starts a fresh process on the new code, then stops the old one (its WebSockets get Close 1012). Not with --workers N.",
        bool_value, RELOAD)  # fmt: skip
    reload_dir: Optional[Tuple[str, ...]] = setting(
        None, "Directory to watch with --reload; the flag can be repeated, the environment variable takes one per line (none: the current directory).",
        reload_dirs_value, RELOAD)  # fmt: skip
    reload_include: Optional[Tuple[str, ...]] = setting(
        None, "Glob pattern of the files whose change restarts the server, besides the default *.py; the flag can be repeated. A pattern named here is taken out of the default excludes.",
        reload_patterns_value, RELOAD)  # fmt: skip
    reload_exclude: Optional[Tuple[str, ...]] = setting(
        None, "Glob pattern, or directory, whose changes never restart the server, besides the defaults .*, .py[cod], .sw.*, ~*; the flag can be repeated. A pattern named here is taken out of the default includes; a directory whose name matches one is not watched.",
        reload_patterns_value, RELOAD)  # fmt: skip
    reload_delay: float = setting(
        0.25, "How often --reload looks for changes, in seconds: without watchfiles, the polling interval (at least 0.1 s); with it, changes are reported as they happen, one batch per interval at most.",
        seconds_value, RELOAD)  # fmt: skip
    uds_permissions: int = setting(
        0o666, "Permissions of the --uds socket file; connecting needs write access, and the proxy usually runs as another user.",
        octal_value, LISTEN)  # fmt: skip
    ssl_certfile: Optional[str] = setting(
        None, "Serve HTTPS and wss:// with this PEM certificate (chain); the private key may be in the same file.",
        path_or_none, "TLS")  # fmt: skip
    ssl_keyfile: Optional[str] = setting(None, "PEM private key for --ssl-certfile, if not in that file.",
                                         path_or_none, "TLS")
    ssl_keyfile_password: Optional[str] = setting(
        None, "Password of an encrypted --ssl-keyfile (prefer the environment variable: a flag shows in ps).",
        text_or_none, "TLS")  # fmt: skip
    ssl_ca_certs: Optional[str] = setting(
        None, "PEM bundle of CAs; when given, clients must present a certificate signed by one of them (mutual TLS; see ssl_cert_reqs).",
        path_or_none, "TLS")  # fmt: skip
    ssl_cert_reqs: Optional[int] = setting(
        None, "Client certificates: 0 not asked for, 1 optional, 2 required (ssl.CERT_*); none: 2 with ssl_ca_certs, else 0.",
        cert_reqs_value, "TLS")  # fmt: skip
    ssl_ciphers: Optional[str] = setting(
        None, "OpenSSL cipher list for TLS 1.2 (e.g. ECDHE+AESGCM); none keeps the standard library's choice.",
        text_or_none, "TLS")  # fmt: skip
    ssl_version: int = setting(
        17, "TLS protocol as the ssl module numbers it: 17 or 2, TLS 1.2 or later, negotiated; 5, TLS 1.2 only. Older versions are refused.",
        ssl_version_value, "TLS")  # fmt: skip

    def __post_init__(self) -> None:
        # Values from Python are checked like values from the command line, so a bad one fails
        # here with the setting's name rather than deep inside the server.
        for entry in SETTINGS:
            value = getattr(self, entry.name)
            if entry.name == "app":
                continue
            if isinstance(value, str) and not isinstance(entry.default, str) and entry.parse is not path_or_none:
                # Text for a number, bool or none: "8000" from an env-like source, say.
                value = parse_setting(entry, value)
                setattr(self, entry.name, value)
            try:
                entry.parse.check(value)
            except ValueError as exc:
                raise ConfigError(f"{entry.name}: {exc}") from None
        if sum(x is not None for x in (self.uds, self.fd)) > 1:
            raise ConfigError("uds and fd: give at most one of them")
        # Windows has neither (nor uvloop; the loop is then asyncio): refuse here, in one line,
        # rather than fail inside the server or the supervisor.
        if self.uds is not None and not hasattr(socket, "AF_UNIX"):
            raise ConfigError("uds: this platform has no Unix domain sockets; listen on TCP (--host/--port)")
        if self.workers > 1 and not hasattr(os, "fork"):
            raise ConfigError(f"workers: {self.workers} worker processes need os.fork, which this platform lacks; "
                              "run one process per port behind a load balancer, or --workers 1")
        if self.ssl_certfile is None and (self.ssl_keyfile or self.ssl_keyfile_password or self.ssl_ca_certs
                                          or self.ssl_cert_reqs is not None or self.ssl_ciphers):  # fmt: skip
            raise ConfigError("ssl_keyfile, ssl_keyfile_password, ssl_ca_certs, ssl_cert_reqs and ssl_ciphers need ssl_certfile")
        if self.reload:
            if self.workers > 1:
                raise ConfigError(f"reload: --reload runs one server process and does not combine with --workers "
                                  f"{self.workers}; use one or the other")  # fmt: skip
            if not isinstance(self.app, str):
                raise ConfigError("reload: needs the app as an import string (module:attribute), which each new "
                                  "server process imports afresh")  # fmt: skip
            if self.metrics_port is not None:
                # Two server processes overlap for a moment at each restart, and the metrics
                # would start from zero with each: a development mode has none.
                raise ConfigError("metrics_port: --metrics-port is not served under --reload "
                                  "(a development mode); drop one of them")
            for directory in self.reload_dir or ():
                if not os.path.isdir(directory):
                    raise ConfigError(f"reload_dir: {directory!r} is not a directory")
        if self.ws_max_queue is not None and self.ws_read_high_water == SETTINGS_BY_NAME["ws_read_high_water"].default:
            self.ws_read_high_water = self.ws_max_queue * WS_QUEUE_ITEM_BYTES
        # Built once here, used for every response the server writes.
        self.response_fields = ResponseFields(self.server_header, self.date_header, self.header or ())
        self.loaded_app: Optional[ASGIApp] = None
        # Built once here, used by every WebSocket handshake; None: nothing to check.
        self.origin_policy: Optional[OriginPolicy] = origin_policy(self.ws_allowed_origins, self.ws_require_origin)
        # Built once here, used by every access record that has a query string.
        self.redact_params = frozenset(name.lower() for name in self.log_redact_query_params or ())

    @property
    def loaded(self) -> bool:
        return self.loaded_app is not None

    def load(self) -> ASGIApp:
        """Import the app (once), call it if it is a factory, and adapt ASGI 2 to ASGI 3.

        Raises `AppImportError` (one-line message) when the app cannot be imported.
        """
        if self.loaded_app is None:
            from asgiws.asgi.app import load_app

            if self.env_file is not None:
                load_env_file(self.env_file)
            self.loaded_app = load_app(self.app, factory=self.factory, app_dir=self.app_dir, interface=self.interface)
        return self.loaded_app

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new event loop of the configured kind. uvloop is imported only here."""
        if ":" in self.loop:
            from asgiws.asgi.app import AppImportError, import_from_string

            try:
                loop = import_from_string(self.loop)()
            except AppImportError as exc:
                raise ConfigError(f"loop: {exc}") from None
            if not isinstance(loop, asyncio.AbstractEventLoop):
                raise ConfigError(f"loop: {self.loop} returned {type(loop).__name__}, not an event loop")
            return loop
        if self.loop in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if self.loop == "uvloop":
                    raise ConfigError("loop: uvloop is not installed (pip install uvloop)") from None
            else:
                return uvloop.new_event_loop()
        return asyncio.new_event_loop()


def load_env_file(path: str) -> None:
    """Put the variables of a .env file into os.environ (existing ones win, as uvicorn does it)."""
    try:
        import dotenv
    except ImportError:
        raise ConfigError(f"env_file: reading {path} needs python-dotenv: pip install 'asgiws[dotenv]'") from None
    if not os.path.isfile(path):
        raise ConfigError(f"env_file: {path} is not a file")
    dotenv.load_dotenv(dotenv_path=path)


SETTINGS: Tuple[Setting, ...] = tuple(
    Setting(name=f.name, default=f.default, **f.metadata["asgiws"]) for f in dataclasses.fields(Config)
)
SETTINGS_BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}


def parse_setting(entry: Setting, text: str) -> Any:
    """Parse `text` for `entry`; raise ConfigError naming the setting."""
    try:
        return entry.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{entry.name}: {exc}") from None


def settings_from_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Settings given as ASGIWS_* environment variables, parsed. Raises ConfigError."""
    variables = os.environ if environ is None else environ
    found = {}
    for entry in SETTINGS:
        if entry.env in variables:
            try:
                found[entry.name] = entry.parse(variables[entry.env])
            except ValueError as exc:
                raise ConfigError(f"{entry.env}: {exc}") from None
    return found


# ASGIWS_* variables that are not settings: read when the modules load, before any Config exists.
IMPORT_TIME_ENV = {
    "ASGIWS_NO_EXTENSIONS": "1: run the pure-Python WebSocket codec and bridge (asgiws/codec.py) and the HTTP modules from their .py (asgiws/http/__init__.py)",
    "ASGIWS_MASK_KERNEL": "scalar|sse2: a narrower masking kernel than the CPU allows (csrc/mask.c)",
}


def unknown_env_vars(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """ASGIWS_* variables that match no setting: most likely typos, worth a warning."""
    variables = os.environ if environ is None else environ
    known = {entry.env for entry in SETTINGS} | set(IMPORT_TIME_ENV)
    return sorted(name for name in variables if name.startswith("ASGIWS_") and name not in known)

