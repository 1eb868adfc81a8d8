#!/usr/bin/env bash
# Installs Debian packages with apt-get, as root or through sudo, without
# recommends and without questions: what the setup-*.sh scripts share.
#
#   scripts/apt-install.sh PACKAGE...
#
# Fails, naming the packages, when there is no apt-get, or neither root nor
# sudo to run it.
set -euo pipefail

die() { printf 'apt-install: error: %s\n' "$*" >&2; exit 1; }

[[ $# -gt 0 ]] || die "no package named"
command -v apt-get >/dev/null || die "$* missing and there is no apt-get to install them"
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "$* missing; installing needs root or sudo"
    sudo=(sudo)
fi
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
