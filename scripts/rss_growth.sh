#!/usr/bin/env bash
# Issue 8, "no growth over 1,000 updates": trains a recipe on real data (variable
# batch shapes, validation and checkpoints included) for UPDATES updates in one
# process and prints the resident set size logged at each interval, then
# first/last/max after the first epoch (allocator warm-up) and the growth.
#   scripts/rss_growth.sh [RECIPE] [--set ...]   (default multi30k/admin)
#   env: UPDATES (1000) PRECISION (bf16) THREADS (0) RUN (runs/rss-growth) CLINIC
set -euo pipefail
cd "$(dirname "$0")/.."
CLINIC=${CLINIC:-build/bin/clinic}
RUN=${RUN:-runs/rss-growth}
recipe=multi30k/admin
case "${1:-}" in ""|-*) ;; *) recipe=$1; shift ;; esac
# A resumed run would measure a second process; never reuse or delete an existing run.
[ ! -e "$RUN" ] || { echo "rss_growth.sh: $RUN already exists; remove it or set RUN=another/dir" >&2; exit 2; }
[ -x "$CLINIC" ] || { scripts/install-deps.sh; scripts/build.sh -DCLINIC_BUILD_TESTS=OFF; }
mkdir -p "$(dirname "$RUN")"
"$CLINIC" train "$recipe" --run-dir "$RUN" --set train.max_updates="${UPDATES:-1000}" \
  --set train.precision="${PRECISION:-bf16}" --set train.threads="${THREADS:-0}" \
  --set train.max_epochs=0 --set train.patience=0 "$@" > "$RUN.log" 2>&1 \
  || { rc=$?; tail -n 5 "$RUN.log" >&2; echo "rss_growth.sh: clinic train exited with $rc (log: $RUN.log)" >&2; exit "$rc"; }
{ grep '"rss_mb"' "$RUN/metrics.jsonl" | grep -v '"event"' || true; } \
  | sed 's/.*"update": \([0-9]*\).*"epoch": \([0-9]*\).*"rss_mb": \([0-9.]*\).*/\1 \2 \3/' > "$RUN/rss.txt"
awk '{printf "update %s rss %.0f MiB\n", $1, $3}' "$RUN/rss.txt"
awk '$2 > 1 {if (!n++) {first = $3; u0 = $1} last = $3; u1 = $1; if ($3 > max) max = $3}
  END {if (!n) {print "rss_growth.sh: no log interval after epoch 1; raise UPDATES" > "/dev/stderr"; exit 1}
       printf "{\"from_update\": %d, \"to_update\": %d, \"rss_first_mb\": %.1f, \"rss_last_mb\": %.1f, \"rss_max_mb\": %.1f, \"growth_mb\": %.1f}\n", u0, u1, first, last, max, last - first}' "$RUN/rss.txt"
