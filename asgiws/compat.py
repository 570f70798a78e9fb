"""uvicorn's command line and environment, where they are not asgiws settings.

Most of uvicorn's flags are asgiws settings of the same name (asgiws.config). The rest are here:

- `REFUSED`: flags asgiws does not take, each with a one-line reason that names what to use
  instead. The CLI accepts their spelling only to refuse it (exit status 2), so a uvicorn script
  fails at once and says why, rather than serving with a silent difference.
- `settings_from_uvicorn_env`: uvicorn's environment variables, read below the `ASGIWS_*` ones:
  `UVICORN_<SETTING>` (click's automatic variables), `WEB_CONCURRENCY` for --workers and
  `FORWARDED_ALLOW_IPS` for --forwarded-allow-ips. One that names a refused flag, or nothing
  uvicorn knows, is ignored with a warning naming it.

docs/settings.md ("Coming from uvicorn") lists every uvicorn flag and what asgiws does with it;
tests/test_uvicorn_flags.py checks that table against uvicorn's own list (tests/data) and this.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from asgiws.config import SETTINGS_BY_NAME, ConfigError

# flag → (takes a value, why asgiws refuses it and what to use instead)
REFUSED: Dict[str, Tuple[bool, str]] = {
    "--http2": (False, "asgiws serves HTTP/1.1 only; let the proxy in front speak HTTP/2 to clients "
                       "(nginx: listen 443 ssl; http2 on;)"),
    "--h11-max-incomplete-event-size": (True, "asgiws does not use h11; the bound on an incomplete request head "
                                              "is --limit-max-head (bytes, default 65536)"),
}  # fmt: skip

# uvicorn's parameter names (its UVICORN_* variables) that differ from the asgiws setting's.
UVICORN_NAMES = {"headers": "header", "reload_dirs": "reload_dir", "reload_includes": "reload_include",
                 "reload_excludes": "reload_exclude"}  # fmt: skip
# uvicorn's parameter names behind the refused flags.
REFUSED_NAMES = {"http2": "--http2", "h11_max_incomplete_event_size": "--h11-max-incomplete-event-size"}
# uvicorn's repeatable options (click's `multiple=True`), as asgiws settings.
REPEATABLE = {"header", "reload_dir", "reload_include", "reload_exclude"}
# Variables uvicorn reads without its prefix, and the setting each fills.
PLAIN_VARIABLES = {"WEB_CONCURRENCY": "workers", "FORWARDED_ALLOW_IPS": "forwarded_allow_ips"}


def settings_from_uvicorn_env(environ: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, Any], List[str]]:
    """Settings from uvicorn's environment variables, and warnings for those ignored.

    `UVICORN_*` wins over WEB_CONCURRENCY and FORWARDED_ALLOW_IPS, as in uvicorn; the caller lets
    `ASGIWS_*` and flags win over all of them. Raises ConfigError for a value that does not parse.
    """
    variables = os.environ if environ is None else environ
    found: Dict[str, Any] = {}
    warnings: List[str] = []
    for variable, name in PLAIN_VARIABLES.items():
        if variable in variables:
            found[name] = _parse(variable, name, variables[variable])
    for variable in sorted(variables):
        if not variable.startswith("UVICORN_"):
            continue
        uvicorn_name = variable[len("UVICORN_"):].lower()
        name = UVICORN_NAMES.get(uvicorn_name, uvicorn_name)
        if uvicorn_name in REFUSED_NAMES:
            flag = REFUSED_NAMES[uvicorn_name]
            warnings.append(f"ignoring {variable}: {flag}: {REFUSED[flag][1]}")
        elif name in SETTINGS_BY_NAME:
            text = variables[variable]
            if name in REPEATABLE:  # click splits a repeatable option's variable on whitespace
                text = "\n".join(text.split())
            found[name] = _parse(variable, name, text)
        else:
            warnings.append(f"ignoring {variable}, which is not a uvicorn setting asgiws knows")
    return found, warnings


def _parse(variable: str, name: str, text: str) -> Any:
    try:
        return SETTINGS_BY_NAME[name].parse(text)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None
