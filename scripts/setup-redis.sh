#!/usr/bin/env bash
# Installs what the cluster tests (crates/duplex-cli/tests/cluster.rs) need:
# Debian's `redis-server` and `redis-cli` (packages redis-server and
# redis-tools) and `haproxy` (the load balancer of docs/cluster/haproxy.cfg),
# with apt-get, when they are missing. The tests start their own redis-server
# and haproxy processes on free loopback ports; nothing is started here, and
# services the packages may start are not used.
#
#   scripts/setup-redis.sh
#
# Needs apt-get (as root, or sudo) and Debian's archive the first time.
# Idempotent: with redis-server installed it does nothing.
set -euo pipefail

say() { printf 'setup-redis: %s\n' "$*"; }
die() { printf 'setup-redis: error: %s\n' "$*" >&2; exit 1; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v haproxy >/dev/null || missing+=(haproxy)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing Debian's ${missing[*]}"
    "$(dirname "$0")/apt-install.sh" "${missing[@]}"
    command -v redis-server >/dev/null || die "apt-get ran but redis-server is not on PATH"
    command -v haproxy >/dev/null || die "apt-get ran but haproxy is not on PATH"
fi
say "$(redis-server --version)"
say "$(haproxy -v | head -n 1)"
