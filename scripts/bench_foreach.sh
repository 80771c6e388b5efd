#!/usr/bin/env bash
# Issue 33: the multi-tensor optimizer step on CPU, measured as a ratio. Runs
# `clinic bench RECIPE --set optim.foreach=false` and `=true` alternately,
# REPEAT times each (interleaved: the shared VM's noise hits both alike), and
# prints each run's updates/s and optimizer seconds per update, then the
# medians and the on/off ratio.
#   scripts/bench_foreach.sh [RECIPE]   (default multi30k/admin)
#   env: CLINIC (build/bin/clinic) STEPS (10) REPEAT (3) THREADS (0 = all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/median.sh
source scripts/lib/median.sh
CLINIC=${CLINIC:-build/bin/clinic}
RECIPE=${1:-multi30k/admin}
declare -A ups opt
for ((i = 1; i <= ${REPEAT:-3}; i++)); do
  for f in false true; do
    j=$("$CLINIC" bench "$RECIPE" --steps "${STEPS:-10}" --json --set optim.foreach=$f \
          --set train.threads="${THREADS:-0}" 2>/dev/null)
    u=$(echo "$j" | grep -o '"updates_per_s": [0-9.]*' | sed 's/.*: //')
    o=$(echo "$j" | grep -o '"optimizer_s": [0-9.]*' | sed 's/.*: //')
    echo "run $i foreach=$f: $u updates/s, optimizer $o s/update"
    ups[$f]+="$u "; opt[$f]+="$o "
  done
done
for f in false true; do echo "median foreach=$f: $(median "${ups[$f]}") updates/s, optimizer $(median "${opt[$f]}") s/update"; done
awk -v a="$(median "${ups[false]}")" -v b="$(median "${ups[true]}")" -v oa="$(median "${opt[false]}")" -v ob="$(median "${opt[true]}")" \
  'BEGIN { printf "foreach on / off: %.3f x updates/s; optimizer step %.3f x the time\n", b / a, ob / oa }'
