#!/usr/bin/env bash
# Sockudo against `duplex serve`: one channel, N subscribers, publications
# at a fixed rate; the servers' CPU time per delivery and their memory per
# subscriber. Sockudo (a Pusher-protocol server in Rust) is loaded by
# bench/pusher-load (Pusher protocol 7 subscribers, publications through the
# Pusher HTTP events API); `duplex serve --config bench/hub-fanout.toml` by
# `duplex bench --subscribers N --hub fanout:bench`. The two take turns,
# ROUNDS times.
#
#   bench/sockudo.sh                                   # 10,000 subscribers, 10/s, 2 rounds
#   SUBSCRIBERS=1000 ROUNDS=1 DURATION=3 bench/sockudo.sh   # a quick look
#
# Environment (all optional):
#   SUBSCRIBERS=10000         subscribers of the one channel
#   SIZE=64                   bytes of data per publication
#   RATE=10                   publications per second
#   DURATION=10               seconds measured by the long run (the short one: 1)
#   ROUNDS=2                  rounds; each runs both servers, long and short
#   SERVER_CPU=0 CLIENT_CPU=1 where the server and the load run
#   SOCKUDO=/root/sockudo/bin/sockudo   the Sockudo binary
#   NO_BUILD=1                use the binaries already built
#
# CPU per delivery: every run has a fresh server, and its CPU time (utime +
# stime from /proc/PID/stat) is read before the load starts and after it
# exits, so connecting, subscribing, warming up and closing are counted. A
# run of DURATION seconds and one of 1 second differ only in the
# publications of the extra DURATION - 1 seconds, so
#   CPU per delivery = (CPU_long - CPU_short) / (N × RATE × (DURATION - 1)).
# The deliveries the loads counted in their windows are printed as a check.
#
# Memory per subscriber: VmRSS of the server (/proc/PID/status) once it has
# started, and again when the load of the long run prints `subscribed:`
# (every subscriber connected and subscribed; publishing starts then);
# the difference divided by N.
#
# Sockudo gets a configuration written into a temporary folder: 127.0.0.1
# only (its Prometheus metrics too, on a second free port), the local
# adapter, the memory cache and app manager, no queue (nothing external), no
# rate limits, no connection limits; it runs in that folder with an empty
# environment, so that no config/ folder and no variable such as HOST or
# PORT overrides it. The machine should be otherwise idle: a warning says
# when it is not. Prints a Markdown report; the raw JSON and logs go to
# bench/results/sockudo-<date>/. Needs bash, taskset, python3, cargo, 2 CPUs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SUBSCRIBERS=${SUBSCRIBERS:-10000}
SIZE=${SIZE:-64}
RATE=${RATE:-10}
DURATION=${DURATION:-10}
SHORT=1
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SOCKUDO=${SOCKUDO:-/root/sockudo/bin/sockudo}
DUPLEX=$ROOT/target/release/duplex
LOAD=$BENCH_DIR/target/release/pusher-load
APP_ID=bench
APP_KEY=bench-key
APP_SECRET=bench-secret
CHANNEL=bench
HZ=$(getconf CLK_TCK)
RESULTS=$BENCH_DIR/results/sockudo-$(date -u +%Y-%m-%dT%H%M%SZ)

fail() {
    echo "sockudo.sh: $*" >&2
    exit 1
}

if [[ ! -x $SOCKUDO ]]; then
    fail "no Sockudo binary at $SOCKUDO (set SOCKUDO=PATH). Install it with:
    apt-get install protobuf-compiler && cargo install sockudo --version 5.2.0 --locked
(into ~/.cargo/bin; add --root /root/sockudo for the default path)"
fi
if ! awk -v d="$DURATION" -v s="$SHORT" 'BEGIN { exit !(d > s) }'; then
    fail "DURATION ($DURATION) must be over $SHORT s, the short run's"
fi
for value in "$SUBSCRIBERS" "$SIZE" "$ROUNDS"; do
    [[ $value =~ ^[1-9][0-9]*$ ]] || fail "SUBSCRIBERS, SIZE and ROUNDS must be positive whole numbers"
done
SOCKUDO_VERSION=$("$SOCKUDO" --version 2>/dev/null | head -1)
[[ -n $SOCKUDO_VERSION ]] || fail "$SOCKUDO --version printed nothing"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p duplex-cli) >&2
    cargo build --release --manifest-path "$BENCH_DIR/Cargo.toml" -p pusher-load >&2
fi
[[ -x $DUPLEX ]] || fail "$DUPLEX is missing (cargo build --release -p duplex-cli)"
[[ -x $LOAD ]] || fail "$LOAD is missing (cargo build --release --manifest-path bench/Cargo.toml -p pusher-load)"
DUPLEX_VERSION=$("$DUPLEX" --version 2>/dev/null | head -1 || true)

# The servers hold N sockets too.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < SUBSCRIBERS + 64)); then
    fail "$SUBSCRIBERS subscribers need $((SUBSCRIBERS + 64)) open files; the limit here is $(ulimit -n)"
fi

busy_ticks() { # busy CPU ticks of the whole machine so far
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Other work on the machine skews both the CPU and the latency measured.
idle_before=$(busy_ticks)
sleep 1
busy=$(($(busy_ticks) - idle_before))
if ((busy * 100 > 10 * HZ)); then
    echo "sockudo.sh: warning: the machine is not idle: $busy ticks of CPU time used in the last second (one CPU gives $HZ); the figures will be skewed" >&2
fi

mkdir -p "$RESULTS"

# shellcheck source=bench/server.sh
source "$BENCH_DIR/server.sh"
SERVER_DIR=
cleanup() {
    stop_server
    if [[ -n $SERVER_DIR ]]; then
        rm -rf "$SERVER_DIR"
        SERVER_DIR=
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_sockudo OUT: writes Sockudo's configuration into a new folder
# (SERVER_DIR), runs Sockudo there on SERVER_CPU (SERVER_PID) with an empty
# environment, and sets ADDR once it logs that it listens.
start_sockudo() {
    local out=$1 port metrics_port
    SERVER_DIR=$(mktemp -d)
    port=$(free_port)
    metrics_port=$(free_port)
    cat >"$SERVER_DIR/config.toml" <<EOF
# Sockudo's configuration for bench/sockudo.sh.
host = "127.0.0.1"
port = $port
mode = "production"
debug = false
# No limit on the node's connections (0), no wait on shutdown.
max_connections = 0
shutdown_grace_period = 0

[logging]
colors_enabled = false

[adapter]
driver = "local"

[cache]
driver = "memory"

[queue]
driver = "none"

[rate_limiter]
enabled = false

[metrics]
enabled = true
host = "127.0.0.1"
port = $metrics_port

[event_limits]
max_payload_in_kb = $((SIZE / 1024 + 100))

[app_manager]
driver = "memory"

[[app_manager.array.apps]]
id = "$APP_ID"
key = "$APP_KEY"
secret = "$APP_SECRET"
enabled = true
max_connections = 0
enable_client_messages = false
max_client_events_per_second = 0
EOF
    : >"$out"
    : >"$out.err"
    (cd "$SERVER_DIR" && exec env -i PATH="$PATH" taskset -c "$SERVER_CPU" \
        "$SOCKUDO" --config "$SERVER_DIR/config.toml") >"$out" 2>"$out.err" &
    SERVER_PID=$!
    for ((i = 0; i < 200; i++)); do
        if grep -q 'http server listening' "$out" "$out.err"; then
            ADDR=127.0.0.1:$port
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    fail "Sockudo did not start: $(tail -c 600 "$out.err") $(tail -c 600 "$out")"
}

cpu_busy() { # cpu: busy ticks of that CPU so far (all but idle and iowait)
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}


rss_kib() { # pid: resident set size in KiB
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# measure BASE COMMAND...: runs the load on CLIENT_CPU against the server
# just started (JSON to BASE.json, stderr to BASE.err), and writes the
# server's CPU ticks over the whole run to BASE.ticks, its RSS before the
# load to BASE.rss-before and at the `subscribed:` mark to BASE.rss-subscribed.
measure() {
    local base=$1
    shift
    local before after busy_before load status=0 line subscribed=
    sleep 0.5
    rss_kib "$SERVER_PID" >"$base.rss-before"
    busy_before=$(cpu_busy "$SERVER_CPU")
    before=$(cpu_ticks "$SERVER_PID")
    : >"$base.err"
    taskset -c "$CLIENT_CPU" "$@" >"$base.json" 2>"$base.err" &
    load=$!
    # Until the mark: poll with builtins only, not to take the server's CPU.
    while [[ -z $subscribed ]] && kill -0 "$load" 2>/dev/null; do
        while IFS= read -r line; do
            if [[ $line == subscribed:* ]]; then
                subscribed=1
                rss_kib "$SERVER_PID" >"$base.rss-subscribed"
                break
            fi
        done <"$base.err"
        [[ -n $subscribed ]] || sleep 0.05
    done
    wait "$load" || status=$?
    # The server's own handling of the closes, too.
    sleep 0.5
    after=$(cpu_ticks "$SERVER_PID")
    echo "$((after - before))" >"$base.ticks"
    # The server's CPU busy with anything but the server (interrupts and
    # other processes): a check that nothing else ran there.
    echo "$(($(cpu_busy "$SERVER_CPU") - busy_before - (after - before)))" >"$base.other"
    echo "$status" >"$base.status"
    if [[ $status != 0 ]]; then
        echo "sockudo.sh: the load exited with $status: $(tail -c 400 "$base.err")" >&2
    fi
}

for ((round = 1; round <= ROUNDS; round++)); do
    for seconds in "$DURATION" "$SHORT"; do
        base=$RESULTS/sockudo-r$round-d$seconds
        start_sockudo "$base.server"
        measure "$base" "$LOAD" \
            --url "ws://$ADDR/app/$APP_KEY?protocol=7&client=bench&version=1" \
            --api "http://$ADDR" --app-id "$APP_ID" --key "$APP_KEY" --secret "$APP_SECRET" \
            --channel "$CHANNEL" --subscribers "$SUBSCRIBERS" --size "$SIZE" --rate "$RATE" \
            --duration "$seconds" --warmup 1 --marks --json
        cleanup
        echo "done: Sockudo, round $round, $seconds s" >&2
    done
    for seconds in "$DURATION" "$SHORT"; do
        base=$RESULTS/duplex-r$round-d$seconds
        SERVER_DIR=$(mktemp -d)
        start_server "$base.server" "$DUPLEX" serve --listen 127.0.0.1:0 \
            --data "$SERVER_DIR" --config "$BENCH_DIR/hub-fanout.toml"
        measure "$base" "$DUPLEX" bench "ws://$ADDR/ws" --subscribers "$SUBSCRIBERS" \
            --hub fanout:bench --size "$SIZE" --rate "$RATE" --duration "$seconds" \
            --warmup 1 --marks --json
        cleanup
        echo "done: duplex serve, round $round, $seconds s" >&2
    done
done

python3 - "$RESULTS" "$SUBSCRIBERS" "$SIZE" "$RATE" "$DURATION" "$SHORT" "$ROUNDS" "$HZ" \
    "$SOCKUDO_VERSION" "$DUPLEX_VERSION" <<'PY'
import json, os, sys

results, n, size, rate, long_s, short_s, rounds, hz = sys.argv[1:9]
sockudo_version, duplex_version = sys.argv[9:11]
n, size, rounds, hz = int(n), int(size), int(rounds), int(hz)
rate, long_s, short_s = float(rate), float(long_s), float(short_s)
def version(text):
    return text.split()[-1] if text.split() else "?"
servers = [
    ("sockudo", f"Sockudo {version(sockudo_version)}"),
    ("duplex", f"duplex serve {version(duplex_version)}"),
]

def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""

def run(server, r, seconds):
    base = os.path.join(results, f"{server}-r{r}-d{seconds:g}")
    try:
        with open(base + ".json") as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = None
    ticks = read(base + ".ticks")
    other = read(base + ".other")
    rss = (read(base + ".rss-before"), read(base + ".rss-subscribed"))
    return {
        "report": report,
        "ticks": int(ticks) if ticks.isdigit() else None,
        "rss": tuple(int(x) if x.isdigit() else None for x in rss),
        "status": read(base + ".status"),
        "other": int(other) if other.lstrip("-").isdigit() else None,
    }

def fmt(x, digits):
    return "failed" if x is None else f"{x:,.{digits}f}"

extra = n * rate * (long_s - short_s)
print(f"{n:,} subscribers of one channel, {size}-byte data, {rate:g} publications/s; "
      f"runs of {long_s:g} s and {short_s:g} s measured (1 s of warm-up each), {rounds} round(s).")
print()
print("| server | subscribers | payload | CPU per delivery µs (each round) | p99 µs | memory per subscriber KiB |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
checks = []
for server, label in servers:
    cpu, p99, memory = [], [], []
    for r in range(1, rounds + 1):
        long_run, short_run = run(server, r, long_s), run(server, r, short_s)
        if long_run["ticks"] is not None and short_run["ticks"] is not None:
            per_delivery = (long_run["ticks"] - short_run["ticks"]) / hz * 1e6 / extra
            # The loads' own counts should differ by the same deliveries.
            counted = [(one["report"] or {}).get("delivered", (one["report"] or {}).get("messages"))
                       for one in (long_run, short_run)]
            off = None in counted or abs(counted[0] - counted[1] - extra) > 0.01 * extra
            # The extra deliveries should cost more than the rest of a run
            # (connecting, warming up, closing), which varies from run to run.
            small = long_run["ticks"] - short_run["ticks"] < short_run["ticks"]
            cpu.append(f"{per_delivery:,.2f}" + (" ⚠" if off else "") + (" †" if small else ""))
        else:
            cpu.append(None)
        report = long_run["report"]
        p99.append(report["latency_us"]["p99"] if report else None)
        before, subscribed = long_run["rss"]
        memory.append((subscribed - before) / n if before and subscribed else None)
        for seconds, one in ((long_s, long_run), (short_s, short_run)):
            rep = one["report"] or {}
            delivered = rep.get("delivered", rep.get("messages"))
            published = rep.get("published")
            checks.append((label, r, seconds, one["ticks"], one["other"], published, delivered,
                           published * n if published is not None else None,
                           rep.get("errors"), one["status"]))
    print(f"| {label} | {n:,} | {size} B | {' / '.join(x or 'failed' for x in cpu)} "
          f"| {' / '.join(fmt(x, 0) for x in p99)} | {' / '.join(fmt(x, 1) for x in memory)} |")
print()
print(f"CPU per delivery: (server CPU of the {long_s:g} s run - of the {short_s:g} s run) / "
      f"{extra:,.0f} deliveries ({n:,} × {rate:g}/s × {long_s - short_s:g} s). "
      "p99: publish-to-delivery, the long run. Memory: (VmRSS with every subscriber "
      "subscribed - VmRSS at start) / subscribers, the long run. ⚠: the deliveries the "
      "loads counted differ from that by over 1% (see the check below), so the figure is off. "
      "†: the long run took less extra CPU time than the whole short run took, so run-to-run "
      "noise may dominate; use more subscribers or a longer DURATION.")
print()
print("Check, per run: the server's CPU time over the whole run, the time its CPU spent on "
      "anything else (interrupts, other processes: near 0 on a quiet machine), and what the "
      "load counted in its window.")
print()
print("| server | round | measured s | server CPU s | other on its CPU s | published | delivered | subscribers × published | errors | exit |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, r, seconds, ticks, other, published, delivered, expected, errors, status in checks:
    seconds_of = lambda t: "failed" if t is None else f"{t / hz:,.2f}"
    cell = lambda x: "failed" if x is None else f"{x:,}"
    print(f"| {label} | {r} | {seconds:g} | {seconds_of(ticks)} | {seconds_of(None if other is None else max(other, 0))} "
          f"| {cell(published)} | {cell(delivered)} | {cell(expected)} | {cell(errors)} | {status} |")
PY
echo "raw results: $RESULTS" >&2
