#!/usr/bin/env bash
# docs/analysis.md section 2, the paper's Table 1 at CPU scale: the 18+18
# recipes/multi30k/deep.yaml with each stack's residual chosen separately
# (postpost: Post-LN / Post-LN, postpre: Post-LN encoder / Pre-LN decoder,
# prepre: Pre-LN / Pre-LN), one optimizer, learning rate, batch and budget for
# all, then one `clinic diagnose` over the runs, and each run's last checkpoint
# translating the validation set (greedy) twice: with its own sources and with
# the sources rotated by one line (each reference paired with the next
# sentence's source). A model that translates loses most of its BLEU to the
# rotation; one that ignores its source (a target-side language model) loses
# none. Resumable: a finished run dir is resumed and stops at once; raising
# UPDATES continues a run.
# Budget (2026-12-05, 2-core VM): with UPDATE_FREQ=4 (8192 tokens per update)
# ~6 s per update per run with two runs side by side at train.threads=1, ~9 s
# with three; docs/analysis.md section 2.1 took 65 minutes for all three.
#   scripts/table1.sh   env: SETTINGS ("postpost postpre prepre") OPTIM (adam) LR (3e-3)
#                            UPDATE_FREQ (1) UPDATES (400) SEED (1) JOBS (2)
#                            OUT (runs/table1-$OPTIM-$LR-x$UPDATE_FREQ) CLINIC (build/bin/clinic)
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
OPTIM=${OPTIM:-adam}; LR=${LR:-3e-3}; UPDATE_FREQ=${UPDATE_FREQ:-1}
OUT=${OUT:-runs/table1-$OPTIM-$LR-x$UPDATE_FREQ}
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
mkdir -p "$OUT"
declare -A RESIDUALS=([postpost]="post_ln post_ln" [postpre]="post_ln pre_ln" [prepre]="pre_ln pre_ln")
SETTINGS=${SETTINGS:-postpost postpre prepre}
RUNS_FAILURES=$OUT/failures.txt
# shellcheck source=scripts/lib/runs.sh
source scripts/lib/runs.sh
runs=()
for setting in $SETTINGS; do
  read -r enc dec <<<"${RESIDUALS[$setting]}"
  run="$OUT/$setting"; runs+=("$run")
  runs_train "$run" "${UPDATES:-400}" multi30k/deep \
    --set model.residual="$enc" --set model.decoder_residual="$dec" \
    --set optim.name="$OPTIM" --set optim.lr="$LR" --set train.update_freq="$UPDATE_FREQ" \
    --set train.max_updates="${UPDATES:-400}" --set train.seed="${SEED:-1}" \
    --set diag.interval=50 --set train.threads=1
done
runs_wait
runs_diagnose "$OUT/diagnose" "${runs[@]}"
VAL=data/multi30k/val
# written whole then renamed: two invocations on one OUT (different SETTINGS) may overlap here
(tail -n +2 "$VAL.de"; head -n 1 "$VAL.de") > "$OUT/val-rotated.de.$$"
mv "$OUT/val-rotated.de.$$" "$OUT/val-rotated.de"
for run in "${runs[@]}"; do
  rm -f "$run.bleu"
  for src in real rotated; do
    file="$VAL.de"; [ "$src" = real ] || file="$OUT/val-rotated.de"
    if bleu=$(nice "$CLINIC" eval --checkpoint "$run/checkpoint_last.pt" --src "$file" \
                --ref "$VAL.en" --beam 1 --threads 1 --output "$run.val-$src.hyp" | grep '^BLEU'); then
      echo "$src: $bleu" >> "$run.bleu"
    else
      runs_fail "$run: clinic eval ($src sources) failed"
    fi
  done
done
python3 scripts/table1_table.py "$OUT"
runs_finish
