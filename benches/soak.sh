#!/usr/bin/env bash
# Soak and chaos suite: albatross as users run it (the release binary,
# `albatross --config FILE`, default runtime, access and connection logs on) under
# long or hostile conditions, on loopback only. Not part of `cargo test`.
#
#   benches/soak.sh [--minutes M] [--out FILE] [--no-build] [--keep]
#                   [all|idle_wss|churn|targets|reload|shutdown|h2 ...]
#
# Scenarios (RELIABILITY.md has what each checks and the figures of a run):
#   idle_wss  9,900 idle wss tunnels held M minutes (default 10), then each echoes once
#   churn     M minutes (default 10) of ws + wss handshake churn; albatross RSS sampled
#   targets   HTTP load + ws tunnels over 3 echo targets, one killed and restarted
#             every few seconds for M minutes (default 3)
#   reload    HTTP load + 400 ws/wss tunnels, SIGHUP every second alternating two
#             configs, M minutes (default 3)
#   shutdown  SIGTERM with slow requests (and, every other round, tunnels) in flight,
#             fresh rounds for M minutes (default 3)
#   h2        M minutes (default 10) of HTTP/2 GETs over TLS on a few connections with
#             streams in flight, each connection opened again after ALB's GOAWAY
#
# --minutes M sets every scenario's length (short runs: --minutes 1). Each scenario
# prints a one-line summary and appends one JSON line to FILE (default
# target/soak/results.jsonl); the Markdown table of the run is printed at the end and
# written beside FILE (table.md). The exit status is 1 when a scenario failed.
# Ports: SOAK_PORT_BASE (default 18500) to +12 on 127.0.0.1; they must be free.
# ALBATROSS_BIN=PATH runs that binary instead of the tree's release build.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MINUTES=""
OUT=""
BUILD=1
KEEP=0
SCENARIOS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        all) SCENARIOS+=(idle_wss churn targets reload shutdown h2); shift ;;
        idle_wss|churn|targets|reload|shutdown|h2) SCENARIOS+=("$1"); shift ;;
        *) sed -n '2,29p' "$0"; exit 2 ;;
    esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(idle_wss churn targets reload shutdown h2)
if [ -n "$MINUTES" ] && ! python3 -c "import sys; assert float(sys.argv[1]) > 0" "$MINUTES" 2>/dev/null; then
    echo "soak.sh: --minutes needs a positive number" >&2; exit 2
fi

log() { echo "soak.sh: $*" >&2; }
die() { echo "soak.sh: FATAL: $*" >&2; exit 1; }

# Scenario length in seconds: --minutes, else the scenario's default.
secs_for() {   # secs_for DEFAULT_MINUTES
    python3 -c "import sys; print(int(round(float(sys.argv[1]) * 60)))" "${MINUTES:-$1}"
}

# ------------------------------------------------------------------ prerequisites
for c in cargo python3 openssl curl ss; do
    command -v "$c" >/dev/null || die "$c is not installed (needed by the soak suite)"
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
IDLE_CONNS=${SOAK_IDLE_CONNS:-9900}
for sc in "${SCENARIOS[@]}"; do
    if [ "$sc" = idle_wss ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * IDLE_CONNS + 200)) ]; then
        die "idle_wss needs $((2 * IDLE_CONNS + 200)) descriptors per process (albatross holds both sides of $IDLE_CONNS tunnels); ulimit -Hn is $(ulimit -Hn)"
    fi
done

# ------------------------------------------------------------------ build
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ] && [ -z "${ALBATROSS_BIN:-}" ]; then
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
[ -x "$WSBENCH" ] || die "wsbench did not build (cargo bench --bench wsbench --no-run)"
[ -x "$ALBATROSS" ] || die "no release albatross at $ALBATROSS (cargo build --release)"
REPORT="python3 $ROOT/benches/soak_report.py"

# ------------------------------------------------------------------ workspace
OUT=${OUT:-$TARGET_DIR/soak/results.jsonl}
mkdir -p "$(dirname "$OUT")"
touch "$OUT"
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT+changes"
fi
WORK=$(mktemp -d -t albatross-soak.XXXXXX)
mkdir -p "$WORK/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$WORK/certs/key.pem" -out "$WORK/certs/cert.pem" 2>/dev/null ||
    die "openssl could not make the test certificate"

BASE=${SOAK_PORT_BASE:-18500}
P_HTTP=$BASE; P_HTTPS=$((BASE + 1)); P_ADMIN=$((BASE + 2))
P_E=($((BASE + 10)) $((BASE + 11)) $((BASE + 12)))
for p in $P_HTTP $P_HTTPS $P_ADMIN "${P_E[@]}"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        die "port $p on this machine is in use; set SOAK_PORT_BASE"
    fi
done

# Everything started here is in PIDS and killed on exit, whatever the exit.
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        pkill -KILL -P "$p" 2>/dev/null || true   # a subshell's children (the sampler's)
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

forget() {   # forget PID: drop it from PIDS once it has been stopped
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

wait_port() {   # wait_port PORT [SECS]: until something accepts on 127.0.0.1:PORT
    local deadline=$((SECONDS + ${2:-30}))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

wait_port_closed() {   # wait_port_closed PORT [SECS]
    local deadline=$((SECONDS + ${2:-30}))
    while ss -Htln "sport = :$1" | grep -q .; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

declare -A ECHO_PID=()
start_echo() {   # start_echo N ID [wsbench echo options]: echo target N on P_E[N]
    local n=$1 id=$2
    shift 2
    wait_port_closed "${P_E[$n]}" 10 || die "port ${P_E[$n]} still taken"
    "$WSBENCH" echo --listen "127.0.0.1:${P_E[$n]}" --id "$id" "$@" 2>>"$D/echo.log" &
    ECHO_PID[$n]=$!
    PIDS+=("$!")
    wait_port "${P_E[$n]}" 20 || die "echo target $id did not listen on ${P_E[$n]}"
}

kill_echo() {   # kill_echo N: SIGKILL, as a crash
    local p=${ECHO_PID[$1]:-}
    [ -n "$p" ] || return 0
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    forget "$p"
    ECHO_PID[$1]=""
}

AL_PID=""
start_albatross() {   # start_albatross CONFIG_FILE (in $WORK)
    for p in $P_HTTP $P_HTTPS $P_ADMIN; do wait_port_closed "$p" 30 || die "port $p still taken"; done
    (cd "$WORK" && exec "$ALBATROSS" --config "$1") 2>>"$D/albatross.log" >&2 &
    AL_PID=$!
    PIDS+=("$AL_PID")
    for p in $P_HTTP $P_HTTPS $P_ADMIN; do
        wait_port "$p" 30 || { tail -20 "$D/albatross.log" >&2; die "albatross did not listen on $p"; }
    done
}

stop_albatross() {   # SIGTERM, the exit code into $D/extra.txt; SIGKILL after 60 s
    local p=$AL_PID i rc=0
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || rc=$?
    forget "$p"
    AL_PID=""
    kv albatross_exit_code "$rc"
}

alive() { [ -n "$AL_PID" ] && kill -0 "$AL_PID" 2>/dev/null; }

metrics() { curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" || true; }

metric() {   # metric NAME [LABEL_TEXT]: sum of the series (0 when absent)
    metrics | awk -v n="$1" -v l="${2:-}" '
        index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") && (l == "" || index($0, l)) { s += $NF }
        END { printf "%d\n", s }'
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

wait_healthy() {   # wait_healthy N SECS: until N targets are healthy; prints the seconds
    local t0 t
    t0=$(now_ms)
    while [ "$(metric albatross_healthy_host_count)" != "$1" ]; do
        [ $(( $(now_ms) - t0 )) -lt $(($2 * 1000)) ] || { echo -1; return 1; }
        sleep 0.1
    done
    t=$(( $(now_ms) - t0 ))
    printf '%d.%03d\n' $((t / 1000)) $((t % 1000))
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

kv() { echo "$1=$2" >> "$D/extra.txt"; }

wsb() { "$WSBENCH" run "$@" 2>>"$D/wsbench.log"; }

BG=""
wsb_bg() {   # wsb_bg OUT_FILE ARGS: wsbench in the background (its own pid in BG and PIDS)
    local out=$1
    shift
    "$WSBENCH" run "$@" > "$out" 2>>"$D/wsbench.log" &
    BG=$!
    PIDS+=("$BG")
}

# Keep the logs small: past LOG_MAX bytes a log is rotated (rename, SIGUSR1: albatross
# reopens it) and the old file counted and deleted; counts go to $D/logs-rotated.txt.
LOG_MAX=$((32 * 1024 * 1024))
rotate_logs() {
    local f p n
    for f in access connection; do
        p=$WORK/logs/$f.log
        if [ -f "$p" ] && [ "$(stat -c %s "$p")" -gt "$LOG_MAX" ]; then
            mv "$p" "$p.old"
            kill -USR1 "$AL_PID" 2>/dev/null || true
            sleep 0.5
            n=$(wc -l < "$p.old")
            rm -f "$p.old"
            echo "$f $n" >> "$D/logs-rotated.txt"
        fi
    done
    # albatross's own log (stderr, opened for appending): one line per closed tunnel.
    if [ -f "$D/albatross.log" ] && [ "$(stat -c %s "$D/albatross.log")" -gt "$LOG_MAX" ]; then
        echo "$(wc -l < "$D/albatross.log")" >> "$D/stderr-truncated.txt"
        truncate -s 0 "$D/albatross.log"
    fi
}

log_lines() {   # log_lines: access and connection lines written during the scenario
    local f n
    for f in access connection; do
        n=0
        [ -f "$WORK/logs/$f.log" ] && n=$(wc -l < "$WORK/logs/$f.log")
        if [ -f "$D/logs-rotated.txt" ]; then
            n=$((n + $(awk -v f="$f" '$1 == f { s += $2 } END { print s + 0 }' "$D/logs-rotated.txt")))
        fi
        kv "${f}_log_lines" "$n"
    done
    kv log_dropped_lines "$(metric albatross_log_dropped_lines_total)"
}

SAMPLER=""
start_sampler() {   # start_sampler SECS: "seconds rss_kib open_tunnels" lines to $D/samples.txt
    local every=$1 pid=$AL_PID t0
    t0=$(now_ms)
    (
        local t
        while kill -0 "$pid" 2>/dev/null; do
            t=$(( $(now_ms) - t0 ))
            printf '%d.%03d %s %s\n' $((t / 1000)) $((t % 1000)) "$(rss_kib "$pid")" \
                "$(metric albatross_active_tunnel_count)" >> "$D/samples.txt"
            rotate_logs
            sleep "$every"
        done
    ) &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
}

stop_sampler() {
    [ -n "$SAMPLER" ] || return 0
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    forget "$SAMPLER"
    SAMPLER=""
}

new_scenario() {   # new_scenario NAME: a fresh folder and logs
    D=$WORK/$1
    rm -rf "$WORK/logs"
    mkdir -p "$D"
    : > "$D/extra.txt"
    kv started "$(date -u +%FT%TZ)"
}

finish_scenario() {   # finish_scenario NAME: judge, record, print the summary line
    local sc=$1
    kv finished "$(date -u +%FT%TZ)"
    $REPORT record "$sc" "$D" "$RUN_ID" "$COMMIT" >> "$OUT" || {
        log "$sc: no record (see $D)"; FAILED=1; return 0; }
    tail -1 "$OUT" | $REPORT summary || true
    if tail -1 "$OUT" | grep -q '"pass": false'; then FAILED=1; fi
    # Keep only what the record needs (the logs can be large).
    rm -rf "$WORK/logs"
    find "$D" -name '*.log' -size +8M -exec truncate -s 8M {} +
}

# write_config FILE IDLE SHUTDOWN TARGETS HEALTH_CHECK [RULES]
write_config() {
    local rules=${6:-}
    cat > "$1" <<EOF
# generated by benches/soak.sh
[load_balancer]
idle_timeout = $2
shutdown_timeout = $3

[admin]
listen = "127.0.0.1:$P_ADMIN"

[access_log]
path = "logs/access.log"

[connection_log]
path = "logs/connection.log"

[[listener]]
address = "127.0.0.1"
port = $P_HTTP
protocol = "HTTP"
default_action = { type = "forward", target_group = "echo" }
$rules

[[listener]]
address = "127.0.0.1"
port = $P_HTTPS
protocol = "HTTPS"
certificates = [ { cert = "certs/cert.pem", key = "certs/key.pem" } ]
default_action = { type = "forward", target_group = "echo" }
$rules

[[target_group]]
name = "echo"
targets = [ $4 ]
health_check = { $5 }
EOF
    "$ALBATROSS" check --config "$1" > "$D/check.txt" 2>&1 || { cat "$D/check.txt" >&2; die "generated config $1 does not check"; }
}

HC_DEFAULT='path = "/health", interval = 5, timeout = 2, healthy_threshold = 2, unhealthy_threshold = 2'
HC_FAST='path = "/health", interval = "1s", timeout = "500ms", healthy_threshold = 2, unhealthy_threshold = 2'

# ------------------------------------------------------------------ idle_wss
scenario_idle_wss() {
    local secs idle
    secs=$(secs_for 10)
    new_scenario idle_wss
    idle=$((secs + 300))
    [ "$idle" -le 4000 ] || die "idle_wss: --minutes at most 61 (idle_timeout's maximum is 4000 s)"
    kv minutes "$(python3 -c "print(round($secs / 60, 2))")"
    kv idle_timeout "$idle"
    start_echo 0 e1
    write_config "$WORK/idle.toml" "$idle" 30 "\"127.0.0.1:${P_E[0]}\"" "$HC_DEFAULT"
    start_albatross idle.toml
    wsb --scenario probe --tls --target "127.0.0.1:$P_HTTPS" --duration 30 > /dev/null || die "idle_wss: no wss echo through albatross"
    sleep 2
    kv rss_start_kib "$(rss_kib "$AL_PID")"
    start_sampler 10
    log "idle_wss: opening $IDLE_CONNS wss tunnels, holding them ${secs}s"
    wsb_bg "$D/idle.json" --scenario idle --tls --conns "$IDLE_CONNS" --hold "$secs" \
        --target "127.0.0.1:$P_HTTPS" --proxy-pids "$AL_PID"
    wait "$BG" || log "idle_wss: wsbench failed"
    forget "$BG"
    stop_sampler
    kv albatross_alive "$(alive && echo 1 || echo 0)"
    metrics > "$D/metrics-end.txt"
    log_lines
    stop_albatross
    kill_echo 0
    finish_scenario idle_wss
}

# steady_start NAME: a fresh scenario of secs_for 10 seconds (set in SECS): one echo
# target, albatross in front of it on the default config.
SECS=0
steady_start() {
    SECS=$(secs_for 10)
    new_scenario "$1"
    kv minutes "$(python3 -c "print(round($SECS / 60, 2))")"
    start_echo 0 e1
    write_config "$WORK/$1.toml" 60 30 "\"127.0.0.1:${P_E[0]}\"" "$HC_DEFAULT"
    start_albatross "$1.toml"
}

# after_steady_load NAME: once a sampled load on one echo target has ended: RSS 15 s on,
# albatross's state and logs, everything stopped, the scenario judged.
after_steady_load() {
    kv load_end_secs "$(tail -1 "$D/samples.txt" | cut -d' ' -f1)"
    sleep 15   # the sampler goes on: RSS once the load has stopped
    stop_sampler
    kv rss_after_load_kib "$(rss_kib "$AL_PID")"
    kv albatross_alive "$(alive && echo 1 || echo 0)"
    metrics > "$D/metrics-end.txt"
    log_lines
    stop_albatross
    kill_echo 0
    finish_scenario "$1"
}

# ------------------------------------------------------------------ churn
scenario_churn() {
    local secs ws_pid wss_pid
    steady_start churn
    secs=$SECS
    wsb --scenario probe --target "127.0.0.1:$P_HTTP" --duration 30 > /dev/null || die "churn: no ws echo through albatross"
    sleep 2
    kv rss_start_kib "$(rss_kib "$AL_PID")"
    start_sampler 5
    log "churn: ${secs}s of ws and wss handshakes (connect, upgrade, one echo, close)"
    wsb_bg "$D/ws.json" --scenario handshake --conns 8 --rate "${SOAK_CHURN_WS_RATE:-600}" --warmup 0 \
        --duration "$secs" --target "127.0.0.1:$P_HTTP"
    ws_pid=$BG
    wsb_bg "$D/wss.json" --scenario handshake --conns 8 --rate "${SOAK_CHURN_WSS_RATE:-200}" --warmup 0 \
        --duration "$secs" --tls --target "127.0.0.1:$P_HTTPS"
    wss_pid=$BG
    wait "$ws_pid" || log "churn: ws wsbench failed"
    wait "$wss_pid" || log "churn: wss wsbench failed"
    forget "$ws_pid"; forget "$wss_pid"
    after_steady_load churn
}

# ------------------------------------------------------------------ h2
scenario_h2() {
    local secs
    steady_start h2
    secs=$SECS
    wsb --scenario h2 --conns 1 --streams 1 --rate 50 --duration 1 --target "127.0.0.1:$P_HTTPS" > "$D/probe.json" &&
        python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("requests", 0) == 0)' "$D/probe.json" ||
        die "h2: no HTTP/2 answer through albatross"
    sleep 2
    kv rss_start_kib "$(rss_kib "$AL_PID")"
    start_sampler 5
    log "h2: ${secs}s of HTTP/2 GETs (4 connections x 8 streams, reopened after GOAWAY)"
    wsb_bg "$D/h2.json" --scenario h2 --conns 4 --streams 8 --rate "${SOAK_H2_RATE:-3000}" \
        --paths /a,/b --duration "$secs" --target "127.0.0.1:$P_HTTPS"
    wait "$BG" || log "h2: wsbench failed"
    forget "$BG"
    after_steady_load h2
}

# ------------------------------------------------------------------ targets
scenario_targets() {
    local secs plain_pid tls_pid kills=0 t_end healthy
    secs=$(secs_for 3)
    new_scenario targets
    kv minutes "$(python3 -c "print(round($secs / 60, 2))")"
    start_echo 0 t1
    start_echo 1 t2
    start_echo 2 t3
    write_config "$WORK/targets.toml" 60 30 \
        "\"127.0.0.1:${P_E[0]}\", \"127.0.0.1:${P_E[1]}\", \"127.0.0.1:${P_E[2]}\"" "$HC_FAST"
    start_albatross targets.toml
    wait_healthy 3 30 > /dev/null || die "targets: the three targets did not become healthy"
    start_sampler 5
    log "targets: ${secs}s of HTTP load + 300 tunnels over t1..t3; t1 killed (SIGKILL) and restarted every 3 s"
    wsb_bg "$D/plain.json" --scenario mixed --conns 12 --rate 800 --paths /a,/b --tunnels 150 \
        --tunnel-interval 2 --duration "$secs" --target "127.0.0.1:$P_HTTP"
    plain_pid=$BG
    wsb_bg "$D/tls.json" --scenario mixed --tls --conns 6 --rate 200 --paths /a,/b --tunnels 150 \
        --tunnel-interval 2 --duration "$secs" --target "127.0.0.1:$P_HTTPS"
    tls_pid=$BG
    sleep 5
    t_end=$((SECONDS + secs - 18))
    while [ "$SECONDS" -lt "$t_end" ]; do
        kill_echo 0
        kills=$((kills + 1))
        sleep 3
        start_echo 0 t1
        sleep 3
    done
    # The last kill: how long until the health checks bring t1 back?
    kill_echo 0
    kills=$((kills + 1))
    sleep 3
    start_echo 0 t1
    healthy=$(wait_healthy 3 60) || true
    kv healthy_after_secs "$healthy"
    kv kills "$kills"
    wait "$plain_pid" || log "targets: plain wsbench failed"
    wait "$tls_pid" || log "targets: tls wsbench failed"
    forget "$plain_pid"; forget "$tls_pid"
    stop_sampler
    kv healthy_hosts_end "$(metric albatross_healthy_host_count)"
    # Afterwards: every target answers again, and nothing but 200.
    wsb --scenario mixed --conns 4 --rate 100 --paths /a --duration 5 --target "127.0.0.1:$P_HTTP" > "$D/after.json" ||
        log "targets: final check failed"
    kv albatross_alive "$(alive && echo 1 || echo 0)"
    metrics > "$D/metrics-end.txt"
    log_lines
    stop_albatross
    kill_echo 0; kill_echo 1; kill_echo 2
    finish_scenario targets
}

# ------------------------------------------------------------------ reload
scenario_reload() {
    local secs plain_pid tls_pid hups=0 t_end listed rules_a rules_b which=b
    secs=$(secs_for 3)
    new_scenario reload
    kv minutes "$(python3 -c "print(round($secs / 60, 2))")"
    start_echo 0 e1
    start_echo 1 e2
    rules_a='[[listener.rule]]
priority = 10
conditions = [ { path_pattern = ["/fixed"] } ]
action = { type = "fixed_response", status_code = 200, content_type = "text/plain", message_body = "config a" }'
    rules_b='[[listener.rule]]
priority = 5
conditions = [ { path_pattern = ["/b/*"] } ]
action = { type = "forward", target_group = "echo" }

[[listener.rule]]
priority = 10
conditions = [ { path_pattern = ["/fixed"] } ]
action = { type = "fixed_response", status_code = 202, content_type = "application/json", message_body = "{\"config\":\"b\"}" }'
    local targets="\"127.0.0.1:${P_E[0]}\", \"127.0.0.1:${P_E[1]}\""
    write_config "$WORK/reload-a.toml" 60 30 "$targets" "$HC_DEFAULT" "$rules_a"
    write_config "$WORK/reload-b.toml" 60 30 "$targets" "$HC_DEFAULT" "$rules_b"
    cp "$WORK/reload-a.toml" "$WORK/reload.toml"
    start_albatross reload.toml
    wait_healthy 2 30 > /dev/null || die "reload: the targets did not become healthy"
    start_sampler 2
    log "reload: ${secs}s of HTTP load + 400 tunnels, SIGHUP every second (two configs in turn)"
    wsb_bg "$D/plain.json" --scenario mixed --conns 8 --rate 600 --paths /x,/fixed,/b/y --tunnels 200 \
        --tunnel-interval 3 --duration "$secs" --target "127.0.0.1:$P_HTTP"
    plain_pid=$BG
    wsb_bg "$D/tls.json" --scenario mixed --tls --conns 4 --rate 200 --paths /x,/fixed,/b/y --tunnels 200 \
        --tunnel-interval 3 --duration "$secs" --target "127.0.0.1:$P_HTTPS"
    tls_pid=$BG
    sleep 10   # the tunnels are open
    kv tunnels_listed_start "$(curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/tunnels" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' || echo -1)"
    t_end=$((SECONDS + secs - 15))
    while [ "$SECONDS" -lt "$t_end" ]; do
        # The file changes by rename, so that a reload never reads half a file.
        cp "$WORK/reload-$which.toml" "$WORK/reload.toml.new"
        mv "$WORK/reload.toml.new" "$WORK/reload.toml"
        kill -HUP "$AL_PID"
        hups=$((hups + 1))
        if [ "$which" = b ]; then which=a; else which=b; fi
        sleep 1
    done
    kv hups "$hups"
    sleep 2
    listed=$(curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/tunnels" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' || echo -1)
    kv tunnels_listed_end "$listed"
    wait "$plain_pid" || log "reload: plain wsbench failed"
    wait "$tls_pid" || log "reload: tls wsbench failed"
    forget "$plain_pid"; forget "$tls_pid"
    stop_sampler
    kv reloads_logged "$(grep -c 'Configuration reloaded' "$D/albatross.log" || true)"
    kv reload_errors_logged "$(grep -ci 'reload.*fail\|not reloaded\|error' "$D/albatross.log" || true)"
    kv albatross_alive "$(alive && echo 1 || echo 0)"
    metrics > "$D/metrics-end.txt"
    log_lines
    stop_albatross
    kill_echo 0; kill_echo 1
    finish_scenario reload
}

# ------------------------------------------------------------------ shutdown
scenario_shutdown() {
    local secs t_end round=0 mode tls tunnels target rc timeout=10
    secs=$(secs_for 3)
    new_scenario shutdown
    kv minutes "$(python3 -c "print(round($secs / 60, 2))")"
    kv shutdown_timeout "$timeout"
    kv delay_ms 6000
    start_echo 0 e1 --delay-ms 6000
    write_config "$WORK/shutdown.toml" 60 "$timeout" "\"127.0.0.1:${P_E[0]}\"" "$HC_FAST"
    log "shutdown: SIGTERM rounds for ${secs}s (50 requests of 6 s in flight; 20 tunnels every other round)"
    t_end=$((SECONDS + secs))
    while [ "$SECONDS" -lt "$t_end" ]; do
        case $((round % 4)) in
            0) mode=http; tls=(); tunnels=0; target=$P_HTTP ;;
            1) mode=https; tls=(--tls); tunnels=0; target=$P_HTTPS ;;
            2) mode=http+ws; tls=(); tunnels=20; target=$P_HTTP ;;
            3) mode=https+wss; tls=(--tls); tunnels=20; target=$P_HTTPS ;;
        esac
        start_albatross shutdown.toml
        wait_healthy 1 30 > /dev/null || die "shutdown: the slow target did not become healthy"
        wsb_bg "$D/round.json" --scenario drain "${tls[@]}" --conns 50 --path /slow --tunnels "$tunnels" \
            --signal-after 1.5 --probe "127.0.0.1:$P_HTTP,127.0.0.1:$P_HTTPS" --proxy-pids "$AL_PID" \
            --target "127.0.0.1:$target" --label "$mode"
        wait "$BG" || log "shutdown: round $round: wsbench failed"
        forget "$BG"
        if alive; then   # wsbench never signalled it (it failed first)
            log "shutdown: round $round: albatross still running; killing it"
            kill -KILL "$AL_PID" 2>/dev/null || true
        fi
        rc=0
        wait "$AL_PID" 2>/dev/null || rc=$?
        forget "$AL_PID"; AL_PID=""
        python3 -c 'import json,sys
r = json.loads(open(sys.argv[1]).read() or "null") or {}
r.update(round=int(sys.argv[2]), mode=sys.argv[3], exit_code=int(sys.argv[4]))
print(json.dumps(r))' "$D/round.json" "$round" "$mode" "$rc" >> "$D/rounds.jsonl"
        round=$((round + 1))
    done
    kv rounds "$round"
    kv deadline_lines_logged "$(grep -c 'Shutdown deadline' "$D/albatross.log" || true)"
    kill_echo 0
    finish_scenario shutdown
}

# ------------------------------------------------------------------ run
FAILED=0
log "run $RUN_ID, commit $COMMIT, work dir $WORK, results in $OUT"
log "scenarios: ${SCENARIOS[*]}"
for sc in "${SCENARIOS[@]}"; do
    "scenario_$sc"
done
{
    echo "nproc: $(nproc), kernel: $(uname -r), commit: $COMMIT, run: $RUN_ID"
    echo
    $REPORT table "$OUT" "$RUN_ID"
} | tee "$(dirname "$OUT")/table.md"
exit "$FAILED"
