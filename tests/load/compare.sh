#!/usr/bin/env bash
# Runs one load scenario against several servers in one run and writes a markdown table.
#
#   tests/load/compare.sh SCENARIO MODE [ferrocable-bench arguments...]
#
# SCENARIO: idle | broadcast | connect | perform | reconnect-storm | attack | sse (arguments after MODE go to
#           `ferrocable-bench SCENARIO`). attack also opens a metrics listener on each server and attacks all
#           three listeners (main, HTTP broadcast, metrics). sse starts every server with `--sse` (public mode:
#           its clients read a public stream).
# MODE:     public (no backend; $pubsub streams, HTTP broadcasts), rpc (every server calls the same
#           benchmark gRPC backend, `ferrocable-bench backend`), http-rpc (the same backend over AnyCable's HTTP
#           RPC; it answers gRPC on $RPC_PORT too, so a peer command may use either in the same run) or jwt (no
#           backend; every client brings an HS256 token in `?jid=`, made by tests/load/jwt-token.py, and reads
#           public streams).
#
# Servers: Ferrocable always (FERROCABLE_BIN, default target/release/ferrocable); AnyCable-Go when
# ANYCABLE_GO_BIN points at its binary; any other server through PEER_<NAME>_CMD (a command that starts it
# on $PORT with HTTP broadcasts on $BROADCAST_PORT) and PEER_<NAME>_URL (its WebSocket URL). Nothing here
# builds or downloads a peer. PEER_<NAME>_QUERY is appended to its WebSocket URL (e.g. `?name=bench`) and
# PEER_<NAME>_HEALTH names the path answered once it is ready (default /health). PEER_<NAME>_WARMUP is a URL
# fetched once the peer is ready, before the scenario (`{app_port}` in it stands for $APP_PORT, a free port
# the command gets too): e.g. the page of an app whose WebSockets are served on another port, so it has
# served the same request as a peer whose readiness check is that page.
#
# BROKER=both adds a broker variant of Ferrocable and of AnyCable-Go beside the plain ones: ferrocable-broker
# (`--broker memory`) and anycable-go-broker (`--presets=broker`); BROKER=only runs the broker variants alone
# (reconnect-storm needs them).
# SKIP_FERROCABLE=1 leaves the ferrocable binary out (to compare peers only, e.g. two modes of one app).
# REVERSE=1 runs the servers in the opposite order (rounds.sh alternates it between rounds).
# The server runs pinned to SERVER_CPU (default 0), the load tool and the backend to TOOL_CPU (default 1);
# a list such as SERVER_CPU=0,1 TOOL_CPU=0,1 leaves both on every core.
# Results: one JSON per server in RESULTS_DIR (default target/bench/<scenario>-<mode>-<time>), and
# RESULTS_DIR/table.md.
set -euo pipefail

scenario=${1:?scenario: idle|broadcast|connect|perform|reconnect-storm|attack|sse}
mode=${2:?mode: public|rpc|http-rpc|jwt}
shift 2

root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_BIN:-$root/target/release/ferrocable-bench}
ferrocable=${FERROCABLE_BIN:-$root/target/release/ferrocable}
server_cpu=${SERVER_CPU:-0}
tool_cpu=${TOOL_CPU:-1}
results=${RESULTS_DIR:-$root/target/bench/$scenario-$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"

[ -x "$bench" ] || { echo "missing $bench: run cargo build --release -p ferrocable-bench" >&2; exit 1; }
[ -x "$ferrocable" ] || { echo "missing $ferrocable: run cargo build --release -p ferrocable" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # user + system, in clock ticks
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url, seconds
  local deadline=$((SECONDS + ${2:-20}))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "not ready: $1" >&2; return 1; }
    sleep 0.2
  done
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

jwt_secret=bench-secret
backend_args=()
rpc_port=""
http_rpc_port=""
if [ "$mode" = rpc ] || [ "$mode" = http-rpc ]; then
  rpc_port=$(free_port)
fi
if [ "$mode" = http-rpc ]; then
  http_rpc_port=$(free_port)
fi

# name|binary or peer:NAME|extra server arguments
servers=()
broker=${BROKER:-}
case "$broker" in ""|both|only) ;; *) echo "BROKER must be both or only, not $broker" >&2; exit 1 ;; esac
if [ -z "${SKIP_FERROCABLE:-}" ]; then
  [ "$broker" = only ] || servers+=("ferrocable|$ferrocable|")
  [ -z "$broker" ] || servers+=("ferrocable-broker|$ferrocable|--broker memory")
fi
if [ -n "${ANYCABLE_GO_BIN:-}" ]; then
  [ "$broker" = only ] || servers+=("anycable-go|$ANYCABLE_GO_BIN|")
  [ -z "$broker" ] || servers+=("anycable-go-broker|$ANYCABLE_GO_BIN|--presets=broker")
fi
for var in $(compgen -v | grep -E '^PEER_[A-Z0-9_]+_CMD$' || true); do
  name=${var#PEER_}; name=${name%_CMD}
  servers+=("$(echo "$name" | tr 'A-Z_' 'a-z-')|peer:$name|")
done

if [ -n "${REVERSE:-}" ]; then
  reversed=()
  for ((i = ${#servers[@]} - 1; i >= 0; i--)); do reversed+=("${servers[$i]}"); done
  servers=("${reversed[@]}")
fi

for entry in "${servers[@]}"; do
  IFS='|' read -r name bin server_args <<<"$entry"
  read -r -a variant_args <<<"$server_args"
  port=$(free_port); bport=$(free_port); aport=$(free_port); mport=$(free_port)
  url="ws://127.0.0.1:$port/cable"
  log="$results/$name.log"
  common=(--host 127.0.0.1 --port "$port" --http_broadcast_port "$bport" --broadcast_adapter http)
  if [ "$scenario" = attack ]; then common+=(--metrics_http /metrics --metrics_port "$mport"); fi
  if [ "$scenario" = sse ]; then common+=(--sse); fi
  case "$mode" in
    public) mode_args=(--public --norpc) ;;
    rpc) mode_args=(--rpc_host "127.0.0.1:$rpc_port") ;;
    http-rpc) mode_args=(--rpc_host "http://127.0.0.1:$http_rpc_port") ;;
    jwt)
      mode_args=(--public_streams --norpc --jwt_secret "$jwt_secret")
      url+="?jid=$(python3 "$root/tests/load/jwt-token.py" "$jwt_secret")"
      ;;
    *) echo "unknown mode $mode" >&2; exit 1 ;;
  esac
  if [ -n "$rpc_port" ]; then
    taskset -c "$tool_cpu" "$bench" backend --listen "127.0.0.1:$rpc_port" ${http_rpc_port:+--http-listen "127.0.0.1:$http_rpc_port"} \
      --broadcast-url "http://127.0.0.1:$bport/_broadcast" 2>"$results/$name-backend.log" &
    backend_pid=$!; pids+=("$backend_pid")
  fi
  case "$bin" in
    peer:*)
      peer=${bin#peer:}
      cmd_var="PEER_${peer}_CMD"; url_var="PEER_${peer}_URL"; query_var="PEER_${peer}_QUERY"
      health_var="PEER_${peer}_HEALTH"
      url=${!url_var:-$url}${!query_var:-}
      PORT=$port BROADCAST_PORT=$bport RPC_PORT=$rpc_port HTTP_RPC_PORT=$http_rpc_port APP_PORT=$aport taskset -c "$server_cpu" bash -c "${!cmd_var}" \
        >"$log" 2>&1 &
      ;;
    *)
      ANYCABLE_DISABLE_TELEMETRY=true taskset -c "$server_cpu" "$bin" "${common[@]}" "${mode_args[@]}" \
        --ping_interval 3 ${variant_args[@]+"${variant_args[@]}"} >"$log" 2>&1 &
      ;;
  esac
  server_pid=$!; pids+=("$server_pid")
  health=${url/ws:/http:}; health=${health%%/cable*}
  if [[ "$bin" == peer:* ]]; then health_var="PEER_${bin#peer:}_HEALTH"; health+=${!health_var:-/health}; else health+=/health; fi
  wait_http "$health" "${READY_TIMEOUT:-300}" || { echo "$name did not start; see $log" >&2; continue; }
  if [[ "$bin" == peer:* ]]; then
    warmup_var="PEER_${bin#peer:}_WARMUP"; warmup=${!warmup_var:-}
    if [ -n "$warmup" ]; then
      wait_http "${warmup//\{app_port\}/$aport}" 60 || { echo "$name: warm-up failed; see $log" >&2; kill "$server_pid"; continue; }
    fi
  fi
  # A peer started through bash -c: measure the real server process (the child), not the shell.
  real_pid=$(pgrep -P "$server_pid" | head -1 || true); real_pid=${real_pid:-$server_pid}
  echo "== $name ($url, pid $real_pid)" >&2
  extra=()
  case "$scenario" in
    broadcast|reconnect-storm) extra=(--broadcast-url "http://127.0.0.1:$bport/_broadcast") ;;
    sse) extra=(--broadcast-url "http://127.0.0.1:$bport/_broadcast" --events-url "http://127.0.0.1:$port/events") ;;
    attack)
      extra=(--broadcast-url "http://127.0.0.1:$bport/_broadcast" --listener "127.0.0.1:$port"
        --listener "127.0.0.1:$bport" --listener "127.0.0.1:$mport")
      ;;
  esac
  if [ -n "$rpc_port" ]; then backend_before=$(cpu_ticks "$backend_pid"); started=$(date +%s.%N); fi
  taskset -c "$tool_cpu" "$bench" "$scenario" --url "$url" --server-pid "$real_pid" --json "${extra[@]}" "$@" \
    >"$results/$name.json" || echo "$name: load tool failed" >&2
  # The backend's share of its core over the run: a backend near 100% would make the run measure the backend.
  if [ -n "$rpc_port" ] && [ -s "$results/$name.json" ]; then
    python3 - "$results/$name.json" "$backend_before" "$(cpu_ticks "$backend_pid")" "$started" "$(date +%s.%N)" \
      "$(getconf CLK_TCK)" <<'PY'
import json, sys
path, before, after, start, end, hz = sys.argv[1], *map(float, sys.argv[2:])
result = json.load(open(path))
result.setdefault("cpu", {})["backend_cpu_percent"] = round((after - before) / hz / max(end - start, 1e-9) * 100, 1)
json.dump(result, open(path, "w"), indent=2)
PY
  fi
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true
  if [ -n "$rpc_port" ]; then kill "$backend_pid" 2>/dev/null || true; wait "$backend_pid" 2>/dev/null || true; fi
done

python3 "$root/tests/load/report.py" table "$results" > "$results/table.md"
cat "$results/table.md"
echo "results: $results" >&2
