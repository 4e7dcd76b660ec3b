#!/usr/bin/env bash
# Where the Puma process of examples/rails-chat keeps the memory of idle connections, for one server:
#
#   tests/load/rails-memory.sh ferrocable|actioncable [CONNECTIONS]    (default 5,000)
#
# Starts the example with MEMORY_DEBUG=1 (its /debug/memory route: Ruby GC, malloc and thread readings),
# pinned to SERVER_CPU like compare.sh, serves its page once, then reads /proc/PID/smaps and /debug/memory;
# holds CONNECTIONS idle connections with `ferrocable-bench idle` (on TOOL_CPU) and reads again 5 s after the
# last one connected (when the load tool reads RSS), then after a full GC, then after malloc_trim. Prints the
# RSS delta of each reading by kind of memory (tests/load/memory.py). Readings stay in OUT
# (default target/bench/rails-memory-<server>-<time>). Extra environment for the app: APP_ENV="VAR=value ...".
# WARM=1 first connects CONNECTIONS clients once and closes them, before the first reading: what is left
# then grows with connections, not with the process warming up (Ruby heap, threads, database connections).
set -euo pipefail
server=${1:?server: ferrocable|actioncable}
connections=${2:-5000}
root=$(cd "$(dirname "$0")/../.." && pwd)
app=$root/examples/rails-chat
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
memory="python3 $root/tests/load/memory.py"
out=${OUT:-$root/target/bench/rails-memory-$server-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
[ -x "$bench" ] || { echo "missing $bench: run cargo build --release -p ferrocable-bench" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web_port=$(free_port); cable_port=$(free_port); broadcast_port=$(free_port)
case "$server" in
  ferrocable) env=(ANYCABLE_HOST=127.0.0.1 ANYCABLE_PORT=$cable_port ANYCABLE_HTTP_BROADCAST_PORT=$broadcast_port)
    ws_port=$cable_port ;;
  actioncable) env=(CABLE_ADAPTER=async); ws_port=$web_port ;;
  *) echo "unknown server $server" >&2; exit 1 ;;
esac
# shellcheck disable=SC2206
env+=(MEMORY_DEBUG=1 PORT=$web_port ${APP_ENV:-})
(cd "$app" && exec env "${env[@]}" taskset -c "${SERVER_CPU:-0}" bin/start) >"$out/server.log" 2>&1 &
pid=$!
bench_pid=""
trap 'kill $pid 2>/dev/null || true; [ -z "$bench_pid" ] || kill $bench_pid 2>/dev/null || true' EXIT

wait_http() { # url
  local deadline=$((SECONDS + 300))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "not ready: $1 (see $out/server.log)" >&2; exit 1; }
    sleep 0.2
  done
}
[ "$server" = actioncable ] || wait_http "http://127.0.0.1:$cable_port/health"
wait_http "http://127.0.0.1:$web_port/"
debug="http://127.0.0.1:$web_port/debug/memory"
curl -fsS -o /dev/null "$debug" # loads what the route itself needs before the first reading
idle() { # hold seconds
  taskset -c "${TOOL_CPU:-1}" "$bench" idle --url "ws://127.0.0.1:$ws_port/cable?name=bench" --server-pid $pid \
    --connections "$connections" --hold "$1" --concurrency "${CONCURRENCY:-100}" --timeout 30 --json
}
if [ "${WARM:-0}" = 1 ]; then
  idle 1 >"$out/warm.json" 2>"$out/warm.log"
  # Wait for the server to see every warm-up connection closed.
  until [ "$(ss -Htn state established "( sport = :$ws_port )" | wc -l)" -eq 0 ]; do sleep 0.2; done
  sleep 5
fi
$memory snap $pid "$out/before.json" "$debug"

idle 30 >"$out/bench.json" 2>"$out/bench.log" &
bench_pid=$!
until [ "$(ss -Htn state established "( sport = :$ws_port )" | wc -l)" -ge "$connections" ]; do
  kill -0 $bench_pid 2>/dev/null || { echo "the load tool ended early (see $out/bench.log)" >&2; exit 1; }
  sleep 0.2
done
sleep 5
$memory snap $pid "$out/after.json" "$debug"
curl -fsS -o /dev/null "$debug?gc=1"
$memory snap $pid "$out/after-gc.json" "$debug"
curl -fsS -o /dev/null "$debug?gc=1&trim=1"
$memory snap $pid "$out/after-trim.json" "$debug"
wait $bench_pid || true
bench_pid=""

for reading in after after-gc after-trim; do
  printf '\n### %s: %s, %s idle connections\n\n' "$reading" "$server" "$connections"
  $memory diff "$out/before.json" "$out/$reading.json" "$connections"
done
echo "readings: $out" >&2
