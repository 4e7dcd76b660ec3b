#!/usr/bin/env bash
# What the memory broker's history costs per cached message: starts the ferrocable binary twice, without a broker
# and with `--broker memory`, registers the same MESSAGES broadcasts of about BYTES bytes of data over STREAMS
# streams (HTTP batches of 1,000; history_limit = MESSAGES / STREAMS, so every message stays cached) and reads
# the server's RSS before and after. The broker's cost per message is the difference of the two growths over
# MESSAGES (the run without a broker takes the same requests, so what serving them leaves behind cancels out).
#
#   tests/load/broker-memory.sh [MESSAGES] [STREAMS] [BYTES]      defaults: 100000 1000 100
#
# FERROCABLE_BIN (default target/release/ferrocable); the server runs pinned to SERVER_CPU (default 0).
set -euo pipefail

messages=${1:-100000}; streams=${2:-1000}; bytes=${3:-100}
root=$(cd "$(dirname "$0")/../.." && pwd)
ferrocable=${FERROCABLE_BIN:-$root/target/release/ferrocable}
[ -x "$ferrocable" ] || { echo "missing $ferrocable: run cargo build --release -p ferrocable" >&2; exit 1; }
limit=$(( (messages + streams - 1) / streams ))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true' EXIT

declare -A growth
for broker in none memory; do
  port=$(free_port); bport=$(free_port)
  taskset -c "${SERVER_CPU:-0}" "$ferrocable" --host 127.0.0.1 --port "$port" --http_broadcast_port "$bport" \
    --broadcast_adapter http --public --norpc --broker "$broker" --history_limit "$limit" >/dev/null 2>&1 &
  pid=$!
  deadline=$((SECONDS + 20))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "ferrocable --broker $broker did not start" >&2; exit 1; }
    sleep 0.2
  done
  sleep 1
  before=$(rss_kib "$pid")
  python3 - "$bport" "$messages" "$streams" "$bytes" <<'EOF'
import http.client, json, sys
port, messages, streams, size = (int(a) for a in sys.argv[1:])
conn = http.client.HTTPConnection("127.0.0.1", port)
for first in range(0, messages, 1000):
    batch = []
    for n in range(first, min(first + 1000, messages)):
        data = json.dumps({"n": n, "pad": ""})
        data = json.dumps({"n": n, "pad": "x" * max(0, size - len(data))})
        batch.append({"stream": f"history_{n % streams}", "data": data})
    conn.request("POST", "/_broadcast", json.dumps(batch), {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status not in (200, 201):
        sys.exit(f"broadcast answered {response.status}")
EOF
  sleep 2
  after=$(rss_kib "$pid")
  growth[$broker]=$((after - before))
  echo "broker=$broker: RSS $before -> $after KiB (+$((after - before)) KiB) after $messages messages of $bytes bytes over $streams streams" >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
python3 -c "
import sys
none, memory, messages = (int(a) for a in sys.argv[1:])
print(f'broker memory: {memory * 1024 / messages:,.1f} bytes of RSS growth per message; without a broker: '
      f'{none * 1024 / messages:,.1f}; the broker\'s cost: {(memory - none) * 1024 / messages:,.1f} bytes per message')
" "${growth[none]}" "${growth[memory]}" "$messages"
