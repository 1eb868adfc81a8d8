#!/usr/bin/env bash
# Fan-out: one publisher, N subscribers, against the broadcast of the
# static_and_ws example and against a channel of `duplex serve`, with
# `duplex bench --subscribers` as the load.
#
#   bench/fanout.sh                          # 1,000 and 10,000 subscribers
#   SUBSCRIBERS="100 1000" RATES=50 bench/fanout.sh
#
# Environment (all optional):
#   SUBSCRIBERS="1000 10000"  the subscriber counts to run
#   RATES="10 20"             publications per second (duplex bench --rate), each run
#   SIZE=64                   bytes per publication
#   DURATION=10               seconds measured per run
#   SERVER_CPU=0 CLIENT_CPU=1 where the server and the load generator run
#   NO_BUILD=1                use the binaries already built
#
# Prints a Markdown table; the raw JSON of each run goes to
# bench/results/fanout-<date>/. Needs bash, taskset, python3, cargo, 2 CPUs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SUBSCRIBERS=${SUBSCRIBERS:-1000 10000}
RATES=${RATES:-10 20}
SIZE=${SIZE:-64}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DUPLEX=$ROOT/target/release/duplex
EXAMPLE=$ROOT/target/release/examples/static_and_ws
RESULTS=$BENCH_DIR/results/fanout-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RESULTS"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p duplex-cli && cargo build --release -p duplex --example static_and_ws) >&2
fi

SERVER_PID=
ADDR=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap cleanup EXIT

# start_server OUT COMMAND...: runs it on SERVER_CPU (SERVER_PID) and sets
# ADDR from its first line ("listening on http://ADDR"). Not to be called in
# a subshell: SERVER_PID must reach cleanup.
start_server() {
    local out=$1
    shift
    : >"$out"
    taskset -c "$SERVER_CPU" "$@" >"$out" 2>"$out.err" &
    SERVER_PID=$!
    for ((i = 0; i < 200; i++)); do
        if [[ $(wc -l <"$out") -ge 1 ]]; then
            ADDR=$(sed -n '1s|^listening on [a-z]*://||p' "$out")
            return
        fi
        sleep 0.05
    done
    echo "fanout.sh: the server did not start: $(head -c 300 "$out.err")" >&2
    exit 1
}

cpu_ticks() { # pid: user + system CPU ticks of the process so far
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null
}

run() { # label rate url json extra-args...
    local label=$1 rate=$2 url=$3 json=$4
    shift 4
    local before after start end
    # The server's CPU share over the whole run (connecting, warm-up and
    # measurement): how close to its one core the server was.
    before=$(cpu_ticks "$SERVER_PID")
    start=$(date +%s.%N)
    taskset -c "$CLIENT_CPU" "$DUPLEX" bench "$url" --size "$SIZE" --duration "$DURATION" \
        --rate "$rate" --json "$@" >"$json" || true
    after=$(cpu_ticks "$SERVER_PID")
    end=$(date +%s.%N)
    awk -v a="$before" -v b="$after" -v hz="$(getconf CLK_TCK)" -v s="$start" -v e="$end" \
        'BEGIN { printf "%.0f\n", 100 * (b - a) / hz / (e - s) }' >"$json.server-cpu"
    echo "$label" >"$json.label"
    echo "done: $label" >&2
}

for n in $SUBSCRIBERS; do
    for rate in $RATES; do
        start_server "$RESULTS/example-$n-$rate.out" "$EXAMPLE" --listen 127.0.0.1:0 --queue 4096
        run "static_and_ws broadcast" "$rate" "ws://$ADDR/ws" "$RESULTS/example-$n-$rate.json" \
            --subscribers "$n"
        cleanup
        data=$(mktemp -d)
        start_server "$RESULTS/hub-$n-$rate.out" "$DUPLEX" serve --listen 127.0.0.1:0 \
            --data "$data" --config "$BENCH_DIR/hub-fanout.toml"
        run "duplex serve, channel fanout:bench" "$rate" "ws://$ADDR/ws" "$RESULTS/hub-$n-$rate.json" \
            --subscribers "$n" --hub fanout:bench
        cleanup
        rm -rf "$data"
    done
done

python3 - "$RESULTS" <<'PY'
import glob, json, os, sys
print("| server | subscribers | published/s | delivered/s | p50 µs | p99 µs | max µs | server CPU % | client CPU % | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def key(path):
    kind, n, rate = os.path.basename(path)[:-5].rsplit("-", 2)
    return (int(n), float(rate), kind)
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")), key=key):
    label = open(path + ".label").read().strip()
    try:
        r = json.load(open(path))
    except ValueError:
        print(f"| {label} | {key(path)[0]:,} | failed | | | | | | | |")
        continue
    l = r["latency_us"]
    server_cpu = open(path + ".server-cpu").read().strip()
    print(f"| {label} | {r['subscribers']:,} | {r['published_per_sec']:,.1f} | {r['messages_per_sec']:,.0f} "
          f"| {l['p50']:,.0f} | {l['p99']:,.0f} | {l['max']:,.0f} | {server_cpu} "
          f"| {r['client_cpu_percent']:.0f} | {r['errors']} |")
PY
echo "raw results: $RESULTS" >&2
