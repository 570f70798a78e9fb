"""Check an installed asgiws (a wheel) and run the codec and WebSocket tests against it.

Run it from a directory that holds a copy of tests/ (and pyproject.toml, for the pytest settings)
and no asgiws/ source tree, so that every import is of the installed package; cibuildwheel's
test-sources makes such a directory, and tests/packaging/check_wheel.sh does the same by hand:

    python tests/packaging/installed.py [pytest arguments, e.g. -n 2]

It prints where asgiws was imported from and `asgiws --version` (the masking kernel), fails when
the C extensions are missing, and exits with pytest's status.
"""

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SELECTION = sorted(TESTS.glob("test_codec_*.py")) + sorted(TESTS.glob("test_websocket*.py"))


def main(pytest_args: list) -> int:
    if (TESTS.parent / "asgiws").is_dir():
        sys.exit(f"{TESTS.parent} has an asgiws/ source tree, which would shadow the installed "
                 "package: run this from a copy of tests/")
    import asgiws
    import asgiws._codec  # noqa: F401  (an ImportError here is the answer: no extension)
    import asgiws.asgi._bridge  # noqa: F401

    print(f"asgiws from {Path(asgiws.__file__).parent}")
    version = subprocess.run([sys.executable, "-m", "asgiws", "--version"], capture_output=True, text=True,
                             check=True, cwd=TESTS.parent).stdout.strip()
    print(version, flush=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    return subprocess.call(command + [str(path.relative_to(TESTS.parent)) for path in SELECTION],
                           cwd=TESTS.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
