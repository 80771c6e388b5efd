#!/usr/bin/env bash
# Issue 8: every row of docs/performance.md, one `clinic bench --json` line each,
# appended to OUT (default runs/bench/bench.jsonl) with the row name in "row".
#   scripts/bench_table.sh [ROW...]   rows: iwslt_fp32 iwslt_diag iwslt_bf16 iwslt_fp32_ckpt
#     iwslt_bf16_ckpt iwslt_python multi30k_fp32 multi30k_bf16 multi30k_python deep_growth
#   env: CLINIC (build/bin/clinic) OUT STEPS (3) REPEAT (1: runs of each row, one
#        line each; docs/performance.md quotes the median where REPEAT > 1)
# Run it on an otherwise idle machine: the VM is noisy and any other process
# on the 2 cores shows up directly in the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
OUT=${OUT:-runs/bench/bench.jsonl}
STEPS=${STEPS:-3}
REPEAT=${REPEAT:-1}
mkdir -p "$(dirname "$OUT")"
iwslt=(iwslt14/post_ln --set data.vocab_size=10000)
row() {
  local name=$1; shift
  for ((i = 1; i <= REPEAT; i++)); do
    echo "== $name ($i/$REPEAT): clinic bench $*" >&2
    "$CLINIC" bench "$@" --json | sed "s/^{/{\"row\": \"$name\", \"date\": \"$(date -u +%FT%TZ)\", /" \
      | tee -a "$OUT"
  done
}
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(iwslt_fp32 iwslt_bf16 iwslt_fp32_ckpt iwslt_bf16_ckpt iwslt_python
                               multi30k_fp32 multi30k_bf16 multi30k_python deep_growth)
for r in "${rows[@]}"; do
  case $r in
    iwslt_fp32) row "$r" "${iwslt[@]}" --set train.precision=fp32 --steps "$STEPS" ;;
    # The stability instruments' cost at the default diag.interval (100): a
    # measurement around every timed update, timed apart (diag_overhead).
    iwslt_diag) row "$r" "${iwslt[@]}" --set train.precision=fp32 --steps "$STEPS" --diag ;;
    iwslt_bf16) row "$r" "${iwslt[@]}" --set train.precision=bf16 --steps "$STEPS" ;;
    iwslt_fp32_ckpt) row "$r" "${iwslt[@]}" --set train.precision=fp32 \
                       --set model.checkpoint_activations=true --steps "$STEPS" ;;
    iwslt_bf16_ckpt) row "$r" "${iwslt[@]}" --set train.precision=bf16 \
                       --set model.checkpoint_activations=true --steps "$STEPS" ;;
    iwslt_python) row "$r" "${iwslt[@]}" --set train.precision=fp32 --steps 4 --compare-python ;;
    multi30k_fp32) row "$r" multi30k/admin --set train.precision=fp32 --steps 4 --translate ;;
    multi30k_bf16) row "$r" multi30k/admin --set train.precision=bf16 --steps 4 ;;
    multi30k_python) row "$r" multi30k/post_ln --set train.precision=fp32 --steps 6 --compare-python ;;
    deep_growth) row "$r" multi30k/deep --set train.precision=fp32 --steps 30 ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
  esac
done
