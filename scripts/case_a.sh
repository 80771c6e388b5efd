#!/usr/bin/env bash
# docs/cases.md, case A with the report's (hypothesised) loop: the De-En
# encoder + linear head with gradients never zeroed
# (recipes/cases/de_en_tagger_no_zero_grad.yaml, 1,000 updates of 1024-token
# batches), for several seeds, as reported and with each single change, then
# one `clinic diagnose` report per setting and the cure table
# (scripts/case_a_table.py). Resumable: a finished run dir is resumed and
# stops at once. Budget: ~13 min per run alone on 2 cores (two at a time with
# train.threads=1: ~14 min per pair).
#   scripts/case_a.sh          env: SEEDS ("1 2") OUT (runs/case-a) CLINIC (build/bin/clinic)
#                                   SETTINGS (all below) UPDATES (1000) JOBS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
OUT=${OUT:-runs/case-a}
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
mkdir -p "$OUT"
declare -A SET=(
  [reported]=""
  [zero_grad]="--set train.zero_grad=true"
  [pre_ln]="--set model.residual=pre_ln"
  [admin]="--set model.residual=admin"
  [warmup_x2]="--set schedule.warmup_updates=8000"
  # The report's suspicion: the first layer's LayerNorm and attention biases
  # held at their init (a parameter group at lr 0).
  [frozen_biases]="--set \"optim.groups=[{name: frozen, match: 'layers\\.0\\.(.*norm.*\\.bias|self_attn\\..*bias)', lr: 0}]\""
)
SETTINGS=${SETTINGS:-reported zero_grad pre_ln admin warmup_x2 frozen_biases}
RUNS_FAILURES=$OUT/failures.txt
# shellcheck source=scripts/lib/runs.sh
source scripts/lib/runs.sh
for setting in $SETTINGS; do
  for seed in ${SEEDS:-1 2}; do
    eval "extra=(${SET[$setting]})"  # a value may hold quoted spaces
    runs_train "$OUT/tagger-$setting-seed$seed" "${UPDATES:-1000}" cases/de_en_tagger_no_zero_grad \
      --set train.seed="$seed" --set train.threads=1 \
      --set train.max_updates="${UPDATES:-1000}" "${extra[@]}"
  done
done
runs_wait
for setting in $SETTINGS; do
  runs=()
  for seed in ${SEEDS:-1 2}; do runs+=("$OUT/tagger-$setting-seed$seed"); done
  runs_diagnose "$OUT/diagnose-$setting" "${runs[@]}"
done
python3 scripts/case_a_table.py "$OUT"
runs_finish
