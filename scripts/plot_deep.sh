#!/usr/bin/env bash
# Draws the loss curves of scripts/results_deep.sh runs with gnuplot (Debian's
# gnuplot-nox): one PNG per setting (depth, learning rate, warmup), one curve
# per residual variant, training loss (label-smoothed, per logged interval)
# and validation loss against updates.
#   scripts/plot_deep.sh [OUT] [DEST]   (defaults: runs/results-deep docs)
# A run that stopped early (non-finite loss) simply ends where it stopped.
# Also prints a markdown table: last logged update, train loss, validation
# loss/perplexity, skipped (non-finite) updates, and whether the run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/results-deep}
DEST=${2:-docs}
command -v gnuplot > /dev/null || { echo "plot_deep.sh: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 2; }
mkdir -p "$DEST"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
num() { sed -n "s/.*\"$1\": \([-0-9.e+naif]*\).*/\1/p"; }
settings=$(ls -d "$OUT"/L*-seed* 2>/dev/null | sed 's#.*/##; s/-\(post_ln\|pre_ln\|admin\)-seed.*//' | sort -u)
[ -n "$settings" ] || { echo "plot_deep.sh: no runs under $OUT" >&2; exit 2; }
for s in $settings; do
  plots=()
  color=0
  for run in "$OUT/$s"-*-seed*; do
    v=$(basename "$run" | sed "s/^$s-//; s/-seed.*//")
    m="$run/metrics.jsonl"
    [ -s "$m" ] && grep -q '"loss":' "$m" || continue
    # Last line per update wins (a resumed run re-logs the updates after its checkpoint).
    { grep '"loss":' "$m" | grep -v '"event"' || true; } | while read -r l; do
      echo "$(echo "$l" | num update) $(echo "$l" | num loss)"; done | sort -n -k1,1 -s | awk '{a[$1]=$2} END {for (k in a) print k, a[k]}' | sort -n > "$tmp/$v.train"
    { grep '"event": "valid"' "$m" || true; } | while read -r l; do
      echo "$(echo "$l" | num update) $(echo "$l" | num valid_loss)"; done | sort -n > "$tmp/$v.valid"
    color=$((color + 1))
    plots+=("'$tmp/$v.train' using 1:2 with lines lw 2 lc $color title '$v train'"
            "'$tmp/$v.valid' using 1:2 with points pt 7 ps 1.2 lc $color title '$v valid'")
  done
  [ ${#plots[@]} -gt 0 ] || continue
  png="$DEST/deep-$s.png"
  {
    echo "set terminal pngcairo size 900,560 font ',11' noenhanced"
    echo "set output '$png'"
    echo "set title 'Multi30k De-En, $s (depth-lr-warmup), d=128: loss vs update'"
    echo "set xlabel 'update'; set ylabel 'loss (label-smoothed cross-entropy, nats)'"
    echo "set grid; set key top right"
    printf 'plot '; (IFS=,; echo "${plots[*]}")
  } > "$tmp/plot.gp"
  gnuplot "$tmp/plot.gp"
  echo "wrote $png" >&2
done
echo "| setting | variant | last update | train loss | valid loss | valid ppl | skipped updates | clinic train |"
echo "|---|---|---|---|---|---|---|---|"
for run in "$OUT"/L*-seed*; do
  m="$run/metrics.jsonl"
  [ -f "$m" ] || continue
  name=$(basename "$run")
  v=$(echo "$name" | sed 's/.*-\(post_ln\|pre_ln\|admin\)-seed.*/\1/')
  last=$(grep '"loss":' "$m" | grep -v '"event"' | tail -n 1 || true)
  valid=$(grep '"event": "valid"' "$m" | tail -n 1 || true)
  failed=$(grep -F "$run:" "$OUT/failures.txt" 2>/dev/null | sed 's/.*exited with/exit/' | tail -n 1 || true)
  fmt() { local x; x=$(cat); [ -n "$x" ] && printf "%.${1}f" "$x" 2>/dev/null || echo "${x:-n/a}"; }
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${name%-$v-seed*}" "$v" \
    "$(echo "$last" | num update)" "$(echo "$last" | num loss | fmt 3)" \
    "$(echo "$valid" | num valid_loss | fmt 3)" "$(echo "$valid" | num valid_ppl | fmt 1)" \
    "$(echo "$last" | num skipped)" "${failed:-ok}"
done
