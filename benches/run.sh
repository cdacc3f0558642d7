#!/usr/bin/env bash
# The documented load scenarios, each one command, chat-rs against the
# reference server in the same run. Release builds; server pinned to core 0,
# generator to core 1 (taskset). Every figure is printed beside the
# reference's and as a ratio to it; the raw `RESULT {json}` lines are kept
# in $OUT/results.jsonl.
#
#   benches/run.sh W1 sqlite      # 10 rooms x 50 sockets, 5 senders/room @ 20 msg/s, 100 B
#   benches/run.sh W2 sqlite      # 1 room x 1,000 sockets, rate stepped to saturation
#   benches/run.sh W3 sqlite      # 10,000 idle sockets: server RSS per socket
#   W3_SOCKETS=19000 benches/run.sh W3 sqlite
#   benches/run.sh W4 postgres    # 50 writers appending: 50 sockets into one room, rate
#                                 # stepped until p99 passes 100 ms (W4ws), and the
#                                 # storage API alone (append-bench; reference: memory://)
#   benches/run.sh W5 sqlite      # W1's shape, the rate per sender stepped to saturation
#   benches/run.sh W1C sqlite     # W1, then W1 with 10 % of the sends edits and reactions,
#                                 # on the same backend in the same run (p99 of both)
#   benches/run.sh M sqlite       # server RSS after start, 20 registrations, 20 logins
#   benches/run.sh all all        # every scenario on sqlite, postgres, redis2
#
# Backends: sqlite (temp file), postgres (fresh schema in $PG_URL, dropped
# after), redis2 (two instances on PostgreSQL sharing the Redis broker at
# $REDIS_URL; sockets alternate between them), all.
# Knobs (environment): W1_SECS, W2_SECS (per step), W2_RATE (first step,
# msg/s per sender), W2_SENDERS, W3_SOCKETS, W3_IDLE_SECS, OUT (results
# directory, default a temp dir that is kept), CARGO_TARGET_DIR.
set -euo pipefail

SCENARIOS=${1:-all}
BACKENDS=${2:-sqlite}
[[ $SCENARIOS == all ]] && SCENARIOS="W1 W2 W3 W4 W5 M"
[[ $BACKENDS == all ]] && BACKENDS="sqlite postgres redis2"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
W1_SECS=${W1_SECS:-20}
W2_SECS=${W2_SECS:-10}
W2_RATE=${W2_RATE:-2}
W2_SENDERS=${W2_SENDERS:-10}
W3_SOCKETS=${W3_SOCKETS:-10000}
W3_IDLE_SECS=${W3_IDLE_SECS:-10}
SERVER_CPU=0
LOAD_CPU=1
REF_PORT=18100
CHAT_PORT=18000
SECRET=run-sh-secret-0123456789abcdef

# Sockets need descriptors on both sides (and the server one per socket).
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d -t chat-bench.XXXXXX)
OUT=${OUT:-$(mktemp -d -t chat-bench-results.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
PIDS=()
SCHEMAS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for s in "${SCHEMAS[@]}"; do psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
(cd "$ROOT" && cargo build --release --locked -p chat-bench -p chat-server --bins >&2)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
echo "== machine: $CPU, $(nproc) cores; server on core $SERVER_CPU, generator on core $LOAD_CPU; results in $OUT" >&2

wait_http() { # url
    for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; return 1
}
wait_tcp() { # port
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listening on $1" >&2; return 1
}
stop() { # pid...
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

# Starts chat-server instances for a backend; sets SERVER_PIDS and URLS.
start_chat() { # backend
    local storage broker=local:// n=1 prefix="bench$RANDOM"
    case $1 in
        sqlite) storage="sqlite://$WORK/chat-$RANDOM.db" ;;
        postgres|redis2)
            command -v psql >/dev/null || { echo "psql not found: $1 needs it" >&2; return 1; }
            local schema="chat_run_$RANDOM$RANDOM"
            psql -q "$PG_URL" -c "CREATE SCHEMA $schema" >/dev/null
            SCHEMAS+=("$schema")
            storage="$PG_URL?options[search_path]=$schema"
            [[ $1 == redis2 ]] && { broker=$REDIS_URL; n=2; } ;;
        *) echo "unknown backend $1" >&2; return 1 ;;
    esac
    SERVER_PIDS=(); URLS=()
    for i in $(seq 1 $n); do
        local port=$((CHAT_PORT + i))
        RUST_LOG=${RUST_LOG:-warn} taskset -c $SERVER_CPU "$BIN/chat-server" \
            --listen "127.0.0.1:$port" --storage "$storage" --broker "$broker" --broker-prefix "$prefix" \
            --jwt-secret "$SECRET" --rate-limit 0 --user-rate-limit 0 \
            --login-attempts-per-account 0 --login-attempts-per-address 0 \
            --access-token-ttl 7200 --storage-pool-size 16 >"$OUT/server-$1-$i.log" 2>&1 &
        SERVER_PIDS+=($!); PIDS+=($!)
        wait_http "http://127.0.0.1:$port/healthz"
        URLS+=(--url "http://127.0.0.1:$port")
    done
}

start_ref() {
    taskset -c $SERVER_CPU "$BIN/chat-reference" --listen "127.0.0.1:$REF_PORT" >"$OUT/reference.log" 2>&1 &
    REF_PID=$!; PIDS+=($!)
    wait_tcp $REF_PORT
}

# Runs chat-load on the generator core, keeps its RESULT line tagged with
# the scenario and backend.
load() { # scenario backend args...
    local scenario=$1 backend=$2; shift 2
    echo "-- $scenario $backend: chat-load $*" >&2
    taskset -c $LOAD_CPU "$BIN/chat-load" --label "$scenario" "$@" | tee "$WORK/load.out"
    grep '^RESULT ' "$WORK/load.out" | sed 's/^RESULT //' | jq -c --arg b "$backend" '. + {backend: $b}' >>"$RESULTS"
}

pids_args() { local a=(); for p in "$@"; do a+=(--server-pid "$p"); done; echo "${a[@]}"; }

W1_ARGS=(--mode run --rooms 10 --sockets 500 --senders 5 --rate 20 --body-bytes 100 --duration "$W1_SECS" --users 50)
W2_ARGS=(--mode step --rooms 1 --sockets 1000 --senders "$W2_SENDERS" --rate "$W2_RATE" --step-factor 1.5 --p99-limit-ms 100 --body-bytes 100 --duration "$W2_SECS" --users 50 --grace 3)
# Few users, hashed one at a time: password hashing leaves hundreds of MiB
# in the server's allocator, which later sockets reuse, hiding their cost.
W3_ARGS=(--mode idle --rooms 10 --sockets "$W3_SOCKETS" --users 4 --register-parallel 1 --idle-secs "$W3_IDLE_SECS" --connect-rate 2000)

# 50 sending sockets into one room and one receiver: stored (acked) sends
# per second, the rate raised until p99 passes 100 ms.
W4_ARGS=(--mode step --rooms 1 --sockets 1 --senders 50 --rate 40 --step-factor 1.5 --p99-limit-ms 100 --body-bytes 100 --duration "$W2_SECS" --users 50 --grace 3)

# W1's shape (10 rooms x 50 sockets, 5 senders per room), the rate per
# sender raised x1.5 per step until p99 passes 100 ms or a message is lost.
W5_ARGS=(--mode step --rooms 10 --sockets 500 --senders 5 --rate 20 --step-factor 1.5 --p99-limit-ms 100 --body-bytes 100 --duration "$W2_SECS" --users 50 --grace 3)

# W1 with a tenth of each sender's ticks changes to its newest message
# (an edit, a reaction, the reaction taken back, in turn).
W1C_ARGS=("${W1_ARGS[@]}" --change-share 0.1)

scenario_args() { # scenario -> name of the args array
    case $1 in W1) echo "W1_ARGS[@]" ;; W2) echo "W2_ARGS[@]" ;; W3) echo "W3_ARGS[@]" ;; W5) echo "W5_ARGS[@]" ;; esac
}

# The order counters of each chat-rs instance: on one instance both must
# stay 0 (events are published in commit order).
order_metrics() { # scenario backend
    local u n=0
    for u in "${URLS[@]}"; do
        [[ $u == --url ]] && continue
        local m gaps reads
        m=$(curl -s "$u/metrics")
        gaps=$(awk '/^chat_reorder_gaps_total /{print $2}' <<<"$m"); gaps=${gaps:-0}
        reads=$(awk '/^chat_socket_gap_reads_total /{print $2}' <<<"$m"); reads=${reads:-0}
        echo "-- $1 $2 instance $n: chat_reorder_gaps_total=$gaps chat_socket_gap_reads_total=$reads" >&2
        jq -nc --arg s "$1" --arg b "$2" --argjson i $n --argjson g "$gaps" --argjson r "$reads" \
            '{scenario: $s, backend: $b, instance: $i, reorder_gaps: $g, gap_reads: $r}' >>"$OUT/order.jsonl"
        n=$((n + 1))
    done
}

# Server memory: RSS after start, then after 20 registrations and 20 logins
# (argon2 needs 19 MiB per hash in flight).
run_mem() {
    local b pid rss0 rss1 hwm
    for b in $BACKENDS; do
        start_chat "$b"
        pid=${SERVER_PIDS[0]}
        local url=${URLS[1]}
        sleep 1
        rss0=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
        for i in $(seq 1 20); do
            curl -s -o /dev/null -X POST "$url/api/users/register/" -H 'content-type: application/json' \
                -d "{\"username\":\"mem$i\",\"email\":\"mem$i@example.com\",\"password\":\"password-$i\"}"
        done
        for i in $(seq 1 20); do
            curl -s -o /dev/null -X POST "$url/api/users/token/" -H 'content-type: application/json' \
                -d "{\"username\":\"mem$i\",\"password\":\"password-$i\"}"
        done
        rss1=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")
        echo "-- M $b: RSS after start ${rss0} kB, after 20 registrations + 20 logins ${rss1} kB (peak ${hwm} kB)" >&2
        jq -nc --arg b "$b" --argjson a "$rss0" --argjson c "$rss1" --argjson h "$hwm" \
            '{scenario: "M", backend: $b, rss_start_kb: $a, rss_after_kb: $c, hwm_kb: $h}' >>"$OUT/memory.jsonl"
        stop "${SERVER_PIDS[@]}"
    done
}

run_socket_scenario() { # scenario
    local s=$1 ref_name
    ref_name=$(scenario_args "$s")
    start_ref
    # shellcheck disable=SC2046
    load "$s" reference --reference --url "http://127.0.0.1:$REF_PORT" $(pids_args "$REF_PID") "${!ref_name}"
    stop "$REF_PID"
    for b in $BACKENDS; do
        start_chat "$b"
        # shellcheck disable=SC2046
        load "$s" "$b" "${URLS[@]}" $(pids_args "${SERVER_PIDS[@]}") "${!ref_name}"
        order_metrics "$s" "$b"
        stop "${SERVER_PIDS[@]}"
    done
}

# Plain W1 and W1C on each backend, each on a fresh server, the reference
# once: W1C's p99 over W1's is the figure.
run_w1c() {
    start_ref
    # shellcheck disable=SC2046
    load W1 reference --reference --url "http://127.0.0.1:$REF_PORT" $(pids_args "$REF_PID") "${W1_ARGS[@]}"
    stop "$REF_PID"
    local b
    for b in $BACKENDS; do
        start_chat "$b"
        # shellcheck disable=SC2046
        load W1 "$b" "${URLS[@]}" $(pids_args "${SERVER_PIDS[@]}") "${W1_ARGS[@]}"
        order_metrics W1 "$b"
        stop "${SERVER_PIDS[@]}"
        start_chat "$b"
        # shellcheck disable=SC2046
        load W1C "$b" "${URLS[@]}" $(pids_args "${SERVER_PIDS[@]}") "${W1C_ARGS[@]}"
        order_metrics W1C "$b"
        stop "${SERVER_PIDS[@]}"
        jq -rs --arg b "$b" '
            (map(select(.backend == $b and .scenario == "W1" and .target == "chat-rs")) | last) as $w1 |
            (map(select(.backend == $b and .scenario == "W1C")) | last) as $w1c |
            "-- W1C \($b): p99 \($w1c.p99_ms) ms with changes vs \($w1.p99_ms) ms without: \(($w1c.p99_ms / $w1.p99_ms * 100 | round) / 100) x; \($w1c.changes) changes, lost \($w1c.lost)"' \
            "$RESULTS" >&2
    done
}

run_w4() {
    local url
    echo "-- W4 memory (reference)" >&2
    taskset -c $LOAD_CPU "$BIN/append-bench" --storage memory:// --writers 50 --messages 200 | tee "$WORK/w4.out"
    grep '^{' "$WORK/w4.out" | jq -c '. + {scenario: "W4", target: "reference", backend: "memory"}' >>"$RESULTS"
    for b in $BACKENDS; do
        start_chat "$b"
        # shellcheck disable=SC2046
        load W4ws "$b" "${URLS[@]}" $(pids_args "${SERVER_PIDS[@]}") "${W4_ARGS[@]}"
        order_metrics W4ws "$b"
        stop "${SERVER_PIDS[@]}"
        case $b in
            sqlite) url="sqlite://$WORK/append.db" ;;
            postgres) url=$PG_URL ;;
            *) continue ;; # one process appending: a broker changes nothing
        esac
        echo "-- W4 $b" >&2
        taskset -c $LOAD_CPU "$BIN/append-bench" --storage "$url" --writers 50 --messages 200 | tee "$WORK/w4.out"
        grep '^{' "$WORK/w4.out" | jq -c --arg b "$b" '. + {scenario: "W4", target: "chat-rs", backend: $b}' >>"$RESULTS"
    done
}

for s in $SCENARIOS; do
    case $s in
        W1|W2|W3|W5) run_socket_scenario "$s" ;;
        W4) run_w4 ;;
        W1C) run_w1c ;;
        M) run_mem ;;
        *) echo "unknown scenario $s (W1 W1C W2 W3 W4 W5 M all)" >&2; exit 2 ;;
    esac
done

# One table: each chat-rs figure beside the reference's of the same
# scenario, and their ratio (for latency and memory, lower is better).
echo
echo "machine: $CPU, $(nproc) cores"
jq -rs -f "$ROOT/benches/summary.jq" "$RESULTS"
[[ -f $OUT/order.jsonl ]] && { echo "order counters (0 expected on one instance):"; cat "$OUT/order.jsonl"; }
[[ -f $OUT/memory.jsonl ]] && { echo "memory:"; cat "$OUT/memory.jsonl"; }
echo "raw results: $RESULTS"
