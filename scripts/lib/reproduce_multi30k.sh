#!/usr/bin/env bash
# scripts/reproduce.sh multi30k: the paper's questions at CPU scale on the
# embedded data/multi30k, over seeds, with mean +- std (issue 35 item 2).
#
#   scripts/reproduce.sh multi30k [--tables 6layer,deep,table1] [--seeds 1,2,3]
#       [--max-updates N] [--lr X] [--out runs/reproduce-multi30k] [--jobs 2]
#       [--records DIR] [--set key=value ...]
#
#   6layer  recipes/multi30k/{post_ln,pre_ln,admin} (3+3 layers, d=256), bf16,
#           1,500 updates (N), BLEU of the last checkpoint on test_2016_flickr
#           (beam 5, sacreBLEU 13a, cased); one clinic diagnose over all runs
#           overlays their training and validation curves (6layer/diagnose).
#   deep    recipes/multi30k/deep (18+18 layers, d=128), its RAdam at
#           lr 3e-3 (--lr), 400 updates (N): per run clinic diagnose's verdict;
#           a run FAILS when its [divergence] rule fires (the training or the
#           validation loss rose above its running minimum by max(1 bit, 20 %)),
#           and the BLEU of the runs that train (test_2016_flickr, beam 5).
#   table1  the paper's Table 1 at this scale: deep with Post/Post, Post/Pre,
#           Pre/Pre stacks (--lr, N as deep), judged as docs/analysis.md 2.1:
#           greedy BLEU on val with its own and with rotated sources, and how
#           many distinct translations it gives.
# Every run at train.threads=1, JOBS at a time (2 cores: 2), niced; one joined
# SentencePiece vocabulary (built once, copied into every run). Resumable:
# finished runs, evals and verdicts are kept; OUT/TABLE/table.{md,json} are
# rewritten atomically. Each run is evaluated in its own job as soon as it has
# trained. --records DIR keeps every finished run's small results (command,
# metrics.jsonl, BLEU lines and hypotheses) in DIR/TABLE/RUN: a later call with
# the same DIR restores what is missing from OUT instead of training it again,
# so a table can be finished over several sessions on machines that do not keep
# runs/ (docs/results.md keeps its records in docs/results/reproduce-multi30k).
# Any --set goes to every clinic train.
set -euo pipefail
# The whole script is one brace group, read before it runs: a long reproduction
# keeps running as it started when the file changes under it (a git pull), as
# bash would otherwise read the new file's bytes from where it had got to.
{
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLINIC=${CLINIC:-$ROOT/build/bin/clinic}
# shellcheck source=scripts/lib/runs.sh
source "$ROOT/scripts/lib/runs.sh"

TABLES=6layer,deep,table1
SEEDS=1,2,3
MAX_UPDATES=
LR=3e-3
OUT=runs/reproduce-multi30k
RECORDS=
SETS=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || runs_usage_error "$1 needs a value"
  case "$1" in
    --tables) TABLES=$2 ;;
    --seeds) SEEDS=$2 ;;
    --max-updates) MAX_UPDATES=$2 ;;
    --lr) LR=$2 ;;
    --out) OUT=$2 ;;
    --jobs) JOBS=$2 ;;
    --records) RECORDS=$2 ;;
    --set) SETS+=(--set "$2") ;;
    *) runs_usage_error "unknown option $1" ;;
  esac
  shift 2
done
list=$(runs_parse_list --tables "$TABLES" '^(6layer|deep|table1)$' "6layer, deep or table1") || exit 2
mapfile -t tables <<<"$list"
list=$(runs_parse_list --seeds "$SEEDS" '^[1-9][0-9]{0,8}$' "a positive integer") || exit 2
mapfile -t seeds <<<"$list"
[ -z "$MAX_UPDATES" ] || [[ "$MAX_UPDATES" =~ ^[1-9][0-9]{0,8}$ ]] ||
  runs_usage_error "--max-updates: '$MAX_UPDATES' is not a positive integer"
[[ "$LR" =~ ^[0-9.]+(e-?[0-9]+)?$ ]] || runs_usage_error "--lr: '$LR' is not a number"
[[ "$JOBS" =~ ^[1-9][0-9]{0,2}$ ]] || runs_usage_error "--jobs: '$JOBS' is not a positive integer"
[ -x "$CLINIC" ] || runs_error "$CLINIC: not built (scripts/build.sh)"
mkdir -p "$OUT" || runs_error "$OUT: cannot create the output directory"
OUT=$(cd "$OUT" && pwd)
RUNS_OUT=$OUT
if [ -n "$RECORDS" ]; then
  mkdir -p "$RECORDS" || runs_error "$RECORDS: cannot create the records directory"
  RUNS_RECORDS=$(cd "$RECORDS" && pwd)
fi
RUNS_FAILURES=$OUT/failures.txt
rm -f "$RUNS_FAILURES"
seed_list=$(IFS=,; echo "${seeds[*]}")
cmdline="scripts/reproduce.sh multi30k --tables $(IFS=,; echo "${tables[*]}") --seeds $seed_list"
[ -z "$MAX_UPDATES" ] || cmdline+=" --max-updates $MAX_UPDATES"
[ "$LR" = 3e-3 ] || cmdline+=" --lr $LR"
for x in "${SETS[@]}"; do [ "$x" = --set ] || cmdline+=" --set $x"; done

pm() {  # pm MEAN STD: "m ± s", "m" for one value, "–" for none
  if [ "$1" = null ]; then echo "–"; elif [ "$2" = null ]; then echo "$1"; else echo "$1 ± $2"; fi
}

# One joined SentencePiece vocabulary for every run (the recipes' data section).
VOCAB=$OUT/vocab/spm.model
if [ ! -s "$VOCAB" ]; then
  "$CLINIC" vocab multi30k/base "${SETS[@]}" --run-dir "$OUT/vocab" > "$OUT/vocab.log" 2>&1 ||
    { cat "$OUT/vocab.log" >&2; runs_error "clinic vocab failed (log: $OUT/vocab.log)"; }
fi
echo "vocabulary: $VOCAB"
train() {  # train RUN UPDATES ARG...: from its record, or with the one vocabulary
  local run=$1; shift
  runs_restore "$run" "${@:2}"
  if ! runs_is_done "$run" "${@:2}"; then
    mkdir -p "$run"
    [ -f "$run/checkpoint_last.pt" ] || [ -s "$run/spm.model" ] || runs_copy_atomic "$VOCAB" "$run/spm.model"
  fi
  runs_train "$run" "$@"
}

# eval_once RUN OUTFILE ARG...: clinic eval ARG... into OUTFILE unless done.
eval_once() {
  local run=$1 file=$2; shift 2
  [ -s "$file" ] && [ "$file" -nt "$run/.runs-done" ] && return 0
  if "$CLINIC" eval "$@" > "$file.tmp" 2> "$file.log" && mv "$file.tmp" "$file"; then
    return 0
  fi
  runs_fail "$run: clinic eval failed: $(grep 'clinic: error' "$file.log" | head -n 1)"
  rm -f "$file.tmp"
}

# ---- 6layer -----------------------------------------------------------------
finish_6layer() {  # finish_6layer RUN: BLEU of its last checkpoint on test
  eval_once "$1" "$1/test.bleu" --checkpoint "$1/checkpoint_last.pt" --split test \
    --threads 1 --output "$1/test.hyp"
}
table_6layer() {
  local T=$OUT/6layer updates=${MAX_UPDATES:-1500} v s runs=()
  echo "== 6layer: post_ln, pre_ln, admin x seeds $seed_list, $updates updates each"
  RUNS_ON_DONE=finish_6layer RUNS_RECORD_FILES="test.bleu test.hyp"
  # Seed by seed: a table cut short still has every variant on its first seeds.
  for s in "${seeds[@]}"; do
    for v in post_ln pre_ln admin; do
      train "$T/$v-seed$s" "$updates" "multi30k/$v" --set train.seed="$s" --set train.threads=1 \
        --set train.precision=bf16 --set train.max_updates="$updates" "${SETS[@]}"
    done
  done
  runs_wait
  for v in post_ln pre_ln admin; do
    for s in "${seeds[@]}"; do runs+=("$T/$v-seed$s"); done
  done
  runs_diagnose "$T/diagnose" "${runs[@]}"
  local md="# Multi30k De-En, 3+3 layers: Post-LN / Pre-LN / Admin over seeds $seed_list

Command: \`$cmdline\` ($updates updates per run, bf16, train.threads=1, $JOBS at a time).
BLEU: \`clinic eval --split test\` (test_2016_flickr, beam 5, sacreBLEU 13a, cased) on the last
checkpoint. Mean ± sample std (n-1). Curves: [diagnose/report.md](diagnose/report.md).

| variant | BLEU (mean ± std) | n | per seed | last valid loss (bits) per seed |
|---|---|---|---|---|" json="" vals per losses m sd n
  for v in post_ln pre_ln admin; do
    vals=() per=() losses=()
    for s in "${seeds[@]}"; do
      local run=$T/$v-seed$s
      finish_6layer "$run"
      runs_record "$run"
      local b; b=$(runs_bleu "$run/test.bleu")
      [ -z "$b" ] || { vals+=("$b"); per+=("\"$s\": $b"); }
      losses+=("$(grep -o '"valid_loss": *[0-9.]*' "$run/metrics.jsonl" 2>/dev/null | tail -n 1 | sed 's/.*: *//' || true)")
    done
    read -r m sd n <<<"$(runs_stats "${vals[@]}")"
    md+="
| $v | $(pm "$m" "$sd") | $n | ${vals[*]} | ${losses[*]} |"
    json+="${json:+,
}    \"$v\": {\"mean\": $m, \"std\": $sd, \"n\": $n, \"per_seed\": {$(IFS=,; echo "${per[*]}")}}"
  done
  runs_write_atomic "$T/table.md" "$md"
  runs_write_atomic "$T/table.json" "{
  \"table\": \"multi30k-6layer\", \"command\": \"$cmdline\", \"max_updates\": $updates,
  \"variants\": {
$json
  }
}"
  cat "$T/table.md"
}

# ---- deep -------------------------------------------------------------------
# finish_deep RUN: clinic diagnose's verdict, then (unless it diverged) BLEU on test.
finish_deep() {
  local run=$1
  if [ ! -s "$run/verdict.txt" ] || [ "$run/verdict.txt" -ot "$run/.runs-done" ]; then
    { "$CLINIC" diagnose "$run" --out "$run/report" > "$run/verdict.txt.tmp" 2>&1 &&
        mv "$run/verdict.txt.tmp" "$run/verdict.txt"; } ||
      { rm -f "$run/verdict.txt.tmp"; runs_fail "$run: clinic diagnose failed"; return 0; }
  fi
  grep -q '\[divergence\]' "$run/verdict.txt" ||
    eval_once "$run" "$run/test.bleu" --checkpoint "$run/checkpoint_last.pt" --split test \
      --threads 1 --output "$run/test.hyp"
}
table_deep() {
  local T=$OUT/deep updates=${MAX_UPDATES:-400} v s
  echo "== deep: 18+18 layers, post_ln, pre_ln, admin x seeds $seed_list, lr $LR, $updates updates each"
  RUNS_EXIT_IS_RESULT=1  # a run stopped by non-finite losses is a result: diagnose judges it
  RUNS_ON_DONE=finish_deep RUNS_RECORD_FILES="verdict.txt test.bleu test.hyp"
  for v in post_ln pre_ln admin; do
    for s in "${seeds[@]}"; do
      train "$T/$v-seed$s" "$updates" multi30k/deep --set model.residual="$v" \
        --set optim.lr="$LR" --set train.seed="$s" --set train.threads=1 \
        --set train.max_updates="$updates" "${SETS[@]}"
    done
  done
  runs_wait
  RUNS_EXIT_IS_RESULT=0
  local md="# Multi30k De-En, 18+18 layers (d=128): which seeds fail, over seeds $seed_list

Command: \`$cmdline\` (recipes/multi30k/deep, lr $LR, $updates updates, train.threads=1).
A run fails when \`clinic diagnose RUN\` prints [divergence]: its training or validation loss rose
above its running minimum by max(1 bit, 20 %). BLEU (test_2016_flickr, beam 5, last checkpoint)
of the runs that train: mean ± sample std (n-1).

| variant | failed | BLEU of the rest (mean ± std) | n | per seed |
|---|---|---|---|---|" json="" vals per verdicts m sd n failed
  for v in post_ln pre_ln admin; do
    vals=() per=() verdicts=() failed=0
    for s in "${seeds[@]}"; do
      local run=$T/$v-seed$s
      finish_deep "$run"
      runs_record "$run"
      [ -s "$run/verdict.txt" ] || continue
      if grep -q '\[divergence\]' "$run/verdict.txt"; then
        failed=$((failed + 1))
        local at; at=$(sed -n 's/.*\[divergence\] \([a-z ]*diverged at update [0-9]*\).*/\1/p' "$run/verdict.txt" | head -n 1)
        verdicts+=("seed $s: failed (${at:-divergence})")
        per+=("\"$s\": {\"failed\": true, \"verdict\": \"${at:-divergence}\"}")
      else
        local b; b=$(runs_bleu "$run/test.bleu")
        [ -z "$b" ] || vals+=("$b")
        verdicts+=("seed $s: ${b:-?} BLEU")
        per+=("\"$s\": {\"failed\": false, \"bleu\": ${b:-null}}")
      fi
    done
    read -r m sd n <<<"$(runs_stats "${vals[@]}")"
    md+="
| $v | $failed of ${#seeds[@]} | $(pm "$m" "$sd") | $n | $(IFS=';'; echo "${verdicts[*]}" | sed 's/;/; /g') |"
    json+="${json:+,
}    \"$v\": {\"failed\": $failed, \"seeds\": ${#seeds[@]}, \"bleu_mean\": $m, \"bleu_std\": $sd, \"n\": $n, \"per_seed\": {$(IFS=,; echo "${per[*]}")}}"
  done
  runs_write_atomic "$T/table.md" "$md"
  runs_write_atomic "$T/table.json" "{
  \"table\": \"multi30k-deep\", \"command\": \"$cmdline\", \"lr\": $LR, \"max_updates\": $updates,
  \"variants\": {
$json
  }
}"
  cat "$T/table.md"
}

# ---- table1 -----------------------------------------------------------------
VAL=data/multi30k/val
ROTATED=$OUT/table1/val-rotated.de  # val's sources shifted by one line
# finish_table1 RUN: greedy BLEU on val with its own and with rotated sources.
finish_table1() {
  local run=$1
  eval_once "$run" "$run/val-real.bleu" --checkpoint "$run/checkpoint_last.pt" --src "$VAL.de" \
    --ref "$VAL.en" --beam 1 --threads 1 --output "$run/val-real.hyp"
  eval_once "$run" "$run/val-rotated.bleu" --checkpoint "$run/checkpoint_last.pt" \
    --src "$ROTATED" --ref "$VAL.en" --beam 1 --threads 1 --output "$run/val-rotated.hyp"
}
table_table1() {
  local T=$OUT/table1 updates=${MAX_UPDATES:-400} st s enc dec
  local -A RES=([postpost]="post_ln post_ln" [postpre]="post_ln pre_ln" [prepre]="pre_ln pre_ln")
  echo "== table1: Post/Post, Post/Pre, Pre/Pre (18+18) x seeds $seed_list, lr $LR, $updates updates each"
  mkdir -p "$T"
  runs_write_atomic "$ROTATED" "$(tail -n +2 "$VAL.de"; head -n 1 "$VAL.de")"
  RUNS_ON_DONE=finish_table1
  RUNS_RECORD_FILES="val-real.bleu val-real.hyp val-rotated.bleu val-rotated.hyp"
  for st in postpost postpre prepre; do
    read -r enc dec <<<"${RES[$st]}"
    for s in "${seeds[@]}"; do
      train "$T/$st-seed$s" "$updates" multi30k/deep --set model.residual="$enc" \
        --set model.decoder_residual="$dec" --set optim.lr="$LR" --set train.seed="$s" \
        --set train.threads=1 --set diag.interval=50 --set train.max_updates="$updates" "${SETS[@]}"
    done
  done
  runs_wait
  local md="# Table 1 at CPU scale (18+18, d=128) over seeds $seed_list

Command: \`$cmdline\` (lr $LR, $updates updates). Judged as docs/analysis.md 2.1: greedy BLEU on val
(1,014 lines) with its own sources and with the sources rotated by one line, and the number of
distinct translations; a model that ignores its source loses no BLEU to the rotation.

| encoder / decoder | BLEU own (mean ± std) | BLEU rotated (mean ± std) | distinct translations per seed |
|---|---|---|---|" json="" own rot dist mo so ro sr n
  for st in postpost postpre prepre; do
    own=() rot=() dist=()
    for s in "${seeds[@]}"; do
      local run=$T/$st-seed$s
      finish_table1 "$run"
      runs_record "$run"
      local b; b=$(runs_bleu "$run/val-real.bleu"); [ -z "$b" ] || own+=("$b")
      b=$(runs_bleu "$run/val-rotated.bleu"); [ -z "$b" ] || rot+=("$b")
      [ ! -f "$run/val-real.hyp" ] || dist+=("$(sort -u "$run/val-real.hyp" | wc -l)")
    done
    read -r mo so n <<<"$(runs_stats "${own[@]}")"
    read -r ro sr n <<<"$(runs_stats "${rot[@]}")"
    md+="
| ${RES[$st]/ / \/ } | $(pm "$mo" "$so") | $(pm "$ro" "$sr") | ${dist[*]} |"
    json+="${json:+,
}    \"$st\": {\"bleu_own_mean\": $mo, \"bleu_own_std\": $so, \"bleu_rotated_mean\": $ro, \"bleu_rotated_std\": $sr, \"n\": $n, \"distinct\": [$(IFS=,; echo "${dist[*]}")]}"
  done
  runs_write_atomic "$T/table.md" "$md"
  runs_write_atomic "$T/table.json" "{
  \"table\": \"multi30k-table1\", \"command\": \"$cmdline\", \"lr\": $LR, \"max_updates\": $updates,
  \"settings\": {
$json
  }
}"
  cat "$T/table.md"
}

for t in "${tables[@]}"; do "table_$t"; done
runs_finish
exit
}
