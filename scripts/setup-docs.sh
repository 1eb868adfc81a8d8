#!/usr/bin/env bash
# Installs what the document tests (crates/duplex-cli/tests/docs.rs) need:
# the npm packages yjs, y-websocket, y-protocols and ws, pinned in
# tests/docs/package-lock.json, into tests/docs/node_modules/ (`npm ci`). The
# editor test also needs Chromium and playwright-core: scripts/setup-browser.sh.
#
#   scripts/setup-docs.sh
#
# Needs node and npm, and the npm registry the first time. Idempotent: when
# node_modules matches the lock file it does nothing and takes well under a
# second.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup-docs: %s\n' "$*"; }
die() { printf 'setup-docs: error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed"
command -v npm >/dev/null || die "npm is not installed"
dir="$PWD/tests/docs"
stamp="$dir/node_modules/.duplex-docs-stamp"
[[ -f "$dir/package-lock.json" ]] || die "$dir/package-lock.json is missing"
want="$(sha256sum "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && (cd "$dir" && node -e 'require.resolve("y-websocket"); require.resolve("yjs"); require.resolve("ws")') 2>/dev/null; then
    say "yjs, y-websocket, ws: up to date ($dir/node_modules)"
else
    say "yjs, y-websocket, ws: npm ci"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want" >"$stamp"
    say "installed yjs $(cd "$dir" && node -p 'require("yjs/package.json").version'), y-websocket $(cd "$dir" && node -p 'require("y-websocket/package.json").version')"
fi
