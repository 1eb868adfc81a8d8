#!/usr/bin/env bash
# Installs what the real-browser test (crates/duplex-cli/tests/browser.rs)
# needs:
#
#   - Debian's `chromium` package (/usr/bin/chromium), with apt-get, when it is
#     missing: the browser comes from Debian, never from a download of
#     Playwright's own builds (no `playwright install`);
#   - the npm package `playwright-core`, pinned in tests/browser/package-lock.json,
#     into tests/browser/node_modules/ (`npm ci`).
#
#   scripts/setup-browser.sh
#
# Needs apt-get (as root, or sudo), node and npm, and network access to
# Debian's archive and the npm registry the first time. Idempotent: when
# chromium is installed and node_modules matches the lock file, it does nothing
# and takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

say() { printf 'setup-browser: %s\n' "$*"; }
die() { printf 'setup-browser: error: %s\n' "$*" >&2; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# ----- Chromium (Debian) -----
chromium=/usr/bin/chromium
if [[ -x "$chromium" ]]; then
    say "chromium: installed ($chromium)"
else
    say "chromium: installing Debian's chromium package"
    "$root/scripts/apt-install.sh" chromium
    [[ -x "$chromium" ]] || die "apt-get installed chromium but $chromium is not there"
fi
say "chromium: $("$chromium" --version 2>/dev/null || echo 'version unknown')"

# ----- playwright-core (npm) -----
command -v node >/dev/null || die "node is not installed"
command -v npm >/dev/null || die "npm is not installed"
dir="$root/tests/browser"
stamp="$dir/node_modules/.duplex-browser-stamp"
[[ -f "$dir/package-lock.json" ]] || die "$dir/package-lock.json is missing"
want="$(hash_of "$dir/package.json" "$dir/package-lock.json")"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && (cd "$dir" && node -e 'require("playwright-core")') 2>/dev/null; then
    say "playwright-core: up to date ($dir/node_modules)"
else
    say "playwright-core: npm ci"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing on
    # install, but make sure no install step ever fetches a browser build.
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    (cd "$dir" && node -e 'console.log("setup-browser: playwright-core", require("playwright-core/package.json").version)')
    printf '%s\n' "$want" >"$stamp"
fi
