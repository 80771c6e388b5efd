#!/usr/bin/env bash
# Issue 9, study 2: does deep Post-LN fail where Pre-LN and Admin train?
# Trains recipes/multi30k/deep.yaml for every (depth, learning rate, variant)
# and keeps each run's metrics.jsonl; scripts/plot_deep.sh draws the curves.
#
#   scripts/results_deep.sh
#   env: DEPTHS ("18 6")  LRS ("1e-3")  VARIANTS ("post_ln pre_ln admin")
#        WARMUP (200) UPDATES (400) THREADS (0) SEED (1)
#        OUT (runs/results-deep) CLINIC (build/bin/clinic)
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
OUT=${OUT:-runs/results-deep}
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
for depth in ${DEPTHS:-18 6}; do
  for lr in ${LRS:-1e-3}; do
    for v in ${VARIANTS:-post_ln pre_ln admin}; do
      run="$OUT/L$depth-lr$lr-w${WARMUP:-200}-$v-seed${SEED:-1}"
      # A run that stops on non-finite losses (max_bad_steps) is a result, not an error.
      "$CLINIC" train multi30k/deep --run-dir "$run" --set model.residual="$v" \
        --set model.encoder_layers="$depth" --set model.decoder_layers="$depth" \
        --set optim.lr="$lr" --set schedule.warmup_updates="${WARMUP:-200}" \
        --set train.max_updates="${UPDATES:-400}" --set train.threads="${THREADS:-0}" \
        --set train.seed="${SEED:-1}" || echo "$run: clinic train exited with $?" | tee -a "$OUT/failures.txt"
    done
  done
done
