#!/usr/bin/env bash
# Counts the server's instructions per connect + subscribe + close with callgrind (immune to a noisy machine).
#
#   tests/load/callgrind-connect.sh MODE [CLIENTS]
#
# MODE: noauth (--noauth --norpc), jwt (--jwt_secret, token in ?jid=), grpc (Connect through the benchmark
# backend, `disconnect_mode never` so only the connect path is counted). Every client subscribes to the public
# `$pubsub` stream `bench` (confirmed by the server itself) and closes. The server runs under valgrind pinned to
# SERVER_CPU (0), the load tool and the backend natively on TOOL_CPU (1). After a 300-client warm-up the counters
# are zeroed, CLIENTS (2000) clients run at concurrency 20, and the counters are dumped a few seconds later, so
# the dump holds exactly those sessions (plus the idle runtime). Prints instructions per client; the dump
# (callgrind.out.*) stays in RESULTS_DIR for callgrind_annotate.
#
# Under valgrind SHA-1 (the Sec-WebSocket-Accept) and SHA-256 (JWT HMAC) run their software fallbacks, as
# valgrind does not emulate the SHA extensions the real CPU has: read those functions' counts as upper bounds.
set -euo pipefail

mode=${1:?mode: noauth|jwt|grpc}
clients=${2:-2000}
root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
ferrocable=${FERROCABLE_BIN:-$root/target/release/ferrocable}
server_cpu=${SERVER_CPU:-0}
tool_cpu=${TOOL_CPU:-1}
results=${RESULTS_DIR:-$root/target/bench/callgrind-$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
token() { python3 "$root/tests/load/jwt-token.py" "$1"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port=$(free_port); bport=$(free_port)
url="ws://127.0.0.1:$port/cable"
client_args=()
case "$mode" in
  noauth) server_args=(--norpc --noauth --public_streams) ;;
  jwt)
    server_args=(--norpc --jwt_secret bench-secret --public_streams)
    url="$url?jid=$(token bench-secret)"
    ;;
  grpc)
    rpc_port=$(free_port)
    taskset -c "$tool_cpu" "$bench" backend --listen "127.0.0.1:$rpc_port" 2>"$results/backend.log" &
    pids+=($!)
    server_args=(--rpc_host "127.0.0.1:$rpc_port" --public_streams --disconnect_mode never)
    client_args=(--cookie user=bench)
    ;;
  *) echo "unknown mode $mode" >&2; exit 1 ;;
esac

taskset -c "$server_cpu" valgrind --tool=callgrind --callgrind-out-file="$results/callgrind.out.%p" \
  "$ferrocable" --host 127.0.0.1 --port "$port" --http_broadcast_port "$bport" "${server_args[@]}" \
  2>"$results/server.log" &
server=$!; pids+=("$server")
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "server did not start; see $results/server.log" >&2; exit 1; }
  sleep 0.5
done

run() { # clients
  taskset -c "$tool_cpu" "$bench" connect --url "$url" "${client_args[@]}" --clients "$1" --concurrency 20 \
    --timeout 60 --identifier '{"channel":"$pubsub","stream_name":"bench"}' --json
}
run 300 >/dev/null 2>&1
sleep 3
callgrind_control -z "$server" >/dev/null
run "$clients" >"$results/bench.json" 2>/dev/null
sleep 4
callgrind_control -d "$server" >/dev/null
sleep 1
dump=$(ls -t "$results"/callgrind.out.*.* | head -1)
total=$(awk '/^summary:/ {print $2; exit}' "$dump")
succeeded=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['succeeded'])" "$results/bench.json")
echo "$mode: $succeeded of $clients clients; $total instructions, $((total / clients)) per client ($dump)"
