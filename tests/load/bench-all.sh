#!/usr/bin/env bash
# Runs every comparison docs/benchmarks.md reports, one compare.sh run per table, into OUT (default
# target/bench/all-<time>). Peers are optional and never built here: AnyCable-Go runs when ANYCABLE_GO_BIN
# points at its binary; the Node and Rails rows need `npm run build` and the Ruby extension
# (`make ruby-ext`). Bounded: the largest run holds 15,000 connections (the open files cap of this machine
# is 20,000 per process), every run ends by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/target/bench/all-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
compare="$root/tests/load/compare.sh"
only=${ONLY:-idle,broadcast,step,connect,perform,rails,jwt,reliable,sse}
want() { [[ ",$only," == *",$1,"* ]]; }

node_peers() {
  export PEER_NODE_INPROCESS_CMD="exec node $root/tests/load/peers/node-bench.mjs inprocess"
  export PEER_NODE_GRPC_CMD="exec node $root/tests/load/peers/node-bench.mjs grpc"
  export PEER_NODE_APP_CMD="exec node $root/tests/load/peers/node-bench.mjs app"
}

rails_peers() {
  local app="$root/examples/rails-chat"
  # Ferrocable inside Puma serves WebSockets on $PORT; Puma itself listens on $APP_PORT. Once ready it serves
  # the app's page once, as Action Cable's Puma does for its readiness check, so both processes have run the
  # same request before the first reading.
  export PEER_RAILS_FERROCABLE_CMD="cd $app && export ANYCABLE_HOST=127.0.0.1 ANYCABLE_PORT=\$PORT ANYCABLE_HTTP_BROADCAST_PORT=\$BROADCAST_PORT PORT=\$APP_PORT && exec bin/start"
  export PEER_RAILS_FERROCABLE_QUERY='?name=bench'
  export PEER_RAILS_FERROCABLE_WARMUP='http://127.0.0.1:{app_port}/'
  # The same app on plain Action Cable (async adapter) in Puma on $PORT.
  export PEER_RAILS_ACTIONCABLE_CMD="cd $app && export CABLE_ADAPTER=async && exec bin/start"
  export PEER_RAILS_ACTIONCABLE_QUERY='?name=bench'
  export PEER_RAILS_ACTIONCABLE_HEALTH='/'
}

run() { # name scenario mode args...
  local name=$1; shift
  echo "### $name" >&2
  RESULTS_DIR="$out/$name" "$compare" "$@" || echo "$name failed" >&2
}

if want idle; then run idle-15k idle public --connections 15000 --hold 5 --concurrency 500; fi
if want broadcast; then
  run broadcast-10k broadcast public --subscribers 10000 --rate 10 --duration 10 --concurrency 500
fi
if want step; then
  run step-40 broadcast public --subscribers 1000 --step 2000 --max-subscribers 15000 --p95-limit 250 \
    --publishers 40 --rate 40 --duration 5 --concurrency 500
  python3 "$root/tests/load/report.py" chart "$out/step-40" "$out/step-40/chart.svg"
fi
node_peers
if want sse; then
  run sse-5k sse public --clients 5000 --hold 5 --publications 200 --rate 100 --concurrency 200 --timeout 60
fi
if want connect; then run connect-rpc connect rpc --clients 3000 --concurrency 50; fi
if want perform; then run perform-rpc perform rpc --clients 100 --duration 10; fi
unset PEER_NODE_INPROCESS_CMD PEER_NODE_GRPC_CMD PEER_NODE_APP_CMD
if want rails; then
  ( rails_peers; unset ANYCABLE_GO_BIN; export SKIP_FERROCABLE=1
    run rails-idle-5k idle public --connections 5000 --hold 5 --concurrency 100 --timeout 30 --marginal
    run rails-connect connect public --clients 1000 --concurrency 20 --timeout 30
    for n in 1000 5000; do
      run "rails-broadcast-$n" broadcast public --subscribers "$n" --identifier '{"channel":"BenchmarkChannel"}' \
        --via action --rate 10 --duration 10 --concurrency 100 --timeout 30
    done )
fi
if want reliable; then
  ( export BROKER=both
    run reliable-broadcast-10k broadcast public --extended --subscribers 10000 --rate 10 --duration 10 --concurrency 500
    export BROKER=only
    run reconnect-storm-5k reconnect-storm public --clients 5000 --streams 10 --missed 10 --concurrency 5000 \
      --timeout 30 )
  echo "### broker-memory" >&2
  "$root/tests/load/broker-memory.sh" 100000 1000 100 >"$out/broker-memory.txt" || echo "broker-memory failed" >&2
fi
if want jwt; then
  echo "### jwt-vs-grpc" >&2
  RESULTS_DIR="$out/jwt-vs-grpc" "$root/tests/load/jwt-vs-grpc.sh" 3 20000 >/dev/null || echo "jwt-vs-grpc failed" >&2
fi
shopt -s nullglob
for t in "$out"/*/table.md; do
  printf '\n## %s\n\n' "$(basename "$(dirname "$t")")"
  cat "$t"
done > "$out/tables.md"
cat "$out/tables.md"
echo "results: $out" >&2
