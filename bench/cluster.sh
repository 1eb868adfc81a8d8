#!/usr/bin/env bash
# Cluster fan-out over Redis: two `duplex serve` nodes on one redis-server,
# SUBSCRIBERS subscribers of one channel split over the two nodes and a
# publisher on each, against the same topology with Socket.IO 4 and
# @socket.io/redis-adapter (bench/socketio/). Per run: deliveries/s,
# publish-to-delivery p50/p99, the servers' and Redis's CPU time per delivery
# over the measurement window, and the load generator's own CPU. The two
# systems take turns over ROUNDS rounds at one fixed rate; then duplex alone
# steps up the rate to the highest this machine sustains.
#
#   bench/cluster.sh                  # 3 rounds, 10,000 subscribers, 3/s, then the step-up
#   ROUNDS=1 DURATION=5 STEP_RATES= bench/cluster.sh   # a quick look
#
# Environment (all optional):
#   ROUNDS=3                 rounds of the fixed-rate comparison
#   SUBSCRIBERS=10000        subscribers, split over the two nodes
#   RATE=3                   publications/s of the comparison, all publishers together
#                            (30,000 deliveries/s: at 5/s Socket.IO falls behind here)
#   STEP_RATES="6 8 10 15 20 30 40 50 60"  duplex's step-up, publications/s (empty: none);
#                            it stops after the first rate not sustained
#   SIZE=64                  bytes of data per publication
#   DURATION=10 WARMUP=3     seconds measured, seconds of load before
#   P99_LIMIT_MS=1000        a step-up run whose p99 is above this is not sustained
#   SYSTEMS="duplex socketio"
#   SERVER_CPU=0 CLIENT_CPU=1  where the nodes and Redis run, where the load runs
#   NO_BUILD=1               use the binary already built
#
# CPU over the window: each load prints `measuring` and `measured` on stderr
# at the edges of its measurement window (duplex bench --marks; load.js
# always), after every subscriber is connected and subscribed, and this
# script reads utime + stime of both nodes and of redis-server from
# /proc/PID/stat at each line. So connecting the subscribers is not counted.
#
# Everything listens on 127.0.0.1 only, stops by itself, and every process
# started here is stopped on exit (trap). Prints a Markdown report; the raw
# JSON and logs go to bench/results/cluster-<date>/. Needs bash, taskset,
# python3, redis-server and redis-cli, node and npm (bench/socketio/ is
# installed with `npm ci` when its node_modules is missing), cargo, 2 CPUs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
ROUNDS=${ROUNDS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATE=${RATE:-3}
STEP_RATES=${STEP_RATES-6 8 10 15 20 30 40 50 60}
SIZE=${SIZE:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
P99_LIMIT_MS=${P99_LIMIT_MS:-1000}
SYSTEMS=${SYSTEMS:-duplex socketio}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DUPLEX=$ROOT/target/release/duplex
SOCKETIO=$BENCH_DIR/socketio
CHANNEL=fanout:bench
HZ=$(getconf CLK_TCK)
RESULTS=$BENCH_DIR/results/cluster-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RESULTS"

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in taskset python3 redis-server redis-cli node npm; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

# 10,000 subscribers are 10,000 sockets in the load generator's process.
want_files=$((SUBSCRIBERS + 1000))
if (($(ulimit -n) < want_files)); then
    ulimit -n "$want_files" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= want_files)) || die "open files limited to $(ulimit -n); $want_files needed"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p duplex-cli) >&2
fi
[[ -x $DUPLEX ]] || die "$DUPLEX is not built"
if [[ " $SYSTEMS " == *" socketio "* && ! -d $SOCKETIO/node_modules ]]; then
    (cd "$SOCKETIO" && npm ci --no-audit --no-fund) >&2
fi

TMP=$(mktemp -d)
REDIS_PID=
NODE_PIDS=()
stop_pid() { # pid: SIGTERM, then SIGKILL after 5 s
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
    NODE_PIDS=()
}
cleanup() {
    stop_nodes
    if [[ -n $REDIS_PID ]]; then stop_pid "$REDIS_PID"; fi
    REDIS_PID=
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sample() { # pid: "utime stime" in CPU ticks (fields 14 and 15; comm may hold spaces)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}

# snapshot FILE: the time, then a sample of each node, then of redis-server.
snapshot() {
    local pid line
    line=$(date +%s.%N)
    for pid in "${NODE_PIDS[@]}" "$REDIS_PID"; do line+=" $(sample "$pid")"; done
    echo "$line" >"$1"
}

REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
mkdir -p "$TMP/redis"
taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
    --appendonly no --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" &
REDIS_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -5 "$TMP/redis/redis.log")"
    sleep 0.05
done
say "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

# start_node SYSTEM NAME: one node on SERVER_CPU, its address appended to ADDRS.
ADDRS=()
start_node() {
    local system=$1 name=$2 out=$RESULTS/$2.out
    : >"$out"
    case $system in
        duplex)
            mkdir -p "$TMP/$name"
            taskset -c "$SERVER_CPU" "$DUPLEX" serve --listen 127.0.0.1:0 --data "$TMP/$name" \
                --config "$BENCH_DIR/cluster.toml" --redis "$REDIS_URL" >"$out" 2>"$out.err" &
            ;;
        socketio)
            taskset -c "$SERVER_CPU" node "$SOCKETIO/server.js" --port 0 --redis "$REDIS_URL" \
                >"$out" 2>"$out.err" &
            ;;
    esac
    NODE_PIDS+=($!)
    for ((i = 0; i < 200; i++)); do
        if [[ $(wc -l <"$out") -ge 1 ]]; then
            ADDRS+=("$(sed -n '1s|^listening on http://||p' "$out")")
            return
        fi
        sleep 0.05
    done
    die "$system node $name did not start: $(head -c 300 "$out.err")"
}

# run SYSTEM RATE TAG: both nodes, one load, both nodes stopped, Redis flushed.
run() {
    local system=$1 rate=$2 tag=$3
    local base=$RESULTS/$tag json=$RESULTS/$tag.json
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null
    ADDRS=()
    start_node "$system" "$tag-node1"
    start_node "$system" "$tag-node2"
    local load
    case $system in
        duplex)
            load=("$DUPLEX" bench "ws://${ADDRS[0]}/ws" --also "ws://${ADDRS[1]}/ws"
                --hub "$CHANNEL" --subscribers "$SUBSCRIBERS" --size "$SIZE" --rate "$rate"
                --duration "$DURATION" --warmup "$WARMUP" --marks --json)
            ;;
        socketio)
            load=(node "$SOCKETIO/load.js" "ws://${ADDRS[0]}" "ws://${ADDRS[1]}"
                --room "$CHANNEL" --subscribers "$SUBSCRIBERS" --size "$SIZE" --rate "$rate"
                --duration "$DURATION" --warmup "$WARMUP")
            ;;
    esac
    echo "taskset -c $CLIENT_CPU ${load[*]}" >>"$RESULTS/commands.txt"
    rm -f "$base.before" "$base.after"
    say "$tag: $system, $SUBSCRIBERS subscribers, $rate publications/s"
    set +e
    taskset -c "$CLIENT_CPU" "${load[@]}" 2>&1 >"$json" | while IFS= read -r line; do
        printf '%s\n' "$line" >>"$base.log"
        case $line in
            measuring) snapshot "$base.before" ;;
            measured) snapshot "$base.after" ;;
            subscribed:*) say "$tag: $line" ;;
        esac
    done
    set -e
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || say "$tag: a node exited during the run (see $RESULTS/$tag-node*.out.err)"
    done
    stop_nodes
    printf '%s\t%s\t%s\n' "$tag" "$system" "$rate" >>"$RESULTS/runs.tsv"
}

# sustained TAG: whether the run kept up (every delivery, no error, p99 bounded).
sustained() {
    python3 - "$RESULTS/$1.json" "$SUBSCRIBERS" "$P99_LIMIT_MS" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(1)
expected = r["published"] * int(sys.argv[2])
ok = (r["errors"] == 0 and r["messages"] >= 0.99 * expected
      and r["latency_us"]["p99"] <= 1000 * float(sys.argv[3]))
sys.exit(0 if ok else 1)
PY
}

: >"$RESULTS/runs.tsv"
{
    echo "date: $(date -u)"
    echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "kernel: $(uname -r)"
    echo "duplex: $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "redis-server: $(redis-server --version)"
    echo "node: $(node --version)"
    (cd "$SOCKETIO" && npm ls --depth=0 2>/dev/null | sed -n 's/^[^a-z@]*\([a-z@].*@[0-9].*\)$/npm: \1/p')
    echo "servers and redis-server on CPU $SERVER_CPU, the load on CPU $CLIENT_CPU"
} >"$RESULTS/machine.txt"

read -r -a systems <<<"$SYSTEMS"
for ((round = 1; round <= ROUNDS; round++)); do
    # Take turns: each round starts with the other system.
    order=("${systems[@]}")
    if ((round % 2 == 0 && ${#systems[@]} == 2)); then order=("${systems[1]}" "${systems[0]}"); fi
    for system in "${order[@]}"; do
        run "$system" "$RATE" "round$round-$system"
    done
done

if [[ " $SYSTEMS " == *" duplex "* ]]; then
    for rate in $STEP_RATES; do
        run duplex "$rate" "step-duplex-$rate"
        if ! sustained "step-duplex-$rate"; then
            say "duplex did not sustain $rate publications/s; the step-up stops"
            break
        fi
    done
fi

python3 - "$RESULTS" "$SUBSCRIBERS" "$HZ" "$P99_LIMIT_MS" <<'PY' | tee "$RESULTS/report.md"
import json, os, statistics, sys

results, subscribers, hz, p99_limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
names = {"duplex": "duplex serve", "socketio": "Socket.IO 4 + redis-adapter"}

def load(tag):
    base = os.path.join(results, tag)
    try:
        r = json.load(open(base + ".json"))
        before = [float(x) for x in open(base + ".before").read().split()]
        after = [float(x) for x in open(base + ".after").read().split()]
    except (OSError, ValueError) as err:
        return {"failed": str(err)}
    window = after[0] - before[0]
    diff = [a - b for a, b in zip(after[1:], before[1:])]  # user, system per process
    node_user = sum(diff[0:-2:2]) / hz
    node_sys = sum(diff[1:-2:2]) / hz
    node_s = node_user + node_sys
    redis_s = (diff[-2] + diff[-1]) / hz
    d = max(r["messages"], 1)
    return {
        "delivered_s": r["messages_per_sec"],
        "published_s": r["published_per_sec"],
        "expected_s": r["published_per_sec"] * subscribers,
        "p50": r["latency_us"]["p50"] / 1000,
        "p99": r["latency_us"]["p99"] / 1000,
        "max": r["latency_us"]["max"] / 1000,
        "server_us": 1e6 * node_s / d,
        "server_user_us": 1e6 * node_user / d,
        "server_sys_us": 1e6 * node_sys / d,
        "redis_us": 1e6 * redis_s / d,
        "server_pct": 100 * node_s / window,
        "redis_pct": 100 * redis_s / window,
        "client_pct": r["client_cpu_percent"],
        "errors": r["errors"],
        "window": window,
    }

runs = [line.rstrip("\n").split("\t") for line in open(os.path.join(results, "runs.tsv")) if line.strip()]
header = ("| run | published/s | delivered/s (of expected) | p50 ms | p99 ms | max ms "
          "| server CPU µs/delivery (user + system) | Redis CPU µs/delivery "
          "| servers CPU % | Redis CPU % | load CPU % | errors |")
rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

def row(tag, m):
    if "failed" in m:
        return f"| {tag} | failed: {m['failed']} | | | | | | | | | | |"
    flag = " ⚠" if m["client_pct"] > 90 else ""
    return (f"| {tag} | {m['published_s']:.1f} | {m['delivered_s']:,.0f} ({100 * m['delivered_s'] / max(m['expected_s'], 1):.1f}%) "
            f"| {m['p50']:,.1f} | {m['p99']:,.1f} | {m['max']:,.1f} "
            f"| {m['server_us']:.2f} ({m['server_user_us']:.2f} + {m['server_sys_us']:.2f}) "
            f"| {m['redis_us']:.3f} "
            f"| {m['server_pct']:.0f} | {m['redis_pct']:.1f} | {m['client_pct']:.0f}{flag} | {m['errors']} |")

measured = {tag: load(tag) for tag, _, _ in runs}
for system in names:
    tags = [tag for tag, s, _ in runs if s == system and tag.startswith("round")]
    if not tags:
        continue
    print(f"\n### {names[system]}, fixed rate\n")
    print(header)
    print(rule)
    for tag in tags:
        print(row(tag, measured[tag]))
    ok = [measured[t] for t in tags if "failed" not in measured[t]]
    if ok:
        med = lambda k: statistics.median(m[k] for m in ok)
        print(f"| median | {med('published_s'):.1f} | {med('delivered_s'):,.0f} | {med('p50'):,.1f} | {med('p99'):,.1f} "
              f"| {med('max'):,.1f} | {med('server_us'):.2f} ({med('server_user_us'):.2f} + {med('server_sys_us'):.2f}) "
              f"| {med('redis_us'):.3f} | {med('server_pct'):.0f} "
              f"| {med('redis_pct'):.1f} | {med('client_pct'):.0f} | |")

rounds = sorted({tag.split("-")[0] for tag, _, _ in runs if tag.startswith("round")}, key=lambda t: int(t[5:]))
ratios = []
lines = []
for rnd in rounds:
    d, s = measured.get(f"{rnd}-duplex"), measured.get(f"{rnd}-socketio")
    if d and s and "failed" not in d and "failed" not in s:
        ratio = d["server_us"] / s["server_us"]
        ratios.append(ratio)
        lines.append(f"| {rnd[5:]} | {d['server_us']:.2f} | {s['server_us']:.2f} | {ratio:.2f} "
                     f"| {d['redis_us'] / s['redis_us']:.2f} | {d['p99']:,.1f} | {s['p99']:,.1f} |")
if lines:
    print("\n### duplex ÷ Socket.IO, server CPU per delivery, round by round\n")
    print("| round | duplex µs | Socket.IO µs | duplex ÷ Socket.IO | Redis: duplex ÷ Socket.IO | duplex p99 ms | Socket.IO p99 ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for line in lines:
        print(line)
    print(f"\nmedian ratio: {statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} rounds)")

steps = [tag for tag, s, _ in runs if tag.startswith("step-")]
if steps:
    print("\n### duplex, stepping up the rate\n")
    print(header)
    print(rule)
    best = None
    for tag in steps:
        m = measured[tag]
        print(row(tag, m))
        if ("failed" not in m and m["errors"] == 0 and m["delivered_s"] >= 0.99 * m["expected_s"]
                and m["p99"] <= p99_limit):
            best = (tag, m)
    if best:
        tag, m = best
        print(f"\nhighest rate sustained: {m['published_s']:.1f} publications/s = {m['delivered_s']:,.0f} deliveries/s, "
              f"p99 {m['p99']:,.1f} ms ({tag}; load generator at {m['client_pct']:.0f}% of its CPU)")
PY
say "raw results: $RESULTS"
