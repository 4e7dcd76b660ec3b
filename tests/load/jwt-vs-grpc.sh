#!/usr/bin/env bash
# Connect + subscribe rate with JWT identification against the same through a Connect call to trivial gRPC
# backends in three languages, in one run:
#
#   tests/load/jwt-vs-grpc.sh [ROUNDS] [CLIENTS]
#
# Backends (each answering Connect from a `user=` cookie, nothing else): `ferrocable-bench backend` (Rust,
# tonic: the cheapest possible), tests/load/peers/grpc-backend.mjs (Node, @grpc/grpc-js) and
# tests/ruby/test/support/grpc_backend.rb (Ruby, Debian's ruby-grpc: what an AnyCable Ruby backend runs on).
# One server per backend, each with --jwt_secret and --rpc_host, plus one with --noauth --norpc (no
# identification: the floor). Every client subscribes to the public `$pubsub` stream `bench`, which the server
# confirms itself, and closes once confirmed, so only identification differs. Each round runs, in order: JWT
# (token in ?jid=, through the Rust-backed server; a token never reaches a backend), Connect through each
# backend, no identification. ROUNDS (3) rounds of CLIENTS (20000) clients per run at concurrency 100 over 16
# source addresses. Servers are pinned to SERVER_CPU (0), the load tool and the backends to TOOL_CPU (1).
# Prints a markdown table per run and the median ratios; JSON results stay in RESULTS_DIR.
set -euo pipefail

rounds=${1:-3}
clients=${2:-20000}
root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
ferrocable=${FERROCABLE_BIN:-$root/target/release/ferrocable}
server_cpu=${SERVER_CPU:-0}
tool_cpu=${TOOL_CPU:-1}
results=${RESULTS_DIR:-$root/target/bench/jwt-vs-grpc-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"
for bin in "$bench" "$ferrocable"; do
  [ -x "$bin" ] || { echo "missing $bin: run cargo build --release -p ferrocable -p ferrocable-bench" >&2; exit 1; }
done
command -v grpc_tools_ruby_protoc >/dev/null || { echo "grpc_tools_ruby_protoc missing (scripts/setup.sh installs it)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port, seconds
  local deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "nothing listens on $1" >&2; return 1; }
    sleep 0.2
  done
}
token() { python3 "$root/tests/load/jwt-token.py" "$1"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

grpc_tools_ruby_protoc -I "$root/proto" --ruby_out="$results" --grpc_out="$results" "$root/proto/rpc.proto"

declare -A server_port server_pid
# Starts a server on free ports; tries other ports when one was taken before the server bound it.
start_server() { # name, args...
  local name=$1; shift
  local attempt port pid
  for attempt in 1 2 3; do
    port=$(free_port)
    taskset -c "$server_cpu" "$ferrocable" --host 127.0.0.1 --port "$port" --http_broadcast_port "$(free_port)" \
      --public_streams --disconnect_backlog_size 1000000 "$@" 2>"$results/server-$name.log" &
    pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      server_pid[$name]=$pid; pids+=("$pid"); server_port[$name]=$port
      return 0
    fi
  done
  echo "server $name did not start: see $results/server-$name.log" >&2
  return 1
}

for backend in rust node ruby; do
  rpc_port=$(free_port)
  case $backend in
    rust) taskset -c "$tool_cpu" "$bench" backend --listen "127.0.0.1:$rpc_port" 2>"$results/backend-rust.log" & ;;
    node) taskset -c "$tool_cpu" node "$root/tests/load/peers/grpc-backend.mjs" "$rpc_port" \
            >"$results/backend-node.log" 2>&1 & ;;
    ruby) taskset -c "$tool_cpu" ruby "$root/tests/ruby/test/support/grpc_backend.rb" "$results" "$rpc_port" /dev/null \
            >"$results/backend-ruby.log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_port "$rpc_port"
  start_server "$backend" --rpc_host "127.0.0.1:$rpc_port" --jwt_secret bench-secret
done
start_server noauth --norpc --noauth

jwt=$(token bench-secret)
id='{"channel":"$pubsub","stream_name":"bench"}'
run() { # label, server, extra args...
  local label=$1 name=$2; shift 2
  echo "round $round: $label" >&2
  taskset -c "$tool_cpu" "$bench" connect --clients "$clients" --concurrency 100 --sources 16 --identifier "$id" \
    --server-pid "${server_pid[$name]}" --json "$@" >"$results/$round-$label.json"
}
for round in $(seq 1 "$rounds"); do
  run jwt rust --url "ws://127.0.0.1:${server_port[rust]}/cable?jid=$jwt"
  for backend in rust node ruby; do
    run "grpc-$backend" "$backend" --url "ws://127.0.0.1:${server_port[$backend]}/cable" --cookie user=bench
  done
  run noauth noauth --url "ws://127.0.0.1:${server_port[noauth]}/cable"
  uptime >&2
done

python3 - "$results" "$rounds" <<'PY' | tee "$results/table.md"
import json, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
labels = ["jwt", "grpc-rust", "grpc-node", "grpc-ruby", "noauth"]
runs = {(r, l): json.load(open(f"{results}/{r}-{l}.json")) for r in range(1, rounds + 1) for l in labels}
print("| round | " + " | ".join(f"{l} /s" for l in labels) + " | JWT ÷ gRPC rust / node / ruby | failed |")
print("| --- |" + " --- |" * (len(labels) + 2))
ratios = {b: [] for b in ("rust", "node", "ruby")}
for r in range(1, rounds + 1):
    rate = {l: runs[(r, l)]["per_second"] for l in labels}
    for b in ratios:
        ratios[b].append(rate["jwt"] / rate[f"grpc-{b}"])
    failed = sum(runs[(r, l)]["failed"] for l in labels)
    print(f"| {r} | " + " | ".join(f"{rate[l]:,.0f}" for l in labels) + " | "
          + " / ".join(f"{ratios[b][-1]:.2f}x" for b in ratios) + f" | {failed} |")
print()
print("Median JWT ÷ gRPC: " + ", ".join(f"{b} {statistics.median(v):.2f}x" for b, v in ratios.items()))
cpu = {l: statistics.median(runs[(r, l)]["cpu"]["server_cpu_percent"] or 0 for r in range(1, rounds + 1)) for l in labels}
print("Median server CPU %: " + ", ".join(f"{l} {c:.0f}" for l, c in cpu.items()))
PY
