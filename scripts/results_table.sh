#!/usr/bin/env bash
# Prints the markdown table of scripts/results_multi30k.sh runs:
#   scripts/results_table.sh [OUT]   (default runs/results-multi30k)
# BLEU from each run's test_bleu.txt (clinic eval), validation perplexity
# from metrics.jsonl (best and at the last update), trainer wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/results-multi30k}
field() { grep -o "\"$1\": [-0-9.e+]*" | tail -n 1 | sed 's/.*: //'; }
echo "| run | updates | epochs | test BLEU | best valid ppl | last valid ppl | train wall time (s) | peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|---|"
for run in "$OUT"/*/; do
  run=${run%/}
  m="$run/metrics.jsonl"
  [ -f "$m" ] || continue
  bleu=$(grep -o 'BLEU = [0-9.]*' "$run/test_bleu.txt" 2>/dev/null | tail -n 1 | sed 's/BLEU = //')
  valid=$(grep '"event": "valid"' "$m" || true)
  best=$(printf '%s\n' "$valid" | grep -o '"valid_ppl": [0-9.]*' | sed 's/.*: //' | sort -g | head -n 1)
  last=$(printf '%s\n' "$valid" | field valid_ppl)
  train=$(grep '"loss":' "$m" | grep -v '"event"' || true)
  printf '| %s | %s | %s | %s | %.2f | %.2f | %.0f | %.0f |\n' "$(basename "$run")" \
    "$(printf '%s\n' "$train" | field update)" "$(printf '%s\n' "$train" | field epoch)" \
    "${bleu:-n/a}" "${best:-0}" "${last:-0}" "$(printf '%s\n' "$train" | field wall_s)" \
    "$(printf '%s\n' "$train" | field peak_rss_mb || echo 0)"
done
