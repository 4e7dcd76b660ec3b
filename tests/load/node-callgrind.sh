#!/usr/bin/env bash
# Counts the instructions the Node benchmark app spends per operation, with valgrind's callgrind: immune to
# the noise of a shared machine, so before/after comparisons of the Node package hold across runs.
#
#   tests/load/node-callgrind.sh ROOT MODE SCENARIO [ferrocable-bench arguments...]
#
# ROOT: a checkout of the npm package with its addon built (`npm run build`); MODE: inprocess | app | grpc
# (tests/load/peers/node-bench.mjs under ROOT); SCENARIO: perform | connect. The app runs under callgrind,
# a first run of the scenario warms it up (JIT), the counters are zeroed, the scenario runs again, and the
# counters are dumped once the server has finished its work (Disconnect calls included). Prints the
# instructions per operation (round trip or connect+subscribe) on the Node main thread and on every other
# thread together (tokio workers, V8 helpers; the gRPC backend, in grpc mode, runs on the main thread).
set -euo pipefail
root=$(cd "${1:?ROOT}" && pwd); mode=${2:?MODE}; scenario=${3:?SCENARIO}; shift 3
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_BIN:-$here/target/release/ferrocable-bench}
out=$(mktemp -d "${TMPDIR:-/tmp}/node-callgrind.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PORT=$port BROADCAST_PORT=$bport valgrind --tool=callgrind --smc-check=all-non-file --separate-threads=yes \
  --callgrind-out-file="$out/cg.%p" node "$root/tests/load/peers/node-bench.mjs" "$mode" >"$out/log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break; sleep 1; done
url="ws://127.0.0.1:$port/cable"
"$bench" "$scenario" --url "$url" --json "$@" >/dev/null 2>&1
sleep 5
callgrind_control -z "$vg" >/dev/null 2>&1
"$bench" "$scenario" --url "$url" --json "$@" >"$out/run.json" 2>/dev/null
sleep 5
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
python3 - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
run = json.load(open(f"{out}/run.json"))
ops = run.get("round_trips") or run.get("succeeded")
main = other = 0
for path in glob.glob(f"{out}/cg.*.1-*"):
    total = next((int(l.split()[1]) for l in open(path) if l.startswith("summary:")), 0)
    thread = next((int(l.split()[1]) for l in open(path) if l.startswith("thread:")), 0)
    if thread == 1:
        main += total
    else:
        other += total
print(f"{run['scenario']}: {ops} operations ({run.get('failures', run.get('failed'))} failed)")
print(f"instructions per operation: main thread {main / ops:,.0f}, other threads {other / ops:,.0f}, total {(main + other) / ops:,.0f}")
PY
echo "callgrind files: $out" >&2
