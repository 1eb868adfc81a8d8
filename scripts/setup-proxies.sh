#!/usr/bin/env bash
# Installs the proxies the client and deployment tests run through, from
# Debian's archive with apt-get, when they are missing:
#   - tinyproxy: an HTTP CONNECT proxy with Basic auth (crates/duplex/tests/proxy.rs);
#   - microsocks: a SOCKS5 proxy with a user and password (the same tests);
#   - nginx and haproxy: reverse proxies with TLS in front of `duplex serve`
#     (docs/DEPLOY.md; crates/duplex-cli/tests/deploy.rs), and haproxy speaking
#     WebSocket over HTTP/2 (RFC 8441) to the HTTP/2 client's tests.
# The tests start their own processes with their own configuration on free
# loopback ports; nothing is started here, and services the packages may
# start are not used.
#
#   scripts/setup-proxies.sh
#
# Needs apt-get (as root, or sudo) and Debian's archive the first time.
# Idempotent: with everything installed it does nothing.
set -euo pipefail

say() { printf 'setup-proxies: %s\n' "$*"; }
die() { printf 'setup-proxies: error: %s\n' "$*" >&2; exit 1; }

# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v microsocks >/dev/null || missing+=(microsocks)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing Debian's ${missing[*]}"
    "$(dirname "$0")/apt-install.sh" "${missing[@]}"
    for tool in tinyproxy microsocks nginx haproxy; do
        command -v "$tool" >/dev/null || die "apt-get ran but $tool is not on PATH"
    done
fi
say "$(tinyproxy -v 2>&1 | head -n 1)"
say "microsocks $(dpkg-query -W -f '${Version}' microsocks 2>/dev/null || echo '(version unknown)')"
say "$(nginx -v 2>&1 | head -n 1)"
say "$(haproxy -v | head -n 1)"
