#!/usr/bin/env bash
# Issue 9, table 1: Post-LN / Pre-LN / Admin on Multi30k De->En with the
# recipes/multi30k/* recipes at one equal update budget, then BLEU on
# test_2016_flickr (beam 5, sacreBLEU 13a, cased, detokenised) with `clinic eval`.
#
#   scripts/results_multi30k.sh [VARIANT...]     (default: post_ln pre_ln admin)
#   env: UPDATES (1500) PRECISION (bf16) THREADS (0 = all cores) SEEDS ("1")
#        OUT (runs/results-multi30k) CLINIC (build/bin/clinic)
# Runs resume where they stopped; a finished run is only re-scored.
# scripts/results_table.sh OUT prints the table from the run directories.
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
UPDATES=${UPDATES:-1500}
PRECISION=${PRECISION:-bf16}
THREADS=${THREADS:-0}
SEEDS=${SEEDS:-1}
OUT=${OUT:-runs/results-multi30k}
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(post_ln pre_ln admin)
for seed in $SEEDS; do
  for v in "${variants[@]}"; do
    run="$OUT/$v-seed$seed"
    "$CLINIC" train "multi30k/$v" --run-dir "$run" --set train.max_updates="$UPDATES" \
      --set train.precision="$PRECISION" --set train.threads="$THREADS" \
      --set train.seed="$seed"
    "$CLINIC" eval --checkpoint "$run/checkpoint_last.pt" --split test --threads "$THREADS" \
      | tee "$run/test_bleu.txt"
  done
done
