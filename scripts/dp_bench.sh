#!/usr/bin/env bash
# Data-parallel throughput on this machine (docs/distributed.md): one process
# with train.update_freq=2 and THREADS threads against `--nproc 2` ranks with
# THREADS/2 threads each -- the same update (2 batches of data.max_tokens),
# the same cores. Interleaved A/B, REPEAT times; prints each run's target
# tokens/s (mean of the logged intervals after the first) and the medians.
#   scripts/dp_bench.sh     env: RECIPE (multi30k/base) UPDATES (30) REPEAT (3) THREADS (2)
#                                OUT (runs/dp_bench) CLINIC (build/bin/clinic)
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
RECIPE=${RECIPE:-multi30k/base}
UPDATES=${UPDATES:-30}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/dp_bench}
mkdir -p "$OUT"
common=(--set train.max_updates="$UPDATES" --set train.log_interval=5 --set train.validate_interval=0
        --set train.save_interval=0 --set diag.interval=0)
tps() {  # mean tokens_per_s of the logged intervals after the first
  grep '^{"update"' "$1/metrics.jsonl" | tail -n +2 |
    sed 's/.*"tokens_per_s": \([0-9.e+]*\).*/\1/' | awk '{s += $1; n++} END {printf "%.0f", s / n}'
}
a=() b=()
for i in $(seq "${REPEAT:-3}"); do
  rm -rf "$OUT/single$i" "$OUT/ranks$i"
  "$CLINIC" train "$RECIPE" --run-dir "$OUT/single$i" "${common[@]}" --set train.update_freq=2 \
    --set train.threads="$THREADS" >"$OUT/single$i.log" 2>&1
  a+=("$(tps "$OUT/single$i")")
  "$CLINIC" train "$RECIPE" --run-dir "$OUT/ranks$i" "${common[@]}" --nproc 2 \
    --set train.threads=$((THREADS / 2 > 0 ? THREADS / 2 : 1)) >"$OUT/ranks$i.log" 2>&1
  b+=("$(tps "$OUT/ranks$i")")
  echo "run $i: 1 process x update_freq 2: ${a[-1]} tgt tok/s | 2 ranks: ${b[-1]} tgt tok/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ma=$(median "${a[@]}") mb=$(median "${b[@]}")
echo "median: 1 process ${ma} | 2 ranks ${mb} | ratio 2 ranks / 1 process $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", b / a}')"
