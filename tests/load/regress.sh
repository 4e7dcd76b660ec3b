#!/usr/bin/env bash
# The performance regression check: runs every figure of tests/load/baseline.json recorded for this machine's
# kind ("<cores> x <CPU model>", `report.py kind`) ROUNDS times through compare.sh (the Ferrocable binary only:
# no peer is needed to compare with a baseline) and fails when the median of a metric fell back by more than the
# baseline's tolerance (20%): a throughput below, a cost above, a count that was 0 and is not.
#
#   tests/load/regress.sh [ROUNDS] [FIGURE...]       check (default 3 rounds, every figure)
#   RECORD=1 tests/load/regress.sh [ROUNDS] FIGURE...  measure and write the figures' baseline for this kind
#
# The machine must be otherwise idle: a busy machine fails the check, it does not pass it. Results go to
# RESULTS_DIR (default target/bench/regress-<time>)/<figure>/round-N.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
baseline=${BASELINE:-$root/tests/load/baseline.json}
count=${1:-3}
shift || true
out=${RESULTS_DIR:-$root/target/bench/regress-$(date +%Y%m%d-%H%M%S)}
report() { python3 "$root/tests/load/report.py" "$@"; }

kind=$(report kind)
mapfile -t figures < <(report figures "$baseline")
if [ ${#figures[@]} -eq 0 ] && [ -z "${RECORD:-}" ]; then
  echo "no baseline figures for this machine kind ($kind): record them with RECORD=1 $0 ROUNDS FIGURE..." >&2
  exit 1
fi
if [ -n "${RECORD:-}" ]; then
  [ $# -gt 0 ] || { echo "RECORD=1 needs the names of the figures to record" >&2; exit 1; }
  # A new machine kind takes the figures' scenarios from any kind that has them.
  mapfile -t figures < <(python3 - "$baseline" "$@" <<'EOF'
import json, sys
baseline = json.load(open(sys.argv[1]))
seen = {}
for kind in baseline["kinds"].values():
    for f in kind["figures"]:
        seen.setdefault(f["name"], " ".join(f["args"]))
for name in sys.argv[2:]:
    if name not in seen:
        sys.exit(f"unknown figure {name}")
    print(f"{name}\t{seen[name]}")
EOF
  )
fi

failed=0
for line in "${figures[@]}"; do
  name=${line%%$'\t'*}; args=${line#*$'\t'}
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  read -r -a argv <<<"$args"
  for ((n = 1; n <= count; n++)); do
    echo "$name: round $n of $count, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    unset ANYCABLE_GO_BIN
    RESULTS_DIR="$out/$name/round-$n" "$root/tests/load/compare.sh" "${argv[@]}" >/dev/null
  done
  if [ -n "${RECORD:-}" ]; then
    report record "$baseline" "$name" "$out/$name"
    echo "$name: recorded for $kind" >&2
  elif ! report check "$baseline" "$name" "$out/$name"; then
    failed=1
  fi
  echo
done
echo "results: $out" >&2
exit $failed
