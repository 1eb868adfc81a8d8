#!/usr/bin/env bash
# Installs what the cluster tests (crates/duplex-cli/tests/cluster.rs) need:
# Debian's `redis-server` and `redis-cli` (package redis-server), with
# apt-get, when they are missing. The tests start their own redis-server
# processes on free loopback ports; nothing is started here, and a Redis
# service the package may start is not used.
#
#   scripts/setup-redis.sh
#
# Needs apt-get (as root, or sudo) and Debian's archive the first time.
# Idempotent: with redis-server installed it does nothing.
set -euo pipefail

say() { printf 'setup-redis: %s\n' "$*"; }
die() { printf 'setup-redis: error: %s\n' "$*" >&2; exit 1; }

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    say "redis-server: installed ($(command -v redis-server))"
else
    command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get to install it"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "redis-server is missing; installing it needs root or sudo"
        sudo=(sudo)
    fi
    say "redis-server: installing Debian's redis-server package"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
    command -v redis-server >/dev/null || die "apt-get installed redis-server but it is not on PATH"
fi
say "$(redis-server --version)"
