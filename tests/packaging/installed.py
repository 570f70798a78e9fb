"""Check an installed asgiws (a wheel) and run the core tier of tests (tests/tiers.py) against it.

Run it from a directory that holds a copy of tests/ (and pyproject.toml, for the pytest settings)
and no asgiws/ source tree, so that every import is of the installed package; cibuildwheel's
test-sources makes such a directory, and .ci/core_tier.sh and tests/packaging/check_wheel.sh do
the same by hand:

    python tests/packaging/installed.py [pytest arguments, e.g. -n 2]

It prints where asgiws was imported from and `asgiws --version` (the masking kernel), fails when
the C extensions are missing, runs the tier, and fails when it passed no test at all (a tier
emptied by a rename or by skips must not look green). Exits with pytest's status otherwise.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))
from tiers import CORE  # noqa: E402


class Outcomes:
    """Counts test outcomes as the controller sees them (with xdist too)."""

    def __init__(self) -> None:
        self.counts = {"passed": 0, "failed": 0, "skipped": 0}

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1


def main(pytest_args: list) -> int:
    if (TESTS.parent / "asgiws").is_dir():
        sys.exit(f"{TESTS.parent} has an asgiws/ source tree, which would shadow the installed "
                 "package: run this from a copy of tests/")
    import asgiws
    import asgiws._codec  # noqa: F401  (an ImportError here is the answer: no extension)
    import asgiws.asgi._bridge  # noqa: F401
    import pytest

    print(f"asgiws from {Path(asgiws.__file__).parent}")
    version = subprocess.run([sys.executable, "-m", "asgiws", "--version"], capture_output=True, text=True,
                             check=True, cwd=TESTS.parent).stdout.strip()
    print(version, flush=True)
    os.chdir(TESTS.parent)
    outcomes = Outcomes()
    started = time.monotonic()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args, *(f"tests/{name}" for name in sorted(CORE))],
                         plugins=[outcomes])
    counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.counts.items())
    print(f"core tier on {sys.implementation.name} {sys.version.split()[0]}: {counts} "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    if outcomes.counts["passed"] == 0:
        print("core tier: no test passed; the tier is empty or everything was skipped", file=sys.stderr)
        return 1
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
