"""Writes uvicorn-<version>-flags.json beside this file: uvicorn's long flags, read from its
click command. Run it with a Python that has uvicorn (and click) installed:

    python tests/data/uvicorn_flags.py

The JSON is committed; tests/test_uvicorn_flags.py reads it and never imports uvicorn (which
needs Python >= 3.10)."""

import json
import sys
from pathlib import Path

import click
import uvicorn

command = sys.modules["uvicorn.main"].main
flags = []
for param in command.params:
    if not isinstance(param, click.Option):
        continue
    default = param.default
    if not isinstance(default, (str, int, float, bool, type(None))):
        default = None  # click's UNSET sentinel: no default
    flags.append({
        "flag": param.opts[0],
        "no_flag": param.secondary_opts[0] if param.secondary_opts else None,
        "name": param.name,
        "env": f"UVICORN_{param.name.upper()}",
        "type": param.type.name,
        "metavar": param.metavar,
        "choices": list(getattr(param.type, "choices", None) or []),
        "default": default,
        "is_flag": bool(param.is_flag),
        "multiple": bool(param.multiple),
        "help": " ".join((param.help or "").split()),
    })
target = Path(__file__).with_name(f"uvicorn-{uvicorn.__version__}-flags.json")
target.write_text(json.dumps({"uvicorn": uvicorn.__version__, "flags": flags}, indent=1) + "\n")
print(f"{target}: {len(flags)} flags")
