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
    command -v apt-get >/dev/null || die "${missing[*]} missing and there is no apt-get to install them"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "${missing[*]} missing; installing needs root or sudo"
        sudo=(sudo)
    fi
    say "installing Debian's ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    command -v redis-server >/dev/null || die "apt-get ran but redis-server is not on PATH"
    command -v haproxy >/dev/null || die "apt-get ran but haproxy is not on PATH"
fi
say "$(redis-server --version)"
say "$(haproxy -v | head -n 1)"
