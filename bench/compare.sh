#!/usr/bin/env bash
# duplex echo against the echo servers of tokio-tungstenite, tokio-websockets and
# fastwebsockets, side by side, with `duplex bench` as the load generator.
#
#   bench/compare.sh                       # 3 rounds of 5 s per case and server
#   ROUNDS=5 DURATION=10 bench/compare.sh  # more, longer runs
#
# Environment (all optional):
#   ROUNDS=3          rounds; each round runs every server once per case, in turn
#   DURATION=5        seconds of load per run (duplex bench --duration)
#   SERVER_CPU=0      the CPU every server is pinned to (taskset -c)
#   CLIENT_CPU=1      the CPU the load generator is pinned to
#   SERVERS="..."     the servers to run, by name (default: all of them):
#                     duplex tungstenite tungstenite-4k tokio-websockets fastwebsockets
#   DEFLATE=1         0 skips the permessage-deflate cases (duplex only)
#   NO_BUILD=1        use the binaries already built (default: build them first)
#   STEAL_LIMIT=5     a run whose CPUs lost more than this percentage of the
#                     window to the hypervisor (steal time, on a virtual machine)
#                     is flagged and left out of the "quiet rounds" ratios
#   BENCH_CLIENT=PATH a load generator with the interface of `duplex bench`
#                     (default: target/release/duplex)
#
# Progress goes to stderr; the report (Markdown) goes to stdout and, with the raw
# JSON of every run, the server logs and every command line, to
# bench/results/<date>/. Needs bash, taskset, lscpu, python3, cargo and 2 CPUs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DEFLATE=${DEFLATE:-1}
NO_BUILD=${NO_BUILD:-0}
DUPLEX=$ROOT/target/release/duplex
CLIENT=${BENCH_CLIENT:-$DUPLEX}
PEERS_DIR=$BENCH_DIR/target/release
# A client above this share of its CPU may be the bottleneck, not the server.
CLIENT_CPU_LIMIT=90
STEAL_LIMIT=${STEAL_LIMIT:-5}

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $STEAL_LIMIT =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "STEAL_LIMIT must be a percentage, not '$STEAL_LIMIT'"
[[ $DURATION =~ ^[0-9]+(\.[0-9]+)?$ && ! $DURATION =~ ^0+(\.0*)?$ ]] ||
    die "DURATION must be a positive number of seconds, not '$DURATION'"
for tool in taskset lscpu python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU (SERVER_CPU)"
taskset -c "$CLIENT_CPU" true 2>/dev/null || die "cannot pin to CPU $CLIENT_CPU (CLIENT_CPU)"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU must differ"

# ---------------------------------------------------------------- build
# One build at a time: duplex from the root workspace, then the peers from
# bench/'s own workspace. Both use cargo's default release profile.
BUILD_DUPLEX=(cargo build --release -p duplex-cli)
BUILD_PEERS=(cargo build --release --manifest-path bench/Cargo.toml)
if [[ $NO_BUILD != 1 ]]; then
    echo "building duplex: ${BUILD_DUPLEX[*]}" >&2
    (cd "$ROOT" && "${BUILD_DUPLEX[@]}") >&2
    echo "building the peers: ${BUILD_PEERS[*]}" >&2
    (cd "$ROOT" && "${BUILD_PEERS[@]}") >&2
fi
for bin in "$DUPLEX" "$PEERS_DIR"/echo-{tungstenite,tokio-websockets,fastwebsockets}; do
    [[ -x $bin ]] || die "$bin is missing (run without NO_BUILD=1)"
done
"$CLIENT" bench --help >/dev/null 2>&1 ||
    die "'$CLIENT bench --help' fails: the load generator is not there yet (or set BENCH_CLIENT)"

# ---------------------------------------------------------------- what runs
# name|label|server command (--listen 127.0.0.1:0 is added)
ALL_PLAIN=(
    "duplex|duplex|$DUPLEX echo --threads 1 --no-deflate"
    "tungstenite|tokio-tungstenite|$PEERS_DIR/echo-tungstenite"
    # tungstenite zero-fills its whole read buffer (128 KiB by default, the size
    # its docs recommend for high read loads) before every read from the socket;
    # its docs' other example size, 4 KiB, is much faster here. Both are shown.
    "tungstenite-4k|tokio-tungstenite, 4 KiB read buffer|$PEERS_DIR/echo-tungstenite --read-buffer-size 4096"
    "tokio-websockets|tokio-websockets|$PEERS_DIR/echo-tokio-websockets"
    "fastwebsockets|fastwebsockets|$PEERS_DIR/echo-fastwebsockets"
)
# With permessage-deflate only duplex takes part: none of the three peers
# implements it (see the note in the report).
ALL_DEFLATE=(
    "duplex|duplex|$DUPLEX echo --threads 1"
)
SERVERS=${SERVERS:-duplex tungstenite tungstenite-4k tokio-websockets fastwebsockets}
SERVERS_PLAIN=()
SERVERS_DEFLATE=()
for wanted in $SERVERS; do
    found=0
    for entry in "${ALL_PLAIN[@]}"; do
        if [[ ${entry%%|*} == "$wanted" ]]; then
            SERVERS_PLAIN+=("$entry")
            found=1
        fi
    done
    ((found)) || die "unknown server '$wanted' in SERVERS"
    for entry in "${ALL_DEFLATE[@]}"; do
        if [[ ${entry%%|*} == "$wanted" && $DEFLATE == 1 ]]; then
            SERVERS_DEFLATE+=("$entry")
        fi
    done
done
((${#SERVERS_PLAIN[@]})) || die "SERVERS is empty"
# connections|message size in bytes|label
CASES=(
    "100|0|100 × 0 B"
    "100|20|100 × 20 B"
    "10|1024|10 × 1 KiB"
    "10|16384|10 × 16 KiB"
    "200|16384|200 × 16 KiB"
)

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RESULTS=$BENCH_DIR/results/$STAMP
mkdir -p "$RESULTS"
MANIFEST=$RESULTS/runs.tsv
COMMANDS=$RESULTS/commands.txt
REPORT=$RESULTS/report.md
printf 'section\tcase\tconnections\tsize\tlabel\tserver\tserver_label\tround\tjson\tstatus\n' >"$MANIFEST"
: >"$COMMANDS"

# The server of the run in progress, killed on any exit.
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

report() {
    printf '%s\n' "$@" | tee -a "$REPORT"
}

# Whether a child is still running (kill -0 also succeeds on an unreaped zombie).
running() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $state && $state != Z* ]]
}

# ---------------------------------------------------------------- header
peer_versions=$(awk -F'"' '
    /^name = / { name = $2 }
    /^version = / && name ~ /^(tokio-tungstenite|tungstenite|tokio-websockets|fastwebsockets|hyper|tokio)$/ {
        printf "%s%s %s", sep, name, $2; sep = ", "
    }' "$BENCH_DIR/Cargo.lock")
duplex_tokio=$(awk -F'"' '/^name = / { n = $2 } /^version = / && n == "tokio" { print $2 }' "$ROOT/Cargo.lock")
duplex_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    duplex_rev+=" (with uncommitted changes)"
fi
cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
total_runs=$(((${#SERVERS_PLAIN[@]} + ${#SERVERS_DEFLATE[@]}) * ${#CASES[@]} * ROUNDS))
# Each run: the load generator's warm-up (1 s by default in duplex bench), the
# measurement, starting and stopping the server.
awk_secs=$(awk -v d="$DURATION" -v n="$total_runs" 'BEGIN { printf "%.0f", (d + 2) * n }')

report "# duplex echo and its peers, side by side" \
    "" \
    "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
    "- machine: $(nproc) CPUs ($cpu_model), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)" \
    "- toolchain: $(rustc --version 2>/dev/null || echo 'rustc: unknown'); release profile: cargo's default for both workspaces" \
    "- duplex: $duplex_rev (tokio $duplex_tokio); peers: $peer_versions" \
    "- every server on CPU $SERVER_CPU, the load generator on CPU $CLIENT_CPU; $ROUNDS round(s) of $DURATION s per case and server, servers in turn within a round (each round starts with the next one); a fresh server per run" \
    "- raw results: bench/results/$STAMP/" \
    "" \
    "## Commands" \
    "" \
    '```sh' \
    "(root)  ${BUILD_DUPLEX[*]}" \
    "(root)  ${BUILD_PEERS[*]}"
for entry in "${SERVERS_PLAIN[@]}" "${SERVERS_DEFLATE[@]}"; do
    IFS='|' read -r _ _ cmd <<<"$entry"
    report "taskset -c $SERVER_CPU ${cmd#"$ROOT/"} --listen 127.0.0.1:0"
done
report "taskset -c $CLIENT_CPU ${CLIENT#"$ROOT/"} bench ws://ADDR/ --connections N --size BYTES --duration $DURATION --json [--deflate]" \
    '```' \
    "" \
    "ADDR is what the server printed; N and BYTES are the case's. Every exact command: commands.txt beside the results." \
    ""
echo "$total_runs runs of $DURATION s: about $((awk_secs / 60 + 1)) minutes" >&2

# ---------------------------------------------------------------- one run
cpu_ticks() { # pid: user + system CPU ticks so far, from /proc
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null
}

# The steal and total ticks so far of the server's and the client's CPU, from
# /proc/stat: steal is time the hypervisor gave the virtual CPU to something
# else, which slows a run down whatever the server.
steal_ticks() {
    awk -v s="cpu$SERVER_CPU" -v c="cpu$CLIENT_CPU" '$1 == s || $1 == c {
        total = 0
        for (i = 2; i <= 9; i++) total += $i
        ticks[$1] = $9 " " total
    }
    END { if ((s in ticks) && (c in ticks)) print ticks[s], ticks[c] }' /proc/stat
}

run_one() { # section case_index connections size label server_name server_label command round
    local section=$1 case_index=$2 connections=$3 size=$4 label=$5 name=$6 server_label=$7 cmd=$8 round=$9
    local dir="$RESULTS/$section/$connections-x-$size"
    local base="$dir/$name-round$round"
    local status=ok line="" addr
    mkdir -p "$dir"

    local -a server_cmd client_cmd
    read -r -a server_cmd <<<"$cmd"
    server_cmd=(taskset -c "$SERVER_CPU" "${server_cmd[@]}" --listen 127.0.0.1:0)
    : >"$base.server.out" # there before the server's shell opens it: polled below
    "${server_cmd[@]}" >"$base.server.out" 2>"$base.server.err" &
    SERVER_PID=$!
    # The first line, complete (ended by a newline): listening on ws://ADDR.
    for ((i = 0; i < 200; i++)); do
        if [[ $(wc -l <"$base.server.out") -ge 1 ]]; then
            line=$(head -n1 "$base.server.out")
            break
        fi
        running "$SERVER_PID" || break
        sleep 0.05
    done
    if [[ $line != "listening on ws://"* ]]; then
        status="server did not start: $(head -c 300 "$base.server.err" | tr '\t\n' '  ' | sed 's/ *$//')"
        echo "${server_cmd[*]}  # $status" >>"$COMMANDS"
    else
        addr=${line#listening on ws://}
        client_cmd=(taskset -c "$CLIENT_CPU" "$CLIENT" bench "ws://$addr/" --connections "$connections"
            --size "$size" --duration "$DURATION" --json)
        if [[ $section == deflate ]]; then
            client_cmd+=(--deflate)
        fi
        printf '%s\n%s\n' "${server_cmd[*]}" "${client_cmd[*]}" >>"$COMMANDS"
        local limit rc=0
        limit=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d * 3 + 30 }')
        # The server's CPU over the measurement window (duplex bench warms up
        # for 1 s first): from /proc, sampled beside the load generator.
        timeout "$limit" "${client_cmd[@]}" >"$base.json" 2>"$base.client.err" &
        local client_pid=$! ticks_before ticks_after steal_before steal_after
        sleep 1.2
        ticks_before=$(cpu_ticks "$SERVER_PID")
        steal_before=$(steal_ticks)
        sleep "$(awk -v d="$DURATION" 'BEGIN { printf "%.2f", d - 0.4 }')"
        ticks_after=$(cpu_ticks "$SERVER_PID")
        steal_after=$(steal_ticks)
        wait "$client_pid" || rc=$?
        awk -v a="$ticks_before" -v b="$ticks_after" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
            'BEGIN { if (a != "" && b != "") printf "%.1f\n", 100 * (b - a) / hz / (d - 0.4) }' \
            >"$base.server-cpu"
        # Steal on the server's CPU, then on the client's, in percent of the window.
        awk -v a="$steal_before" -v b="$steal_after" 'BEGIN {
            n = split(a, x, " "); split(b, y, " ")
            if (n == 4 && y[2] > x[2] && y[4] > x[4])
                printf "%.1f %.1f\n", 100 * (y[1] - x[1]) / (y[2] - x[2]), 100 * (y[3] - x[3]) / (y[4] - x[4])
        }' >"$base.steal"
        if ! running "$SERVER_PID"; then
            status="server exited during the run: $(tail -c 300 "$base.server.err" | tr '\t\n' '  ' | sed 's/ *$//')"
        elif ((rc != 0)); then
            status="load generator failed (exit $rc)"
        fi
    fi
    cleanup
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$case_index" "$connections" "$size" \
        "$label" "$name" "$server_label" "$round" "${base#"$RESULTS/"}.json" "$status" >>"$MANIFEST"

    local summary
    summary=$(python3 - "$base.json" <<'PY' 2>/dev/null || echo "no JSON"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['messages_per_sec']:,.0f} msg/s, p50 {r['latency_us']['p50']:,.0f} µs, "
      f"p99 {r['latency_us']['p99']:,.0f} µs, client CPU {r['client_cpu_percent']:.0f}%, "
      f"errors {r['errors']}")
PY
    )
    RUN_NO=$((RUN_NO + 1))
    echo "[$RUN_NO/$total_runs] $section, $label, $server_label, round $round: ${status/#ok/$summary}" >&2
    sleep 0.5
}

run_section() { # section servers...
    local section=$1
    shift
    local servers=("$@") c r k entry connections size label name server_label cmd
    for ((c = 0; c < ${#CASES[@]}; c++)); do
        IFS='|' read -r connections size label <<<"${CASES[c]}"
        for ((r = 1; r <= ROUNDS; r++)); do
            for ((k = 0; k < ${#servers[@]}; k++)); do
                entry=${servers[(k + r - 1) % ${#servers[@]}]}
                IFS='|' read -r name server_label cmd <<<"$entry"
                run_one "$section" "$c" "$connections" "$size" "$label" "$name" "$server_label" "$cmd" "$r"
            done
        done
    done
}

RUN_NO=0
run_section plain "${SERVERS_PLAIN[@]}"
if ((${#SERVERS_DEFLATE[@]})); then
    run_section deflate "${SERVERS_DEFLATE[@]}"
fi

# ---------------------------------------------------------------- the tables
python3 "$BENCH_DIR/report.py" "$RESULTS" "$CLIENT_CPU_LIMIT" "$DEFLATE" "$STEAL_LIMIT" | tee -a "$REPORT"
echo "report and raw results: $RESULTS" >&2
