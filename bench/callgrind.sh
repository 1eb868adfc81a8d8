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
# The server (which must take `--listen ADDR` and print `listening on ws://ADDR`)
# runs twice under callgrind, loaded by `duplex bench` at a fixed rate (open
# loop: RATE messages/s over CONNECTIONS connections) for SHORT and then LONG
# seconds. Startup, handshakes and warm-up cost the same in both runs, so the
# difference in instructions over the difference in messages is the cost of
# one message. Set BENCH to the load generator (default target/release/duplex;
# keep one build of it when comparing two builds of the server).
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
counts=()
for duration in "$short" "$long"; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$duration" "$@" \
        --listen 127.0.0.1:0 >"$out/server.$duration" 2>"$out/valgrind.$duration" &
    pid=$!
    for _ in $(seq 100); do
        grep -q listening "$out/server.$duration" && break
        sleep 0.2
    done
    addr=$(sed -n 's/.*listening on ws:\/\///p' "$out/server.$duration")
    "$bench" bench "ws://$addr/" --connections "$connections" --size "$size" \
        --duration "$duration" --rate "$rate" --json >"$out/bench.$duration"
    kill -TERM "$pid"
    wait "$pid" || true
    messages=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['messages'])" "$out/bench.$duration")
    instructions=$(awk '/^summary:/ {print $2; exit}' "$out/cg.$duration")
    echo "$duration s: $messages messages, $instructions instructions" >&2
    counts+=("$messages" "$instructions")
done
python3 -c "
import sys
m1, i1, m2, i2 = map(int, sys.argv[1:])
print('%.0f instructions per message (%.0f over the whole long run)' % ((i2 - i1) / (m2 - m1), i2 / m2))
" "${counts[@]}"
