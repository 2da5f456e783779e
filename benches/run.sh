#!/usr/bin/env bash
# Benchmark albatross against nginx, HAProxy and Caddy as WebSocket reverse
# proxies, and against the echo target directly (the ceiling).
#
#   benches/peers/install.sh        # once, as root: nginx, haproxy, caddy, wrk
#   benches/run.sh [--runs 2] [--logs-off]
#                  [--targets direct,nginx_logs,haproxy_logs,albatross_logs]
#                  [--scenarios hs_ws,hs_wss,rtt100,rtt1,tput,tput_wss,idle_ws,idle_wss,http]
#                  [--duration 10] [--warmup 1] [--idle-conns 9900] [--hold 10]
#                  [--out DIR] [--no-build] [--quiet-pct 15] [--quiet-wait 120]
#                  [--strace]
#
# --strace counts the proxy's system calls in each cell (strace -c attached for the
# measured window, no warm-up) and reports them per handshake, message or request;
# strace slows the proxy, so the timed figures of such a run are not comparable.
#
# By default every proxy runs as its users run it, logs on: `albatross_logs` is
# `albatross --config FILE` (no other flag) with [access_log], [connection_log] and the
# admin listener (metrics are always counted), `nginx_logs` nginx with `access_log` on
# (combined format), `haproxy_logs` HAProxy with `option httplog` to a file.
# --logs-off runs the same proxies with their logs off (targets direct, nginx,
# haproxy, caddy, albatross); --targets picks any mix (`albatross` against
# `albatross_logs` is the cost of logging).
#
# ALBATROSS_BIN=PATH runs that binary instead of the tree's release build.
# ALBATROSS_BASE_BIN=PATH adds target `base`: that binary run the same way (a
# before/after comparison in one run; the cells of both alternate).
# ALBATROSS_ARGS / ALBATROSS_BASE_ARGS: extra flags for each (default none, as users
# run it; "--threads 1" selects the single-threaded runtime explicitly, which a process
# pinned to one CPU runs anyway).
#
# Each cell (target x scenario) starts the echo target and the proxy fresh and
# stops both afterwards. The proxy runs on CPU 1 with one worker (nginx
# worker_processes 1, HAProxy nbthread 1, Caddy GOMAXPROCS=1, albatross: one
# usable CPU, so its single-threaded runtime); the load generator, wrk and the echo
# target run on CPU 0. Everything listens on 127.0.0.1 and every load loop is bounded in
# time. Results go to DIR/results.jsonl (one JSON object per cell and run) and
# the Markdown table to DIR/table.md and stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=2
TARGETS=direct,nginx_logs,haproxy_logs,albatross_logs
SCENARIOS=hs_ws,hs_wss,rtt100,rtt1,tput,tput_wss,idle_ws,idle_wss,http
DURATION=10
WARMUP=1
IDLE_CONNS=9900
HOLD=10
OUT=""
BUILD=1
QUIET_PCT=15
QUIET_WAIT=120
STRACE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --logs-off) TARGETS=direct,nginx,haproxy,caddy,albatross; shift ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --idle-conns) IDLE_CONNS=$2; shift 2 ;;
        --hold) HOLD=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --quiet-pct) QUIET_PCT=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --strace) STRACE=1; WARMUP=0; shift ;;
        *) sed -n '2,33p' "$0"; exit 2 ;;
    esac
done

log() { echo "run.sh: $*" >&2; }

# ------------------------------------------------------------------ build
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
    log "building albatross (release) and wsbench"
    (cd "$ROOT" && cargo build --release --bin albatross >&2)
fi
WSBENCH=$(cd "$ROOT" && cargo bench --bench wsbench --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "wsbench" and m.get("executable"):
        print(m["executable"])')
ALBATROSS=${ALBATROSS_BIN:-$TARGET_DIR/release/albatross}
ALBATROSS_BASE=${ALBATROSS_BASE_BIN:-}
ALBATROSS_ARGS=${ALBATROSS_ARGS:-}
ALBATROSS_BASE_ARGS=${ALBATROSS_BASE_ARGS:-}
[ -x "$WSBENCH" ] || { log "wsbench did not build"; exit 1; }
[ -x "$ALBATROSS" ] || { log "no release albatross at $ALBATROSS"; exit 1; }

# ------------------------------------------------------------------ workspace
WORK=$(mktemp -d "${TMPDIR:-/tmp}/albatross-bench.XXXXXX")
OUT=${OUT:-$WORK}
mkdir -p "$OUT" "$WORK/certs" "$WORK/nginx/tmp" "$WORK/caddy-home"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
cp "$ROOT"/benches/peers/{nginx.conf,haproxy.cfg,Caddyfile,albatross.toml} "$WORK/"
# One self-signed ECDSA P-256 certificate for every TLS listener.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$WORK/certs/key.pem" -out "$WORK/certs/cert.pem" 2>/dev/null
cat "$WORK/certs/cert.pem" "$WORK/certs/key.pem" > "$WORK/certs/combined.pem"
# The logs-on variants.
{
    cat "$WORK/albatross.toml"
    printf '\n[access_log]\npath = "logs/access.log"\n\n[connection_log]\npath = "logs/connection.log"\n\n[admin]\nlisten = "127.0.0.1:19399"\n'
} > "$WORK/albatross-logs.toml"
sed "s|access_log off;|access_log $WORK/nginx/access.log;|" "$WORK/nginx.conf" > "$WORK/nginx-logs.conf"
sed -e "s|^global|global\n    log stdout format raw local0 info|" \
    -e "s|^defaults|defaults\n    log global\n    option httplog|" "$WORK/haproxy.cfg" > "$WORK/haproxy-logs.cfg"
"$ALBATROSS" check --config "$WORK/albatross.toml" > "$WORK/albatross-check.txt" ||
    { cat "$WORK/albatross-check.txt" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"   # 20000 here: N idle tunnels need N client + N echo sockets

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

stop() {   # stop PID: TERM, then KILL after 5 s
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

ECHO_PID=""
start_echo() {
    taskset -c 0 "$WSBENCH" echo --listen 127.0.0.1:19000 --tls-listen 127.0.0.1:19001 \
        --cert "$WORK/certs/cert.pem" --key "$WORK/certs/key.pem" 2>>"$WORK/echo.log" &
    ECHO_PID=$!
    PIDS+=("$ECHO_PID")
}

PROXY_PID=""; PROXY_PIDS=""; PORT_WS=""; PORT_WSS=""
start_proxy() {   # start_proxy TARGET: sets PROXY_PID, PROXY_PIDS, PORT_WS, PORT_WSS
    local t=$1 logf=$WORK/$1.log
    PROXY_PID=""; PROXY_PIDS=""
    case "$t" in
        direct) PORT_WS=19000; PORT_WSS=19001; return 0 ;;
        nginx) PORT_WS=19101; PORT_WSS=19102
            taskset -c 1 nginx -p "$WORK/nginx/" -c "$WORK/nginx.conf" -e stderr 2>>"$logf" & ;;
        nginx_logs) PORT_WS=19101; PORT_WSS=19102
            taskset -c 1 nginx -p "$WORK/nginx/" -c "$WORK/nginx-logs.conf" -e stderr 2>>"$logf" & ;;
        haproxy_logs) PORT_WS=19201; PORT_WSS=19202
            (cd "$WORK" && exec taskset -c 1 haproxy -db -f haproxy-logs.cfg) 2>>"$logf" >>"$WORK/haproxy-access.log" & ;;
        haproxy) PORT_WS=19201; PORT_WSS=19202
            (cd "$WORK" && exec taskset -c 1 haproxy -db -f haproxy.cfg) 2>>"$logf" >&2 & ;;
        caddy) PORT_WS=19401; PORT_WSS=19402
            (cd "$WORK" && HOME=$WORK/caddy-home XDG_DATA_HOME=$WORK/caddy-home \
                XDG_CONFIG_HOME=$WORK/caddy-home GOMAXPROCS=1 \
                exec taskset -c 1 caddy run --config Caddyfile --adapter caddyfile) 2>>"$logf" >&2 & ;;
        albatross) PORT_WS=19301; PORT_WSS=19302
            # shellcheck disable=SC2086
            (cd "$WORK" && RUST_LOG=warn \
                exec taskset -c 1 "$ALBATROSS" $ALBATROSS_ARGS --config albatross.toml) 2>>"$logf" >&2 & ;;
        albatross_logs) PORT_WS=19301; PORT_WSS=19302
            # shellcheck disable=SC2086
            (cd "$WORK" && RUST_LOG=warn \
                exec taskset -c 1 "$ALBATROSS" $ALBATROSS_ARGS --config albatross-logs.toml) 2>>"$logf" >&2 & ;;
        base) PORT_WS=19301; PORT_WSS=19302
            # shellcheck disable=SC2086
            (cd "$WORK" && RUST_LOG=warn \
                exec taskset -c 1 "$ALBATROSS_BASE" $ALBATROSS_BASE_ARGS --config albatross.toml) 2>>"$logf" >&2 & ;;
        *) log "unknown target $t"; exit 2 ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    # nginx does the work in its worker; count master and workers together.
    sleep 0.3
    PROXY_PIDS=$PROXY_PID
    local kids
    kids=$(pgrep -P "$PROXY_PID" | paste -sd, || true)
    [ -n "$kids" ] && PROXY_PIDS="$PROXY_PID,$kids"
    return 0
}

wsb() { taskset -c 0 "$WSBENCH" run "$@"; }

# CPU busy on the whole machine over one second, % of one CPU (nothing of ours runs).
machine_busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( (total - idle) * 100 * $(nproc) / (total > 0 ? total : 1) ))
}

# Wait (up to QUIET_WAIT s) until other processes use less than QUIET_PCT % of a CPU;
# prints the last figure, which goes into the cell's record.
wait_for_quiet() {
    local busy waited=0
    busy=$(machine_busy_pct)
    while [ "$busy" -gt "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        log "machine busy (${busy}% of a CPU by other processes); waiting"
        sleep 4; waited=$((waited + 5))
        busy=$(machine_busy_pct)
    done
    echo "$busy"
}

run_cell() {   # run_cell RUN TARGET SCENARIO
    local run=$1 t=$2 sc=$3 args json rc=0 pidarg=() busy
    busy=$(wait_for_quiet)
    start_echo
    start_proxy "$t"
    [ -n "$PROXY_PIDS" ] && pidarg=(--proxy-pids "$PROXY_PIDS")
    local common=(--duration "$DURATION" --warmup "$WARMUP" --echo-pid "$ECHO_PID" "${pidarg[@]}")
    if ! wsb --scenario probe --target "127.0.0.1:$PORT_WS" --duration 20 >/dev/null ||
       ! wsb --scenario probe --target "127.0.0.1:$PORT_WSS" --tls --duration 20 >/dev/null; then
        log "$t did not come up; see $WORK/$t.log"
        json=null; rc=1
    else
        case "$sc" in
            hs_ws) args=(--scenario handshake --conns 32 --target "127.0.0.1:$PORT_WS") ;;
            hs_wss) args=(--scenario handshake --conns 32 --tls --target "127.0.0.1:$PORT_WSS") ;;
            rtt100) args=(--scenario rtt --conns 100 --target "127.0.0.1:$PORT_WS") ;;
            rtt1) args=(--scenario rtt --conns 1 --target "127.0.0.1:$PORT_WS") ;;
            tput) args=(--scenario throughput --frame 65536 --target "127.0.0.1:$PORT_WS") ;;
            tput_wss) args=(--scenario throughput --frame 65536 --tls --target "127.0.0.1:$PORT_WSS") ;;
            idle_ws) args=(--scenario idle --conns "$IDLE_CONNS" --hold "$HOLD" --target "127.0.0.1:$PORT_WS") ;;
            idle_wss) args=(--scenario idle --conns "$IDLE_CONNS" --hold "$HOLD" --tls --target "127.0.0.1:$PORT_WSS") ;;
            http) args=(--scenario http --conns 64 --target "127.0.0.1:$PORT_WS") ;;
            *) log "unknown scenario $sc"; exit 2 ;;
        esac
        local trace=$WORK/strace-$run-$t-$sc.txt strace_pid=""
        if [ "$STRACE" = 1 ] && [ -n "$PROXY_PIDS" ]; then
            # shellcheck disable=SC2046
            strace -c -f -qq -o "$trace" $(printf -- '-p %s ' ${PROXY_PIDS//,/ }) &
            strace_pid=$!
            sleep 0.5
        fi
        json=$(timeout "$(python3 -c "import math; print(math.ceil($DURATION + $WARMUP + $HOLD + 90))")" \
            taskset -c 0 "$WSBENCH" run "${args[@]}" "${common[@]}" 2>>"$WORK/wsbench.log") || rc=$?
        [ -n "$json" ] || json=null
        if [ -n "$strace_pid" ]; then
            kill -INT "$strace_pid" 2>/dev/null || true
            wait "$strace_pid" 2>/dev/null || true
            json=$(python3 "$ROOT/benches/report.py" --attach-syscalls "$trace" "$DURATION" <<< "$json")
        fi
    fi
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "$ECHO_PID"
    printf '{"run":%s,"target":"%s","cell":"%s","rc":%s,"busy_before_pct":%s,"result":%s}\n' \
        "$run" "$t" "$sc" "$rc" "$busy" "$json" >> "$RESULTS"
    log "run $run $t $sc: rc=$rc $json"
    sleep 1   # let the last sockets leave TIME_WAIT's way
}

IFS=, read -r -a TARGET_LIST <<< "$TARGETS"
IFS=, read -r -a SCENARIO_LIST <<< "$SCENARIOS"
AVAILABLE=()
for t in "${TARGET_LIST[@]}"; do
    case "$t" in
        direct|albatross|albatross_logs) AVAILABLE+=("$t") ;;
        nginx_logs|haproxy_logs) if command -v "${t%_logs}" >/dev/null; then AVAILABLE+=("$t"); else log "${t%_logs} is not installed: skipped"; fi ;;
        base) if [ -x "$ALBATROSS_BASE" ]; then AVAILABLE+=("$t"); else log "base needs ALBATROSS_BASE_BIN: skipped"; fi ;;
        *) if command -v "$t" >/dev/null; then AVAILABLE+=("$t"); else log "$t is not installed: skipped"; fi ;;
    esac
done

# Versions and machine, for BENCHMARKS.md.
{
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "albatross: $("$ALBATROSS" --version 2>&1), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown), flags: ${ALBATROSS_ARGS:-none}"
    [ -n "$ALBATROSS_BASE" ] && echo "base: $ALBATROSS_BASE, flags: ${ALBATROSS_BASE_ARGS:-none}"
    command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //')"
    command -v haproxy >/dev/null && echo "haproxy: $(haproxy -v 2>&1 | head -1)"
    command -v caddy >/dev/null && echo "caddy: $(caddy version 2>&1)"
    command -v wrk >/dev/null && echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "openssl: $(openssl version)"
} > "$OUT/versions.txt"

log "work dir $WORK; results in $RESULTS"
for run in $(seq "$RUNS"); do
    for t in "${AVAILABLE[@]}"; do
        for sc in "${SCENARIO_LIST[@]}"; do
            run_cell "$run" "$t" "$sc"
        done
    done
done

python3 "$ROOT/benches/report.py" "$RESULTS" | tee "$OUT/table.md"
