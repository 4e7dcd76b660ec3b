#!/usr/bin/env bash
# What the Rails features that run Ruby per subscription cost in-process (examples/rails-chat, production mode,
# the app pinned to SERVER_CPU (default 0), the load tool to TOOL_CPU (default 1)):
#
#   tests/load/rails-inprocess.sh timers [SUBSCRIPTIONS]       (default 10,000)
#     SUBSCRIPTIONS idle connections subscribed to BenchmarkChannel (no timer), then, on a fresh app, to
#     ClockChannel (one 1 s `periodically` timer per subscription: a handler call that updates the
#     subscription's state and transmits). For each: RSS per connection as the load tool reads it, and over
#     WINDOW seconds (default 30) once every connection is in, the server's CPU % (/proc/PID/stat) and the
#     handler calls per second (rpc_call_total from the metrics endpoint).
#
#   tests/load/rails-inprocess.sh callbacks [SUBSCRIBERS]      (default 1,000)
#     `ferrocable-bench broadcast` at RATE publications/s (default 10) for DURATION s (default 10) through the
#     channel's `broadcast` action, to SUBSCRIBERS subscriptions of BenchmarkChannel streaming without a
#     block, then with `stream_from` given a coder and a block that transmits each message (`callback: true`).
#
# Readings stay in OUT (default target/bench/rails-inprocess-MODE-TIME).
set -euo pipefail
mode=${1:?mode: timers|callbacks}
root=$(cd "$(dirname "$0")/../.." && pwd)
app=$root/examples/rails-chat
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
out=${OUT:-$root/target/bench/rails-inprocess-$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
[ -x "$bench" ] || { echo "missing $bench: run cargo build --release -p ferrocable-bench" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pid=""
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true' EXIT

start_app() { # name; sets pid and cable_port
  local deadline=$((SECONDS + 300)) web_port
  web_port=$(free_port); cable_port=$(free_port)
  (cd "$app" && exec env ANYCABLE_HOST=127.0.0.1 ANYCABLE_PORT="$cable_port" ANYCABLE_HTTP_BROADCAST_PORT=0 \
    ANYCABLE_METRICS_HTTP=/metrics PORT="$web_port" taskset -c "${SERVER_CPU:-0}" bin/start) >"$out/$1-server.log" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$cable_port/health" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "not ready (see $out/$1-server.log)" >&2; exit 1; }
    sleep 0.2
  done
}

stop_app() {
  kill $pid; wait $pid 2>/dev/null || true
  pid=""
}

timers_run() { # name identifier
  local subscriptions=$3 window=${WINDOW:-30} bench_pid cpu0 calls0 cpu1 calls1
  start_app "$1"
  taskset -c "${TOOL_CPU:-1}" "$bench" idle --url "ws://127.0.0.1:$cable_port/cable?name=bench" --server-pid $pid \
    --connections "$subscriptions" --identifier "$2" --hold $((window + 20)) --concurrency 100 --timeout 60 \
    --json >"$out/$1.json" 2>"$out/$1.log" &
  bench_pid=$!
  until [ "$(ss -Htn state established "( sport = :$cable_port )" | wc -l)" -ge "$subscriptions" ]; do
    kill -0 $bench_pid 2>/dev/null || { echo "the load tool ended early (see $out/$1.log)" >&2; exit 1; }
    sleep 0.2
  done
  sleep 5
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); calls0=$(calls)
  sleep "$window"
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat"); calls1=$(calls)
  wait $bench_pid || true
  stop_app
  python3 - "$out/$1.json" "$1" "$window" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$((calls1 - calls0))" <<'PY'
import json, sys
path, name, window, cpu, hz, calls = sys.argv[1:]
r = json.load(open(path))
window = float(window)
print(f"| {name} | {r['connections']:,} | {r['failed']} | {r['rss_per_connection_bytes'] / 1024:,.1f} | "
      f"{100.0 * int(cpu) / int(hz) / window:.1f} | {int(calls) / window:,.0f} |")
PY
}

calls() { curl -fsS "http://127.0.0.1:$cable_port/metrics" | awk '$1 ~ /rpc_call_total$/ {print $2}'; }

callbacks_run() { # name identifier subscribers
  start_app "$1"
  taskset -c "${TOOL_CPU:-1}" "$bench" broadcast --url "ws://127.0.0.1:$cable_port/cable?name=bench" \
    --server-pid $pid --subscribers "$3" --identifier "$2" --via action --rate "${RATE:-10}" \
    --duration "${DURATION:-10}" --concurrency 100 --timeout 60 --json >"$out/$1.json" 2>"$out/$1.log" || true
  stop_app
  python3 - "$out/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency"]
print(f"| {sys.argv[2]} | {r['subscribers']:,} | {r['delivered_per_second']:,.1f} | {lat['p50_ms']:,.1f} | "
      f"{lat['p95_ms']:,.1f} | {r['missing']:,} | {r['out_of_order']:,} | {r['cpu']['server_cpu_percent'] or 0:.0f} |")
PY
}

case "$mode" in
  timers)
    echo "| run | subscriptions | failed | RSS KiB per connection | server CPU % (window) | handler calls/s |"
    echo "| --- | --- | --- | --- | --- | --- |"
    timers_run no-timer '{"channel":"BenchmarkChannel"}' "${2:-10000}"
    timers_run timer-1s '{"channel":"ClockChannel"}' "${2:-10000}"
    ;;
  callbacks)
    echo "| run | subscribers | delivered/s | p50 ms | p95 ms | missing | out of order | server CPU % |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    callbacks_run stream-from '{"channel":"BenchmarkChannel"}' "${2:-1000}"
    callbacks_run stream-from-block '{"channel":"BenchmarkChannel","callback":true}' "${2:-1000}"
    ;;
  *) echo "unknown mode $mode (timers|callbacks)" >&2; exit 1 ;;
esac
echo "readings: $out" >&2
