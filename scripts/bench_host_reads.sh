#!/usr/bin/env bash
# Issue 33: what deciding each update on the device (train.host_reads:
# log_interval) costs or gains, as a ratio. Runs `clinic bench RECIPE` (the
# host decides and reads every update, phase-timed) and `clinic bench RECIPE
# --throughput` (decided on the device, read once after the clock)
# alternately, REPEAT times each (interleaved: the shared VM's noise hits both
# alike), prints each run's updates/s, the medians and the ratio. On the CPU a
# read costs nothing and the guard's extra small ops are all cost: this is
# why train.host_reads: auto stays every_update there.
#   scripts/bench_host_reads.sh [RECIPE]   (default multi30k/admin)
#   env: CLINIC (build/bin/clinic) STEPS (6) REPEAT (3) THREADS (1) PRECISION (bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/median.sh
source scripts/lib/median.sh
CLINIC=${CLINIC:-build/bin/clinic}
RECIPE=${1:-multi30k/admin}
declare -A ups
for ((i = 1; i <= ${REPEAT:-3}; i++)); do
  for mode in phases throughput; do
    flag=()
    [ "$mode" = throughput ] && flag=(--throughput)
    j=$("$CLINIC" bench "$RECIPE" --steps "${STEPS:-6}" --warmup 1 --json "${flag[@]}" \
          --set train.threads="${THREADS:-1}" --set train.precision="${PRECISION:-bf16}" 2>/dev/null)
    u=$(echo "$j" | grep -o '"updates_per_s": [0-9.]*' | sed 's/.*: //')
    echo "run $i $mode: $u updates/s"
    ups[$mode]+="$u "
  done
done
for mode in phases throughput; do echo "median $mode: $(median "${ups[$mode]}") updates/s"; done
awk -v a="$(median "${ups[phases]}")" -v b="$(median "${ups[throughput]}")" \
  'BEGIN { printf "decided on the device / on the host: %.3f x updates/s\n", b / a }'
