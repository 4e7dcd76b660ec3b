#!/usr/bin/env bash
# Runs one compare.sh comparison several times, alternating the order of the servers (A, B, then B, A, ...),
# and reports each round and the median ratio: on a shared machine only ratios measured in the same round
# mean anything, and the median of several rounds is what docs/benchmarks.md quotes.
#
#   tests/load/rounds.sh ROUNDS RATIOS SCENARIO MODE [ferrocable-bench arguments...]
#
# RATIOS: comma-separated A/B pairs of server names as compare.sh writes them, e.g.
# node-inprocess/node-grpc; each is reported as A ÷ B per round and as the median over the rounds.
# Every compare.sh setting applies (PEER_*_CMD, SKIP_FERROCABLE, SERVER_CPU, TOOL_CPU...). Results go to
# RESULTS_DIR (default target/bench/rounds-<scenario>-<time>)/round-N, the table to RESULTS_DIR/rounds.md,
# with the load average before each round.
set -euo pipefail

count=${1:?rounds}; ratios=${2:?ratios A/B,...}; scenario=${3:?scenario}; mode=${4:?mode}
shift 4
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${RESULTS_DIR:-$root/target/bench/rounds-$scenario-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
: > "$out/load.txt"
for ((n = 1; n <= count; n++)); do
  echo "round $n: load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt" >&2
  reverse=""
  if ((n % 2 == 0)); then reverse=1; fi
  REVERSE=$reverse RESULTS_DIR="$out/round-$n" "$root/tests/load/compare.sh" "$scenario" "$mode" "$@" >/dev/null
done
IFS=, read -r -a pairs <<<"$ratios"
python3 "$root/tests/load/report.py" rounds "$out" "${pairs[@]}" | tee "$out/rounds.md"
cat "$out/load.txt"
echo "results: $out" >&2
