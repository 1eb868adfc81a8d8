# Sourced by fanout.sh and sockudo.sh: one server at a time, pinned to
# SERVER_CPU, started, measured and stopped.
#
#   start_server OUT COMMAND...  runs COMMAND on SERVER_CPU (SERVER_PID), its
#                                stdout to OUT and stderr to OUT.err, and sets
#                                ADDR from its first line ("listening on
#                                http://ADDR"). Not to be called in a
#                                subshell: SERVER_PID must reach stop_server.
#   stop_server                  stops it: SIGTERM, up to 5 s, then SIGKILL.
#   cpu_ticks PID                user + system CPU ticks of PID so far.
#   cpu_ticks_split PID          the same, as two numbers: user, then system.

SERVER_PID=
ADDR=

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
    echo "$(basename "$0"): the server did not start: $(head -c 300 "$out.err")" >&2
    exit 1
}

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null
}

cpu_ticks_split() {
    awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null
}
