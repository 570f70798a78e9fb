"""docs/settings.md against the settings table in asgiws/config.py: every setting listed once,
with the default, flag, environment variable, value type and description the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asgiws.config import SETTINGS, Setting

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \|(?P<rest>.*)\|$")


def doc_rows() -> dict:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            name = match["name"]
            assert name not in rows, f"{name} is listed twice in {DOC.name}"
            rows[name] = [cell.strip() for cell in match["rest"].split(" | ")]
    return rows


def expected_cells(entry: Setting) -> list:
    if entry.name == "app":
        flag = "`APP` (positional)"
    elif entry.is_bool:
        flag = f"`{entry.flag}` / `--no-{entry.flag[2:]}`"
    else:
        flag = f"`{entry.flag}`"
    value = entry.parse.metavar.replace("|", " / ")
    return [f"`{entry.default_text}`", flag, f"`{entry.env}`", value, entry.help]


def test_every_setting_is_documented_once():
    assert sorted(doc_rows()) == sorted(entry.name for entry in SETTINGS)


@pytest.mark.parametrize("entry", SETTINGS, ids=[entry.name for entry in SETTINGS])
def test_setting_row_matches_code(entry):
    row = doc_rows()[entry.name]
    assert row == expected_cells(entry), (
        f"docs/settings.md row for {entry.name} is out of date; it should read:\n"
        f"| `{entry.name}` | " + " | ".join(expected_cells(entry)) + " |"
    )


def test_every_setting_says_why():
    for entry in SETTINGS:
        assert entry.help.strip().endswith((".", ")")), entry.name
        assert len(entry.help) > 20, entry.name
