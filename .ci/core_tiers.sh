#!/usr/bin/env bash
# The core tier (tests/tiers.py) on every supported CPython other than the one the full suite
# runs on: for each, build a wheel with that Python from one sdist, install it with the test
# extra into a fresh venv, and run the tier from a copy of tests/ outside the checkout, so the
# installed wheel and not the source tree is what is tested.
#
#     bash .ci/core_tiers.sh PYTHON_FOR_THE_SDIST [VERSION ...]      (default: 3.10 3.12 3.13)
#
# PYTHON_FOR_THE_SDIST needs Cython and setuptools >= 77 (the test extra has both). The Pythons
# are pyenv's (~/.pyenv/versions/X.Y.*); a missing one fails the run rather than skipping it.
# The stages run one after another, each on one core (-n 1), so that beside the main suite
# (-n 2) the machine's 2 cores are not oversubscribed further. Each prints its wall time.
set -euo pipefail
sdist_python="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; shift   # absolute, symlink kept (a venv)
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then versions=("$@"); else versions=(3.10 3.12 3.13); fi
export ASGIWS_REQUIRE_EXTENSIONS=1   # a wheel without its extensions fails the build, not later
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

started=$SECONDS
echo "== core tiers: the sdist they are built from"
mkdir "$work/source" "$work/sdist"
git ls-files -z | xargs -0 cp --parents -p -t "$work/source"   # tracked files only: no build outputs
(cd "$work/source" && "$sdist_python" -c \
    "import sys; sys.path.insert(0, 'build_backend'); import asgiws_backend; asgiws_backend.build_sdist(sys.argv[1])" \
    "$work/sdist" >"$work/sdist.log" 2>&1) || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$work/sdist"/asgiws-*.tar.gz)
echo "-- sdist $(basename "$sdist"): $((SECONDS - started)) s"

failed=()
for version in "${versions[@]}"; do
    stage_started=$SECONDS
    python=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python3 2>/dev/null | sort -V | tail -1 || true)
    echo "== core tier on CPython $version (${python:-not found})"
    if [ -z "$python" ]; then
        echo "CPython $version is not installed under ~/.pyenv/versions"; failed+=("$version"); continue
    fi
    stage="$work/$version"
    if "$python" -m venv "$stage/venv" \
        && "$stage/venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$stage/dist" "$sdist" \
        && "$stage/venv/bin/pip" install --quiet "$(ls "$stage/dist"/asgiws-*.whl)[test]" \
        && echo "-- $(basename "$(ls "$stage/dist"/asgiws-*.whl)") built and installed: $((SECONDS - stage_started)) s" \
        && mkdir "$stage/run" && cp -r "$work/source/tests" "$work/source/pyproject.toml" "$stage/run/" \
        && (cd "$stage/run" && "$stage/venv/bin/python" tests/packaging/installed.py -n 1); then
        status=passed
    else
        status=FAILED; failed+=("$version")
    fi
    echo "-- core tier on CPython $version: $status, $((SECONDS - stage_started)) s"
done
echo "-- core tiers: $((SECONDS - started)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
    echo "core tier FAILED on CPython ${failed[*]}"; exit 1
fi
