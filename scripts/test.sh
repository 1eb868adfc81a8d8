#!/usr/bin/env bash
# The one test command: every check a change must pass. CI runs it on a clean
# clone (.ci/run); run it locally before pushing.
#
#   scripts/test.sh
#
# It needs the Rust toolchain (cargo, rustfmt, clippy), and python3 and node
# with network access to PyPI and npm for the interop suite's peers, which
# scripts/setup-peers.sh installs, and apt-get (root or sudo) with access to
# Debian's archive for the browser test's chromium, which
# scripts/setup-browser.sh installs with playwright-core from npm (both quickly
# skipped when already installed), and Debian's redis-server for the cluster
# tests (scripts/setup-redis.sh), and the proxies the client and deployment
# tests run through (scripts/setup-proxies.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo clippy -p duplex --no-default-features -- -D warnings

step "bench/: the peers' echo servers and the loads (their own workspace)"
cargo fmt --manifest-path bench/Cargo.toml --all -- --check
cargo clippy --manifest-path bench/Cargo.toml --all-targets -- -D warnings
cargo test --manifest-path bench/Cargo.toml -p floor -p pusher-load
for script in bench/*.sh; do bash -n "$script"; done
for script in bench/report.py bench/cluster_memory.py bench/density.py; do
    python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$script"
done
for script in bench/socketio/*.js; do node --check "$script"; done

step "docs (broken links and missing docs are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

step "the library crates build from their packages (cargo package: nothing reached outside a crate)"
# cargo verifies each package against the others through a registry of its
# own (target/package/tmp-registry). Like any registry's, those crates are
# unpacked into $CARGO_HOME/registry/src/-<hash of that path>/ and built into
# target/debug/, and cargo takes both as current by name and version alone:
# what an earlier run of this checkout left there (same version, older code)
# would be built or linked in place of this code. Remove both first.
for crate in duplex-proto duplex duplex-hub; do
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$crate"-[0-9]*
done
rm -rf target/debug/deps/libduplex* target/debug/.fingerprint/duplex*
cargo package --quiet --allow-dirty -p duplex-proto -p duplex -p duplex-hub

step "interop peers (Python websockets, Node ws)"
scripts/setup-peers.sh

step "browser (Debian chromium, playwright-core)"
scripts/setup-browser.sh

step "document peers (yjs, y-websocket)"
scripts/setup-docs.sh

step "Redis (the cluster tests start their own redis-server processes)"
scripts/setup-redis.sh

step "proxies (tinyproxy, microsocks, nginx, haproxy: the tests start their own)"
scripts/setup-proxies.sh

step "tests (unit, integration, property, doc, interop, browser)"
# --all-features turns on each crate's `external` feature: the test targets
# that run the programs installed above, which a plain `cargo test` leaves out.
cargo test --workspace --all-features

step "fuzz targets still build"
cargo check --manifest-path fuzz/Cargo.toml --bins --quiet

printf '\nall checks passed\n'
