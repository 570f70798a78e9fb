"""The `asgiws` command (also `python -m asgiws`).

Every flag, and its ASGIWS_* environment variable, comes from the settings table in
asgiws.config. Precedence: command line, then ASGIWS_*, then uvicorn's variables (UVICORN_*,
WEB_CONCURRENCY, FORWARDED_ALLOW_IPS: asgiws.compat), then the default. uvicorn's flags that
asgiws does not take are refused with the reason (asgiws.compat.REFUSED). `--check` stops after
loading the app.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from asgiws import __version__
from asgiws.compat import REFUSED, settings_from_uvicorn_env
from asgiws.config import (
    BOOL_WORDS,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Setting,
    settings_from_env,
    unknown_env_vars,
)
from asgiws.runner import check, run

DESCRIPTION = """\
Serve an ASGI application (Starlette, FastAPI, Django, or plain ASGI 3) over HTTP/1.1 and
WebSocket, with lifespan events, on uvloop.

APP is the application as module:attribute, e.g. myapp:app for `app` in myapp.py (looked up
from the current directory; see --app-dir)."""

EPILOG = """\
examples:
  asgiws asgiws.demo:app                   the demo: open http://127.0.0.1:8000 in a browser
  asgiws myapp:app --port 8080             your app on port 8080
  asgiws myapp:app --host 0.0.0.0          reachable from other machines
  asgiws myapp:create_app --factory        call create_app() to get the app
  asgiws myapp:app --uds /run/myapp.sock   behind nginx, on a Unix socket
  ASGIWS_PORT=9000 asgiws myapp:app        any flag as an environment variable
  asgiws myapp:app --check                 check the settings and import the app, then exit

Every flag has an environment variable: --ws-max-size is ASGIWS_WS_MAX_SIZE, and the app is
ASGIWS_APP. A flag wins over its environment variable. Values: `none` switches off the settings
that allow it; bools take true/false (or --no-FLAG). The full list: docs/settings.md.

uvicorn's flags and its UVICORN_* variables work with uvicorn's meaning, or are refused with
the reason; the table: docs/settings.md, "Coming from uvicorn".

exit status: 0 after a clean shutdown (SIGINT/SIGTERM) or a passed --check, 2 for invalid
arguments, 3 if the server could not start (as uvicorn and gunicorn)."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the user typed one thing wrong.
        self.exit(2, f"asgiws: error: {message} (see asgiws --help)\n")


class _ExtendList(argparse.Action):
    """A list setting's flag, repeatable: `--ws-allowed-origins a --ws-allowed-origins b,c` is
    the list a, b, c (`none` clears what came before)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        earlier = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if values is None or earlier is None else earlier + values)


class _Refuse(argparse.Action):
    """A uvicorn flag asgiws does not take: exit at once, with the reason (asgiws.compat.REFUSED)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        parser.error(f"{option_string}: {REFUSED[option_string][1]}")


def _converter(entry: Setting) -> Any:
    def convert(text: str) -> Any:
        try:
            return entry.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = entry.name
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="asgiws",
        usage="asgiws [options] APP",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a prefix is never a flag: a future uvicorn flag must not read as one of ours
    )
    parser.add_argument("app", nargs="?", metavar="APP", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--check", action="store_true", default=argparse.SUPPRESS,
                        help="Check the settings, import APP (and call its factory), load the TLS files, "
                             "then exit with status 0 without serving.")  # fmt: skip
    groups: Dict[str, Any] = {}
    for entry in SETTINGS:
        if entry.name == "app":
            continue
        group = groups.get(entry.group)
        if group is None:
            group = groups[entry.group] = parser.add_argument_group(entry.group.lower())
        help_text = f"{entry.help} [default: {entry.default_text}; env: {entry.env}]".replace("%", "%%")
        if entry.is_bool:
            group.add_argument(
                entry.flag, dest=entry.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )  # fmt: skip
        else:
            metavar = entry.parse.metavar
            group.add_argument(
                entry.flag, dest=entry.name, type=_converter(entry), default=argparse.SUPPRESS,
                metavar=metavar if "|" in entry.parse.kind else metavar.upper(), help=help_text,
                action=_ExtendList if entry.is_list else "store",
            )  # fmt: skip
    refused = parser.add_argument_group("uvicorn's flags that asgiws refuses (exit status 2, with the reason)")
    for flag, (takes_value, reason) in REFUSED.items():
        refused.add_argument(flag, action=_Refuse, nargs=None if takes_value else 0, default=argparse.SUPPRESS,
                             metavar="VALUE", help=reason.replace("%", "%%"))  # fmt: skip
    return parser


def version_text() -> str:
    """`asgiws 0.1.0 (CPython 3.12.3 on Linux, masking kernel: avx2)`: the kernel is the one
    the C codec chose for this CPU at import (csrc/mask.c), which tells a user whether a wheel
    or their build is using the SIMD path."""
    python = f"{platform.python_implementation()} {platform.python_version()} on {platform.system()}"
    return f"asgiws {__version__} ({python}, masking kernel: {masking_kernel()})"


def masking_kernel() -> str:
    try:
        from asgiws._codec import mask_impl
    except ImportError:
        return "none, the C extension is not built"
    return mask_impl()


def normalise_bool_flags(argv: Sequence[str]) -> List[str]:
    """Accept uvicorn's `--ws-per-message-deflate false` and `--flag=false` as `--no-flag`.

    A bare bool word after a bool flag is its value, never APP: an app is always module:attribute.
    """
    bool_flags = {entry.flag for entry in SETTINGS if entry.is_bool}
    result: List[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            result += argv[index:]
            break
        flag, equals, value = arg.partition("=")
        if flag in bool_flags and equals:
            result.append(_bool_flag(flag, value))
        elif arg in bool_flags and index + 1 < len(argv) and argv[index + 1].lower() in BOOL_WORDS:
            index += 1
            result.append(_bool_flag(arg, argv[index]))
        else:
            result.append(arg)
        index += 1
    return result


def _bool_flag(flag: str, value: str) -> str:
    try:
        on = BOOL_WORDS[value.lower()]
    except KeyError:
        _ArgumentParser(prog="asgiws").error(f"argument {flag}: expected true or false, got {value!r}")
    return flag if on else "--no-" + flag[2:]


def parse_settings(
    argv: Sequence[str], environ: Optional[Mapping[str, str]] = None
) -> Tuple[Dict[str, Any], List[str], bool]:
    """The settings `argv` and the environment give, the warnings to print, and whether --check
    was asked for. Exits with status 2 (one line) on anything invalid."""
    parser = build_parser()
    args = vars(parser.parse_args(normalise_bool_flags(argv)))
    checking = bool(args.pop("check", False))
    try:
        settings, warnings = settings_from_uvicorn_env(environ)
        settings.update(settings_from_env(environ))
    except ConfigError as exc:
        parser.error(str(exc))
    settings.update(args)
    if settings.get("app") is None:
        parser.error("missing APP, the application as module:attribute (e.g. asgiws myapp:app)")
    warnings += [f"ignoring {name}, which is not a setting" for name in unknown_env_vars(environ)]
    return settings, warnings, checking


def main(argv: Optional[Sequence[str]] = None) -> None:
    settings, warnings, checking = parse_settings(sys.argv[1:] if argv is None else argv)
    for warning in warnings:
        print(f"asgiws: warning: {warning}", file=sys.stderr)
    try:
        if checking:
            config = check(**settings)
            print(f"asgiws: check passed: {settings['app']} loads", flush=True)
            for name, entry in SETTINGS_BY_NAME.items():
                value = getattr(config, name)
                if name != "app" and value != entry.default:
                    print(f"{name} = {entry.text(value)}")
            return
        run(**settings)
    except ConfigError as exc:
        _ArgumentParser(prog="asgiws").error(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
