#!/usr/bin/env bash
# Fan-out: server CPU per delivery, beside the floor. One publisher and N
# subscribers against the broadcast of the static_and_ws example and a
# channel of `duplex serve`, with `duplex bench --subscribers` as the load,
# and bench/floor (one write(2) of a pre-encoded frame per socket, no
# WebSocket library) as the least work a delivery can take here.
#
#   bench/fanout.sh                          # 1,000 and 10,000 subscribers, 64 B and 1 KiB
#   SUBSCRIBERS=10000 SIZES=64 ROUNDS=1 bench/fanout.sh
#
# Method: the server runs on SERVER_CPU, the load on CLIENT_CPU. Each server
# is started fresh twice per case, for a run of DURATION seconds and one of
# SHORT seconds (same connections, same warm-up); its user + system CPU
# ticks are read from /proc/PID/stat around each whole run. The difference
# between the two, divided by the difference in deliveries, is the CPU of
# the extra deliveries alone: connecting and subscribing cancel out. The
# floor measures its own CPU over its window. The cases (floor, example,
# hub) run interleaved, ROUNDS times, so that the machine's noise falls on
# all of them alike; the ratio to the floor is taken within each round.
#
# Environment (all optional):
#   SUBSCRIBERS="1000 10000"  subscriber counts
#   SIZES="64 1024"           payload bytes
#   DELIVERIES=100000         deliveries per second (the publishing rate is
#                             DELIVERIES / subscribers)
#   DURATION=10 SHORT=1       seconds measured in the long and short runs
#   ROUNDS=2                  interleaved rounds
#   SERVER_CPU=0 CLIENT_CPU=1 where the server and the load generator run
#   NO_BUILD=1                use the binaries already built
#
# The load generator's CPU (the largest of the long runs) is printed beside
# the figures: near 100%, the subscribers fall behind, the server's socket
# buffers fill and its writes queue, and the figure measures a backlog rather
# than the steady state; lower DELIVERIES then.
#
# Prints a Markdown table; the raw JSON of each run goes to
# bench/results/fanout-<date>/. Needs bash, taskset, python3, cargo, 2 CPUs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SUBSCRIBERS=${SUBSCRIBERS:-1000 10000}
SIZES=${SIZES:-64 1024}
DELIVERIES=${DELIVERIES:-100000}
DURATION=${DURATION:-10}
SHORT=${SHORT:-1}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DUPLEX=$ROOT/target/release/duplex
EXAMPLE=$ROOT/target/release/examples/static_and_ws
FLOOR=$BENCH_DIR/target/release/floor
RESULTS=$BENCH_DIR/results/fanout-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RESULTS"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p duplex-cli && cargo build --release -p duplex --example static_and_ws) >&2
    cargo build --release --manifest-path "$BENCH_DIR/Cargo.toml" -p floor >&2
fi

# shellcheck source=bench/server.sh
source "$BENCH_DIR/server.sh"
trap stop_server EXIT

# measure KIND N SIZE RATE SECONDS ROUND: one fresh server, one bench run;
# writes the bench JSON and the server's CPU ticks over the run.
measure() {
    local kind=$1 n=$2 size=$3 rate=$4 seconds=$5 round=$6
    local base=$RESULTS/$kind-$n-$size-$seconds-$round data=
    local user_before system_before user_after system_after
    local hub_args=()
    case $kind in
    example)
        start_server "$base.out" "$EXAMPLE" --listen 127.0.0.1:0 --queue 4096
        ;;
    hub)
        data=$(mktemp -d)
        start_server "$base.out" "$DUPLEX" serve --listen 127.0.0.1:0 \
            --data "$data" --config "$BENCH_DIR/hub-fanout.toml"
        hub_args=(--hub fanout:bench)
        ;;
    esac
    read -r user_before system_before < <(cpu_ticks_split "$SERVER_PID")
    taskset -c "$CLIENT_CPU" "$DUPLEX" bench "ws://$ADDR/ws" --subscribers "$n" "${hub_args[@]}" \
        --size "$size" --rate "$rate" --duration "$seconds" --json >"$base.json" || true
    read -r user_after system_after < <(cpu_ticks_split "$SERVER_PID")
    echo "$((user_after - user_before)) $((system_after - system_before))" >"$base.ticks"
    stop_server
    if [[ -n $data ]]; then rm -rf "$data"; fi
    echo "done: $kind $n subscribers, $size B, $seconds s, round $round" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    for n in $SUBSCRIBERS; do
        rate=$(python3 -c "print($DELIVERIES / $n)")
        for size in $SIZES; do
            taskset -c "$SERVER_CPU" "$FLOOR" --connections "$n" --size "$size" --rate "$rate" \
                --duration "$DURATION" --writer-cpu "$SERVER_CPU" --reader-cpu "$CLIENT_CPU" \
                --json >"$RESULTS/floor-$n-$size-$DURATION-$round.json"
            echo "done: floor $n subscribers, $size B, round $round" >&2
            for kind in example hub; do
                measure "$kind" "$n" "$size" "$rate" "$DURATION" "$round"
                measure "$kind" "$n" "$size" "$rate" "$SHORT" "$round"
            done
        done
    done
done

python3 - "$RESULTS" "$DURATION" "$SHORT" "$(getconf CLK_TCK)" <<'PY'
import glob, json, os, statistics, sys
results, long_s, short_s, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None

def ticks(path):
    """User and system ticks of a run (one number, the sum, in older results)."""
    fields = [int(x) for x in open(path).read().split()]
    return (fields[0], fields[1]) if len(fields) == 2 else (None, fields[0])

def split(total, user):
    return f"{total:.2f}" if user is None else f"{total:.2f} ({user:.2f} + {total - user:.2f})"

cases = sorted({tuple(os.path.basename(p)[:-5].split("-")[1:3])
                for p in glob.glob(os.path.join(results, "floor-*.json"))},
               key=lambda c: (int(c[0]), int(c[1])))
rounds = sorted({int(os.path.basename(p)[:-5].split("-")[4])
                 for p in glob.glob(os.path.join(results, "floor-*.json"))})
labels = {"example": "static_and_ws broadcast", "hub": "duplex serve, channel fanout:bench"}
print("| server | subscribers | payload B | CPU per delivery µs (user + system), each round "
      "| ratio to the floor, each round | median ratio | p99 µs | load CPU % | errors |")
print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
for n, size in cases:
    floors, floor_cells = {}, []
    for r in rounds:
        f = load(os.path.join(results, f"floor-{n}-{size}-{long_s}-{r}.json"))
        if f and f.get("cpu_per_delivery_us"):
            floors[r] = f["cpu_per_delivery_us"]
            user = 1e6 * f["user_seconds"] / f["deliveries"] if "user_seconds" in f else None
            floor_cells.append(split(floors[r], user))
    print(f"| floor (bench/floor) | {int(n):,} | {size} | {', '.join(floor_cells)} | 1 | 1 | | | |")
    for kind in ("example", "hub"):
        costs, ratios, p99s, loads, errors = [], [], [], [], 0
        for r in rounds:
            base = os.path.join(results, f"{kind}-{n}-{size}")
            lo, sh = load(f"{base}-{long_s}-{r}.json"), load(f"{base}-{short_s}-{r}.json")
            if not lo or not sh:
                costs.append("failed")
                continue
            (lu, lt), (su, st) = ticks(f"{base}-{long_s}-{r}.ticks"), ticks(f"{base}-{short_s}-{r}.ticks")
            deliveries = lo["messages"] - sh["messages"]
            errors += lo["errors"] + sh["errors"]
            p99s.append(lo["latency_us"]["p99"])
            loads.append(lo.get("client_cpu_percent") or 0)
            if deliveries <= 0:
                costs.append("n/a")
                continue
            per = 1e6 / hz / deliveries
            total = per * ((lt - st) if lu is None else (lu + lt - su - st))
            user = None if lu is None else per * (lu - su)
            costs.append(split(total, user))
            if r in floors:
                ratios.append(total / floors[r])
        median = f"**{statistics.median(ratios):.2f}x**" if ratios else ""
        p99 = f"{max(p99s):,.0f}" if p99s else ""
        busiest = f"{max(loads):.0f}" if loads else ""
        print(f"| {labels[kind]} | {int(n):,} | {size} | {', '.join(costs)} "
              f"| {', '.join(f'{x:.2f}x' for x in ratios)} | {median} | {p99} | {busiest} | {errors} |")
PY
echo "raw results: $RESULTS" >&2
