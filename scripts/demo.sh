#!/usr/bin/env bash
# README command 1: install dependencies, build, train the default recipe
# (Multi30k De->En, Admin) on the embedded data, translate a few sentences and
# print BLEU on test_2016_flickr. Budget: DEMO_UPDATES updates (default 600,
# roughly 15-25 minutes on 2 cores); re-running resumes the same run dir.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DCLINIC_BUILD_TESTS=OFF
RECIPE=${RECIPE:-multi30k/admin}
RUN=${RUN_DIR:-runs/demo-$(echo "$RECIPE" | tr / -)}
UPDATES=${DEMO_UPDATES:-600}
build/bin/clinic train "$RECIPE" --run-dir "$RUN" --set train.max_updates="$UPDATES" --set train.log_interval=50
echo "--- a few translations (beam 5): source, then clinic's output ---"
head -n 5 data/multi30k/test_2016_flickr.de > "$RUN/demo.de"
build/bin/clinic translate --checkpoint "$RUN/checkpoint_last.pt" --input "$RUN/demo.de" \
  --output "$RUN/demo.en"
paste -d '\n' "$RUN/demo.de" "$RUN/demo.en"
echo "--- BLEU on test_2016_flickr (sacreBLEU 13a, cased, detokenised) ---"
build/bin/clinic eval --checkpoint "$RUN/checkpoint_last.pt" --split test
