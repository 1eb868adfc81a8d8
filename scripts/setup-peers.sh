#!/usr/bin/env bash
# Installs the real WebSocket peers the interop tests (tests/, crate
# duplex-interop) run against:
#
#   - Python `websockets`, and PyJWT with `cryptography` (the tokens of the
#     hub's JWT tests, crates/duplex-cli/tests/auth.rs), pinned in
#     tests/peers/python/requirements.txt, into a virtual environment at
#     .venv/ (the tests run .venv/bin/python);
#   - Node `ws`, pinned in tests/peers/node/package-lock.json, into
#     tests/peers/node/node_modules/ (`npm ci`).
#
#   scripts/setup-peers.sh
#
# Needs python3 (with venv and pip), node and npm, and network access to PyPI
# and the npm registry the first time. Idempotent: when everything is already
# installed from the current requirements and lock file, it does nothing and
# takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

say() { printf 'setup-peers: %s\n' "$*"; }
die() { printf 'setup-peers: error: %s\n' "$*" >&2; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# ----- Python -----
command -v python3 >/dev/null || die "python3 is not installed"
venv="$root/.venv"
requirements="$root/tests/peers/python/requirements.txt"
py_stamp="$venv/.duplex-peers-stamp"
py_want="$(hash_of "$requirements")"
if [[ -x "$venv/bin/python" && -f "$py_stamp" && "$(cat "$py_stamp")" == "$py_want" ]] \
    && "$venv/bin/python" -c 'import websockets, jwt, cryptography' 2>/dev/null; then
    say "python peer: up to date ($venv)"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        say "python peer: creating $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    say "python peer: installing $(grep -v '^#' "$requirements" | paste -sd' ')"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$requirements"
    "$venv/bin/python" -c 'import websockets, jwt, cryptography; print("setup-peers: python peers: websockets", websockets.__version__, "PyJWT", jwt.__version__, "cryptography", cryptography.__version__)'
    printf '%s\n' "$py_want" >"$py_stamp"
fi

# ----- Node -----
command -v node >/dev/null || die "node is not installed"
command -v npm >/dev/null || die "npm is not installed"
node_dir="$root/tests/peers/node"
node_stamp="$node_dir/node_modules/.duplex-peers-stamp"
if [[ ! -f "$node_dir/package-lock.json" ]]; then
    # First time only: resolve and write the lock file, which is committed.
    say "node peer: no package-lock.json, creating it with npm install"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error)
fi
node_want="$(hash_of "$node_dir/package.json" "$node_dir/package-lock.json")"
if [[ -f "$node_stamp" && "$(cat "$node_stamp")" == "$node_want" ]] \
    && (cd "$node_dir" && node -e 'require("ws")') 2>/dev/null; then
    say "node peer: up to date ($node_dir/node_modules)"
else
    say "node peer: npm ci"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    (cd "$node_dir" && node -e 'console.log("setup-peers: node peer: ws", require("ws/package.json").version)')
    printf '%s\n' "$node_want" >"$node_stamp"
fi
