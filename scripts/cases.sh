#!/usr/bin/env bash
# docs/cases.md, case B: the 1-layer toy (recipes/cases/toy_loss_spikes.yaml,
# or RECIPE=cases/toy_loss_spikes_no_zero_grad: the report's loop, which never
# zeroes the gradients) for several seeds, as reported and with each single
# change, then one
# `clinic diagnose` report per setting (label smoothing spreads its mass over
# the 2 real tokens, as torch's label_smoothing over 2 classes; the reference
# measures it with --label-smoothing 0.1). Resumable: a finished run dir is
# resumed and stops at once. Budget: 100k updates each, ~1-3 min per run on
# 2 cores.
#   scripts/cases.sh            env: SEEDS ("1 2 3") OUT (runs/cases) CLINIC (build/bin/clinic)
#                                    SETTINGS (all below) UPDATES (100000)
#                                    RECIPE (cases/toy_loss_spikes) JOBS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
OUT=${OUT:-runs/cases}
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
mkdir -p "$OUT"
RECIPE=${RECIPE:-cases/toy_loss_spikes}
# Run dirs: toy-SETTING-seedN for the default recipe, NAME-SETTING-seedN else.
TAG=toy
[ "$RECIPE" = cases/toy_loss_spikes ] || TAG=${RECIPE#cases/}
declare -A SET=(
  [reported]=""
  [eps_1e-6]="--set optim.eps=1e-6"
  [lr_x0.1]="--set optim.lr=0.1"
  [label_smoothing_0.1]="--set train.criterion=label_smoothed_cross_entropy --set train.label_smoothing=0.1"
  [adamw_wd_0.01]="--set optim.name=adamw --set optim.weight_decay=0.01"
  [dropout_0]="--set model.dropout=0 --set model.attention_dropout=0"
  [no_layer]="--set model.encoder_layers=0"
  [zero_grad]="--set train.zero_grad=true"
)
SETTINGS=${SETTINGS:-reported zero_grad eps_1e-6 lr_x0.1 label_smoothing_0.1 adamw_wd_0.01 dropout_0 no_layer}
JOBS=${JOBS:-1} RUNS_FAILURES=$OUT/failures.txt
# shellcheck source=scripts/lib/runs.sh
source scripts/lib/runs.sh
for setting in $SETTINGS; do
  for seed in ${SEEDS:-1 2 3}; do
    # shellcheck disable=SC2086
    runs_train "$OUT/$TAG-$setting-seed$seed" "${UPDATES:-100000}" "$RECIPE" \
      --set train.seed="$seed" --set train.max_updates="${UPDATES:-100000}" ${SET[$setting]}
  done
done
runs_wait
for setting in $SETTINGS; do
  runs=()
  for seed in ${SEEDS:-1 2 3}; do
    run="$OUT/$TAG-$setting-seed$seed"; runs+=("$run")
    # Spike counts (abs rule: a jump >= 10 nats), in all and per 10k-update window.
    counts=$({ grep '"event": "spike", "update": [0-9]*, .*"rule": "abs' "$run/metrics.jsonl" || true; } |
      sed 's/.*"update": \([0-9]*\),.*/\1/' |
      awk -v n="${UPDATES:-100000}" '{ c[int(($1 - 1) / 10000)]++ }
        END { printf "%d abs spikes; per 10k updates:", NR
              for (w = 0; w * 10000 < n; w++) printf " %d", c[w] + 0 }')
    echo "$setting seed $seed: $counts"
  done
  # The setting's report: its diagnosis (spikes, Adam's eps, logit margins) per seed.
  runs_diagnose "$OUT/diagnose-$setting" "${runs[@]}"
done
runs_finish
