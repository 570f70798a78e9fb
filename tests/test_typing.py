"""`mypy --strict asgiws` is clean (the settings are [tool.mypy] in pyproject.toml), and the
package ships the marker that makes its annotations count for its users (PEP 561).

The exceptions allowed are listed, with their reasons, in docs/packaging.md ("Types"); this test
keeps their count in step with the code.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_EXCEPTIONS = 20


def test_mypy_strict_is_clean(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "asgiws"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_exceptions_are_few_counted_and_give_a_reason():
    ignores = []
    for path in sorted((ROOT / "asgiws").rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "type: ignore" in line:
                ignores.append((f"{path.relative_to(ROOT)}:{number}", line))
    bare = [where for where, line in ignores if not re.search(r"type: ignore\[[a-z-]+\]", line)]
    assert not bare, f"name the error code: {bare}"
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    overrides = [i for i, line in enumerate(lines) if line.strip() == "[[tool.mypy.overrides]]"]
    for i in overrides:
        assert lines[i + 1].startswith("#"), f"pyproject.toml line {i + 2}: say why, in a comment"
    total = len(ignores) + len(overrides)
    assert total <= MAX_EXCEPTIONS, total
    documented = re.search(r"(\d+) exceptions", (ROOT / "docs/packaging.md").read_text())
    assert documented and int(documented.group(1)) == total, f"docs/packaging.md should say {total} exceptions"


def test_py_typed_marker_is_packaged():
    assert (ROOT / "asgiws/py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject  # package-data: the wheel
    assert "asgiws/py.typed" in (ROOT / "MANIFEST.in").read_text()  # the sdist
