#!/usr/bin/env bash
# A large upload against the server's memory: starts chat-server on a
# temporary SQLite file (attachments beside it), uploads a file of SIZE
# bytes (default 1 GiB) with curl streaming it from disk (`-T`; the URL
# without its trailing slash, else curl appends the file name), samples the
# server's RSS every 100 ms while it runs, and prints the baseline, the
# peak, the end and the throughput; then downloads it back and compares.
#
#   benches/upload-rss.sh [PATH/TO/chat-server]   # default: the release build
#   SIZE=$((4*1024*1024*1024)) benches/upload-rss.sh
#
# Needs curl. The server is pinned to core 0 and curl to core 1 (taskset)
# when there are two cores. Prints a RESULT {json} line at the end.
set -euo pipefail

BIN="${1:-${CARGO_TARGET_DIR:-target}/release/chat-server}"
[[ -x "$BIN" ]] || { echo "not an executable: $BIN (cargo build --release -p chat-server)" >&2; exit 2; }
SIZE="${SIZE:-$((1024 * 1024 * 1024))}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
# taskset execs its command: $! is the server's own pid.
if [[ "$(nproc)" -ge 2 ]]; then PIN0=(taskset -c 0); PIN1=(taskset -c 1); else PIN0=(); PIN1=(); fi

"${PIN0[@]}" "$BIN" --listen "127.0.0.1:$PORT" --storage "sqlite://$WORK/chat.db" \
  --jwt-secret upload-rss-bench-secret-0123456789 \
  --max-upload-bytes $((SIZE * 2)) --upload-quota-bytes $((SIZE * 4)) \
  >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
curl -sf -X POST "$BASE/api/users/register/" -H 'Content-Type: application/json' \
  -d '{"username":"bench","email":"bench@example.com","password":"bench-password"}' >/dev/null
TOKEN="$(curl -sf -X POST "$BASE/api/users/token/" -H 'Content-Type: application/json' \
  -d '{"username":"bench","password":"bench-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')"

# Random bytes (no compressible shortcut anywhere), written before timing.
head -c "$SIZE" /dev/urandom >"$WORK/file.bin"
sync
sleep 1
BASELINE="$(rss)"

: >"$WORK/rss.txt"
( while kill -0 "$SERVER" 2>/dev/null; do rss >>"$WORK/rss.txt"; sleep 0.1; done ) &
SAMPLER=$!
START="$(date +%s.%N)"
"${PIN1[@]}" curl -sS -X POST -T "$WORK/file.bin" -H "Authorization: Bearer $TOKEN" \
  "$BASE/chat/attachments?name=big.bin" >"$WORK/upload.json" || true

END="$(date +%s.%N)"
sleep 0.5
kill "$SAMPLER" 2>/dev/null || true
AFTER="$(rss)"
PEAK="$(sort -n "$WORK/rss.txt" | tail -1)"
ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/upload.json")"

"${PIN1[@]}" curl -sf "$BASE/chat/attachments/$ID/content/" -H "Authorization: Bearer $TOKEN" -o "$WORK/back.bin"
cmp -s "$WORK/file.bin" "$WORK/back.bin" && SAME=true || SAME=false

python3 - "$SIZE" "$BASELINE" "$PEAK" "$AFTER" "$START" "$END" "$SAME" <<'EOF'
import json, sys
size, base, peak, after = (int(x) for x in sys.argv[1:5])
secs = float(sys.argv[6]) - float(sys.argv[5])
same = sys.argv[7] == "true"
mib = lambda kib: kib / 1024
print(f"upload of {size / 2**20:.0f} MiB in {secs:.1f} s ({size / 2**20 / secs:.0f} MiB/s)")
print(f"server RSS: {mib(base):.1f} MiB before, peak {mib(peak):.1f} MiB (+{mib(peak - base):.1f}), "
      f"{mib(after):.1f} MiB after; downloaded back identical: {same}")
print("RESULT " + json.dumps({"scenario": "upload-rss", "bytes": size, "secs": round(secs, 2),
      "rss_before_kib": base, "rss_peak_kib": peak, "rss_after_kib": after, "identical": same}))
EOF
