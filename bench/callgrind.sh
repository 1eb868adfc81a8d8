#!/usr/bin/env bash
# Instructions per echoed message of an echo server, counted by valgrind's
# callgrind (user space only; the kernel is not counted). Instruction counts do
# not depend on how busy the machine is, so they compare builds where wall-clock
# figures would not.
#
#   bench/callgrind.sh SIZE -- SERVER [ARGS...]
#   bench/callgrind.sh 20 -- target/release/duplex echo --threads 1 --no-deflate
#   bench/callgrind.sh 1K -- bench/target/release/echo-fastwebsockets
#
# The server (which must take `--listen ADDR` and print `listening on ws://ADDR`, or http://)
# runs twice under callgrind, loaded by `duplex bench` at a fixed rate (open
# loop: RATE messages/s over CONNECTIONS connections) for SHORT and then LONG
# seconds. Startup, handshakes and warm-up cost the same in both runs, so the
# difference in instructions over the difference in messages is the cost of
# one message. Set BENCH to the load generator (default target/release/duplex;
# keep one build of it when comparing two builds of the server).
#
# Fan-out instead of echo: SUBSCRIBERS=N makes the load N subscribers and one
# publisher (`duplex bench --subscribers N`, RATE publications/s, PATH the
# WebSocket's path, HUB a hub channel to subscribe to), and the figure is per
# delivery:
#
#   SUBSCRIBERS=1000 RATE=5 WS_PATH=/ws bench/callgrind.sh 64 -- \
#       target/release/examples/static_and_ws --queue 4096
#
# CACHE=1 adds callgrind's cache simulation: first-level and last-level data
# misses per message (simulated caches, not this machine's; they compare
# builds, as the instruction counts do). KEEP=DIR keeps callgrind's output
# files there, for callgrind_annotate.
set -euo pipefail
size=$1; shift
[[ ${1:-} == -- ]] && shift
bench=${BENCH:-target/release/duplex}
connections=${CONNECTIONS:-10}
rate=${RATE:-2000}
short=${SHORT:-2}
long=${LONG:-7}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
subscribers=${SUBSCRIBERS:-}
path=${WS_PATH:-/}
load=(--connections "$connections")
if [[ -n $subscribers ]]; then
    load=(--subscribers "$subscribers")
    [[ -n ${HUB:-} ]] && load+=(--hub "$HUB")
fi
cache=()
[[ ${CACHE:-0} == 1 ]] && cache=(--cache-sim=yes)
counts=()
misses=()
for duration in "$short" "$long"; do
    valgrind --tool=callgrind "${cache[@]}" --callgrind-out-file="$out/cg.$duration" "$@" \
        --listen 127.0.0.1:0 >"$out/server.$duration" 2>"$out/valgrind.$duration" &
    pid=$!
    for _ in $(seq 100); do
        grep -q listening "$out/server.$duration" && break
        sleep 0.2
    done
    addr=$(sed -n 's/.*listening on [a-z]*:\/\///p' "$out/server.$duration")
    "$bench" bench "ws://$addr$path" "${load[@]}" --size "$size" \
        --duration "$duration" --rate "$rate" --json >"$out/bench.$duration"
    kill -TERM "$pid"
    wait "$pid" || true
    messages=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['messages'])" "$out/bench.$duration")
    [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$out/cg.$duration" "$KEEP/"
    instructions=$(awk '/^summary:/ {print $2; exit}' "$out/cg.$duration")
    echo "$duration s: $messages messages, $instructions instructions" >&2
    counts+=("$messages" "$instructions")
    if [[ ${CACHE:-0} == 1 ]]; then
        # The summary line's events are Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
        misses+=("$(awk '/^summary:/ {print $6 + $7, $9 + $10; exit}' "$out/cg.$duration")")
    fi
done
python3 -c "
import sys
m1, i1, m2, i2 = map(int, sys.argv[1:])
print('%.0f instructions per message (%.0f over the whole long run)' % ((i2 - i1) / (m2 - m1), i2 / m2))
" "${counts[@]}"
if [[ ${CACHE:-0} == 1 ]]; then
    python3 -c "
import sys
m1, m2 = int(sys.argv[1]), int(sys.argv[2])
d1a, lla = map(int, sys.argv[3].split())
d1b, llb = map(int, sys.argv[4].split())
print('%.1f first-level and %.1f last-level data misses per message' % ((d1b - d1a) / (m2 - m1), (llb - lla) / (m2 - m1)))
" "${counts[0]}" "${counts[2]}" "${misses[0]}" "${misses[1]}"
fi
