#!/usr/bin/env bash
# Set up the Autobahn|Testsuite (`wstest`) in a Python 2.7 virtualenv.
#
#   tests/autobahn/setup.sh            # create / verify the venv
#
# Environment:
#   ASGIWS_AUTOBAHN_VENV  venv location (default: $HOME/.cache/asgiws/autobahn-venv)
#   ASGIWS_PYTHON27       Python 2.7 interpreter to use (default: searched for)
#   ASGIWS_PYTHON3        Python 3 used only to run virtualenv (default: python3)
#
# autobahntestsuite is Python 2 only.  Its PyPI wheel declares exact pins
# (autobahn[accelerate,twisted]==0.10.9, Twisted==19.10.0, pyOpenSSL==19.1.0,
# cryptography==3.3.2, ...); PINS below is that list closed over its
# transitive dependencies, as resolved and verified with CPython 2.7.18 and
# pip 20.3.4 (the pip that virtualenv<20.22 seeds into a 2.7 venv).
#
# Everything comes as a wheel from PyPI except autobahn, txaio and PyHamcrest
# (pure-Python sdists) and wsaccel (a C extension: needs gcc and the 2.7
# headers).  wsaccel and ujson are autobahn's "accelerate" extra: optional
# speedups (C UTF-8 validation / frame masking, fast JSON).  If one of them
# cannot be installed, this script carries on without it; wstest then falls
# back to pure Python, which works but makes the 9.x (large message) cases
# markedly slower.
#
# Idempotent: when the venv already holds a working wstest installed from
# the same pins, it exits at once.  Exit status is non-zero on any failure.

set -euo pipefail

VENV="${ASGIWS_AUTOBAHN_VENV:-$HOME/.cache/asgiws/autobahn-venv}"
SUITE_VERSION="25.10.1"

# Required: the full dependency closure of autobahntestsuite==25.10.1, minus
# the accelerate extra.  Installed with --no-deps so exactly these go in.
PINS="
autobahntestsuite==25.10.1
autobahn==0.10.9
txaio==2.1.0
Twisted==19.10.0
zope.interface==4.6.0
incremental==16.10.1
constantly==15.1.0
Automat==22.10.0
attrs==21.4.0
hyperlink==21.0.0
idna==2.10
typing==3.10.0.0
PyHamcrest==1.10.1
pyOpenSSL==19.1.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
unittest2==1.1.0
argparse==1.4.0
traceback2==1.4.0
linecache2==1.0.0
six==1.16.0
setuptools==44.0.0
"
# Optional: autobahn[accelerate].  Each is tried on its own.
ACCEL_PINS="wsaccel==0.6.6 ujson==2.0.3"

say() { printf 'autobahn-setup: %s\n' "$*"; }
die() { printf 'autobahn-setup: ERROR: %s\n' "$*" >&2; exit 1; }

STAMP_FILE="$VENV/.asgiws-autobahn-pins"
STAMP="$(printf '%s\n%s\n' "$PINS" "$ACCEL_PINS" | cksum | cut -d' ' -f1)"

venv_ok() {
    [ -x "$VENV/bin/wstest" ] || return 1
    [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] || return 1
    "$VENV/bin/wstest" --autobahnversion 2>/dev/null | grep -q "AutobahnTestSuite $SUITE_VERSION"
}

# Fast path, before taking any lock.
if venv_ok; then
    say "ok: $VENV/bin/wstest ($("$VENV/bin/wstest" --autobahnversion 2>/dev/null | tr '\n' ' '))"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
# Serialise concurrent runs (e.g. CI and a developer shell).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9
    if venv_ok; then
        say "ok: $VENV/bin/wstest (set up by a concurrent run)"
        exit 0
    fi
fi

# --- find a Python 2.7 ------------------------------------------------------
is_py27() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1
}

find_py27() {
    local c v root
    if [ -n "${ASGIWS_PYTHON27:-}" ]; then
        is_py27 "$ASGIWS_PYTHON27" && { echo "$ASGIWS_PYTHON27"; return 0; }
        say "ASGIWS_PYTHON27=$ASGIWS_PYTHON27 is not a working Python 2.7" >&2
        return 1
    fi
    # python2.7 on PATH (a pyenv shim only works if 2.7 is selected, hence the check)
    c="$(command -v python2.7 2>/dev/null || true)"
    is_py27 "$c" && { echo "$c"; return 0; }
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python \
             /root/.pyenv/versions/2.7*/bin/python \
             /usr/bin/python2.7 /usr/local/bin/python2.7; do
        is_py27 "$c" && { echo "$c"; return 0; }
    done
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
        for v in $(pyenv versions --bare 2>/dev/null | grep -E '^2\.7' || true); do
            c="$(PYENV_VERSION="$v" pyenv which python2.7 2>/dev/null || true)"
            is_py27 "$c" && { echo "$c"; return 0; }
            c="$root/versions/$v/bin/python"
            is_py27 "$c" && { echo "$c"; return 0; }
        done
    fi
    return 1
}

PY27="$(find_py27)" || die "no Python 2.7 found. Autobahn|Testsuite needs one: install it (e.g. 'pyenv install 2.7.18') and/or set ASGIWS_PYTHON27=/path/to/python2.7."
say "Python 2.7: $PY27 ($("$PY27" -c 'import sys; print(sys.version.split()[0])'))"

PY3="${ASGIWS_PYTHON3:-python3}"
"$PY3" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 7) else 1)' >/dev/null 2>&1 \
    || die "need a Python >= 3.7 to run virtualenv (set ASGIWS_PYTHON3)"

# --- create the venv ----------------------------------------------------------
if [ -e "$VENV" ]; then
    if [ -f "$VENV/pyvenv.cfg" ] || [ -f "$STAMP_FILE" ] || [ -z "$(ls -A "$VENV")" ]; then
        say "removing stale/incomplete venv $VENV"
        rm -rf "$VENV"
    else
        die "$VENV exists and is not a virtualenv; refusing to touch it (set ASGIWS_AUTOBAHN_VENV)"
    fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/asgiws-autobahn-setup.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$VENV.setup.log"
: >"$LOG"

fail_with_log() {
    echo "---- last lines of the install log ----" >&2
    tail -n 40 "$LOG" >&2 || true
    die "$1"
}

# virtualenv 20.22+ can no longer create Python 2 environments; run an older
# one from a throwaway Python 3 venv.
say "bootstrapping virtualenv<20.22 (Python 3: $(command -v "$PY3" || echo "$PY3"))"
"$PY3" -m venv "$WORK/boot" >>"$LOG" 2>&1 || fail_with_log "could not create a Python 3 venv"
"$WORK/boot/bin/python" -m pip install --disable-pip-version-check --no-input -q 'virtualenv<20.22' >>"$LOG" 2>&1 \
    || fail_with_log "could not install virtualenv<20.22"

say "creating Python 2.7 venv at $VENV"
"$WORK/boot/bin/python" -m virtualenv --no-periodic-update -p "$PY27" "$VENV" >>"$LOG" 2>&1 \
    || { rm -rf "$VENV"; fail_with_log "virtualenv failed"; }

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --no-python-version-warning)

printf '%s\n' $PINS >"$WORK/requirements.txt"
say "installing autobahntestsuite==$SUITE_VERSION and its pinned dependencies (log: $LOG)"
"${PIP[@]}" install --no-deps -r "$WORK/requirements.txt" >>"$LOG" 2>&1 \
    || fail_with_log "pip install of the pinned requirements failed"

for p in $ACCEL_PINS; do
    say "installing optional accelerator $p"
    if ! "${PIP[@]}" install --no-deps "$p" >>"$LOG" 2>&1; then
        say "WARNING: could not install $p; continuing without it (wstest falls back to pure Python, slower)"
        tail -n 15 "$LOG" | sed 's/^/    /'
    fi
done

# --- verify -------------------------------------------------------------------
"$VENV/bin/python" -c 'import autobahntestsuite, autobahn, twisted, OpenSSL' >>"$LOG" 2>&1 \
    || fail_with_log "installed packages do not import"
"$VENV/bin/wstest" --help >/dev/null 2>>"$LOG" || fail_with_log "wstest --help failed"
"$VENV/bin/wstest" --autobahnversion 2>>"$LOG" | grep -q "AutobahnTestSuite $SUITE_VERSION" \
    || fail_with_log "wstest --autobahnversion does not report $SUITE_VERSION"
ACCEL="$("$VENV/bin/python" -c '
mods = []
for m in ("wsaccel", "ujson"):
    try:
        __import__(m); mods.append(m)
    except ImportError:
        pass
print(" ".join(mods) or "none")' 2>/dev/null)"

echo "$STAMP" >"$STAMP_FILE"
say "done: $VENV/bin/wstest ($("$VENV/bin/wstest" --autobahnversion 2>/dev/null | tr '\n' ' '); accelerators: $ACCEL)"
