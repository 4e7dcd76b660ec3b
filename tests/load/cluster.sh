#!/usr/bin/env bash
# Cross-node broadcast figures: subscribers on node A, publications sent over HTTP to node B, delivered
# through the cluster pub/sub; a third node C with no subscribers at all shows what a stream without local
# subscribers costs a node. Prints one markdown table row and keeps every JSON report.
#
#   tests/load/cluster.sh ENGINE [ferrocable-bench broadcast arguments...]
#
# ENGINE: single     one node, no pub/sub (--url and --broadcast-url both on node A; no B or C)
#         redis      pubsub=redis (pubsub_subscribe=all)     redis-stream  pubsub=redis, pubsub_subscribe=stream
#         nats       pubsub=nats  (pubsub_subscribe=all)     nats-stream   pubsub=nats,  pubsub_subscribe=stream
#
# redis-server and nats-server (Debian packages) run on free loopback ports. Nodes and the engine are pinned
# to SERVER_CPU (default 0), the load tool to TOOL_CPU (default 1). CPU columns are percent of one core over
# the whole run (connect, publish, grace), read from /proc. Results: RESULTS_DIR (default
# target/bench/cluster-<engine>-<time>).
set -euo pipefail

engine=${1:?engine: single|redis|redis-stream|nats|nats-stream}
shift

root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
ferrocable=${FERROCABLE_BIN:-$root/target/release/ferrocable}
server_cpu=${SERVER_CPU:-0}
tool_cpu=${TOOL_CPU:-1}
results=${RESULTS_DIR:-$root/target/bench/cluster-$engine-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"

[ -x "$bench" ] || { echo "missing $bench: run cargo build --release -p ferrocable-bench" >&2; exit 1; }
[ -x "$ferrocable" ] || { echo "missing $ferrocable: run cargo build --release -p ferrocable" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
find_program() { PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v "$1" || { echo "missing $1: run scripts/setup.sh" >&2; exit 1; }; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_port() { # port pid: the process must be alive and listening (a free port can be taken meanwhile)
  local deadline=$((SECONDS + 20))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "nothing listening on $1" >&2; return 1; }
    sleep 0.1
  done
  sleep 0.2
  kill -0 "$2" 2>/dev/null || { echo "process $2 exited (port $1 taken?); see $results" >&2; return 1; }
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cluster_args=()
engine_pid=""
case "$engine" in
  single) ;;
  redis | redis-stream)
    port=$(free_port)
    taskset -c "$server_cpu" "$(find_program redis-server)" --port "$port" --bind 127.0.0.1 --save "" \
      --appendonly no --loglevel warning >"$results/redis.log" 2>&1 &
    engine_pid=$!
    pids+=("$engine_pid")
    wait_port "$port" "$engine_pid"
    cluster_args=(--pubsub redis --redis_url "redis://127.0.0.1:$port/0")
    ;;
  nats | nats-stream)
    port=$(free_port)
    taskset -c "$server_cpu" "$(find_program nats-server)" -a 127.0.0.1 -p "$port" >"$results/nats.log" 2>&1 &
    engine_pid=$!
    pids+=("$engine_pid")
    wait_port "$port" "$engine_pid"
    cluster_args=(--pubsub nats --nats_servers "nats://127.0.0.1:$port")
    ;;
  *) echo "unknown engine $engine" >&2; exit 2 ;;
esac
case "$engine" in
  *-stream) cluster_args+=(--pubsub_subscribe stream) ;;
  redis | nats) cluster_args+=(--pubsub_subscribe all) ;;
esac

start_node() { # name -> sets node_pid, node_port, node_bport
  node_port=$(free_port)
  node_bport=$(free_port)
  taskset -c "$server_cpu" "$ferrocable" --public --host 127.0.0.1 --port "$node_port" \
    --http_broadcast_port "$node_bport" --log_level warn "${cluster_args[@]}" >"$results/node-$1.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  wait_port "$node_port" "$node_pid"
}

start_node a
a_pid=$node_pid a_port=$node_port a_bport=$node_bport
if [ "$engine" = single ]; then
  b_pid="" c_pid=""
  broadcast_url="http://127.0.0.1:$a_bport/_broadcast"
else
  start_node b
  b_pid=$node_pid
  broadcast_url="http://127.0.0.1:$node_bport/_broadcast"
  start_node c
  c_pid=$node_pid
fi
sleep 1

declare -A before
for p in $b_pid $c_pid $engine_pid; do before[$p]=$(cpu_ticks "$p"); done
started=$(date +%s.%N)
taskset -c "$tool_cpu" "$bench" broadcast --url "ws://127.0.0.1:$a_port/cable" --broadcast-url "$broadcast_url" \
  --server-pid "$a_pid" --json "$@" >"$results/report.json" 2>"$results/bench.log"
elapsed=$(python3 -c "import time; print(time.time() - $started)")
hz=$(getconf CLK_TCK)
cpu_of() { # pid -> percent of one core over the run, or "-"
  [ -n "$1" ] || { echo "-"; return; }
  python3 -c "print(f'{($(cpu_ticks "$1") - ${before[$1]}) / $hz / $elapsed * 100:.1f}')"
}
b_cpu=$(cpu_of "$b_pid")
c_cpu=$(cpu_of "$c_pid")
engine_cpu=$(cpu_of "$engine_pid")

python3 - "$results/report.json" "$engine" "$b_cpu" "$c_cpu" "$engine_cpu" "$elapsed" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
engine, b_cpu, c_cpu, engine_cpu, elapsed = sys.argv[2:7]
lat = report["latency"]
published = report["published"]
per_pub = "-"
if c_cpu != "-" and published:
    # CPU-seconds node C spent per publication (including its idle baseline), in microseconds
    per_pub = f"{float(c_cpu) / 100 * float(elapsed) / published * 1e6:.1f}"
print(f"| {engine} | {report['subscribers']} | {report['streams']} | {published} | {report['delivered_per_second']:.0f} "
      f"| {lat['p50_ms']} | {lat['p95_ms']} | {lat['p99_ms']} | {report['missing']} | {report['out_of_order']} "
      f"| {report['cpu']['server_cpu_percent']} | {b_cpu} | {c_cpu} | {per_pub} | {engine_cpu} |")
EOF
echo "results: $results" >&2
