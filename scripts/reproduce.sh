#!/usr/bin/env bash
# Reproduce Liu et al. 2020's tables in one command (issue 35).
#
#   scripts/reproduce.sh iwslt14 DATA_DIR [--seeds 1111,2222,3333,4444,5555]
#       [--variants post_ln,pre_ln,admin] [--device cpu|cuda|auto] [--max-updates N]
#       [--average-last 10] [--out DIR] [--jobs N] [--set key=value ...]
#   scripts/reproduce.sh multi30k [--tables 6layer,deep,table1] [--seeds 1,2,3] ...
#       (the CPU-scale tables: scripts/lib/reproduce_multi30k.sh)
#
# The paper's IWSLT'14 De-En table (6L-6L, Table 2 / its Figure 1 settings):
# Post-LN 35.64 +- 0.23, Pre-LN 35.50 +- 0.04, Admin 35.67 +- 0.15 (mean +- std
# over 5 seeds; test set of 6,750 lines; tokenized, lowercased BLEU after
# --remove-bpe; the last 10 epoch checkpoints averaged, which at 100k updates of
# 4,096 tokens are epochs 81-90 of the 160,239-pair train split).
#
# DATA_DIR is fairseq's examples/translation/prepare-iwslt14.sh output:
# train/valid/test.{de,en} after the joint 10k BPE ("@@ " marks) and its `code`
# file, or the tokenized files without BPE (its tmp/, the codes in DATA_DIR or
# one level up): clinic bpe applies the codes into OUT/data first (subword-nmt
# apply_bpe.py's output, byte for byte). Stages, each resumable:
#   1. check   every file is there, is a regular file, each pair has equal line
#              counts; counts and git blob ids are compared with the paper's copy
#              (test/data/iwslt14/README.md lists them): a different copy is
#              allowed and named as such in the output and in the table.
#   2. vocab   one joined dictionary (fairseq-preprocess --joined-dictionary):
#              clinic vocab into OUT/vocab, copied into every run dir.
#   3. train   every variant x seed with recipes/iwslt14/VARIANT.yaml (Admin is
#              profiled by the trainer before its first update), --jobs at a
#              time (default 1: they share one device); a progress line per
#              run; the cost measured first with clinic bench on the same
#              device and printed in device-hours. The recipe trains in fp16
#              (a GPU's); on a CPU add --set train.precision=bf16 (or fp32).
#   4. average the last N epoch checkpoints of each run (clinic average).
#   5. decode  test with beam 5 and score it (clinic eval on the average).
#   6. table   OUT/table.md and OUT/table.json: mean +- std (sample, n-1), the
#              per-seed values and the paper's numbers beside them.
# Any --set is passed to every clinic train (e.g. a smaller model for a trial).
set -euo pipefail
# The whole script is one brace group, read before it runs: a long reproduction
# keeps running as it started when the file changes under it (a git pull), as
# bash would otherwise read the new file's bytes from where it had got to.
{
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLINIC=${CLINIC:-$ROOT/build/bin/clinic}
# One run at a time unless --jobs says otherwise: every run trains on the one
# device train.device names (cuda = cuda:0).
[ "${1:-}" = multi30k ] || JOBS=${JOBS:-1}
# shellcheck source=scripts/lib/runs.sh
source "$ROOT/scripts/lib/runs.sh"

usage() {
  sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
TASK=$1; shift
case "$TASK" in
  iwslt14) ;;
  multi30k) exec "$ROOT/scripts/lib/reproduce_multi30k.sh" "$@" ;;
  -h|--help) usage ;;
  *) runs_usage_error "unknown table '$TASK' (iwslt14 or multi30k)" ;;
esac
[ $# -ge 1 ] || runs_usage_error "iwslt14: give the data directory (fairseq's prepare-iwslt14.sh output)"
DATA=$1; shift

SEEDS=1111,2222,3333,4444,5555
VARIANTS=post_ln,pre_ln,admin
DEVICE=auto
MAX_UPDATES=
AVERAGE_LAST=10
OUT=runs/reproduce-iwslt14
SETS=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || runs_usage_error "$1 needs a value"
  case "$1" in
    --seeds) SEEDS=$2 ;;
    --variants) VARIANTS=$2 ;;
    --device) DEVICE=$2 ;;
    --max-updates) MAX_UPDATES=$2 ;;
    --average-last) AVERAGE_LAST=$2 ;;
    --out) OUT=$2 ;;
    --jobs) JOBS=$2 ;;
    --set) SETS+=(--set "$2") ;;
    *) runs_usage_error "unknown option $1" ;;
  esac
  shift 2
done

list=$(runs_parse_list --seeds "$SEEDS" '^[1-9][0-9]{0,8}$' "a positive integer") || exit 2
mapfile -t seeds <<<"$list"
list=$(runs_parse_list --variants "$VARIANTS" '^[a-z_][a-z0-9_]*$' "a residual variant name") || exit 2
mapfile -t variants <<<"$list"
[[ "$DEVICE" =~ ^(cpu|cuda|auto)$ ]] || runs_usage_error "--device: '$DEVICE' is not cpu, cuda or auto"
[ -z "$MAX_UPDATES" ] || [[ "$MAX_UPDATES" =~ ^[1-9][0-9]{0,8}$ ]] ||
  runs_usage_error "--max-updates: '$MAX_UPDATES' is not a positive integer"
[[ "$AVERAGE_LAST" =~ ^[1-9][0-9]{0,3}$ ]] || runs_usage_error "--average-last: '$AVERAGE_LAST' is not a positive integer"
[[ "$JOBS" =~ ^[1-9][0-9]{0,2}$ ]] || runs_usage_error "--jobs: '$JOBS' is not a positive integer"
[ -x "$CLINIC" ] || runs_error "$CLINIC: not built (scripts/build.sh)"

[ -d "$DATA" ] || runs_error "$DATA: not a directory (fairseq's prepare-iwslt14.sh output)"
DATA=$(cd "$DATA" && pwd)
mkdir -p "$OUT" || runs_error "$OUT: cannot create the output directory"
OUT=$(cd "$OUT" && pwd)
RUNS_FAILURES=$OUT/failures.txt
rm -f "$RUNS_FAILURES"

# Every variant must be one clinic knows (one error naming it, before any work).
for v in "${variants[@]}"; do
  "$CLINIC" config iwslt14/base --set model.residual="$v" > /dev/null 2> "$OUT/.variant.err" ||
    runs_usage_error "--variants: $(sed 's/^clinic: error: //' "$OUT/.variant.err" | head -n 1)"
done
rm -f "$OUT/.variant.err"

# ---- 1. check -------------------------------------------------------------
echo "== 1. check $DATA"
blob_id() {  # git's blob id of a file, without needing git
  { printf 'blob %d\0' "$(stat -c %s "$1")"; cat "$1"; } | sha1sum | cut -c1-40
}
README=$ROOT/test/data/iwslt14/README.md
known() {  # known FILE COLUMN: the paper copy's line count (2) / tokenized id (3) / BPE id (4)
  awk -F'|' -v f="\`$1\`" -v c="$(( $2 + 1 ))" '{ gsub(/ /, "", $2) } $2 == f { v = $(c); gsub(/[ `,]/, "", v); if (v != "") print v }' "$README"
}
same_copy=1
copy_notes=()
# Files and pairs first: a missing or misaligned file stops everything.
for split in train valid test; do
  declare -A n=()
  for lang in de en; do
    f=$DATA/$split.$lang
    [ -e "$f" ] || runs_error "$f: missing (DATA_DIR must hold train/valid/test.{de,en})"
    [ -f "$f" ] || runs_error "$f: not a regular file"
    [ -s "$f" ] || runs_error "$f: empty"
    n[$lang]=$(wc -l < "$f")
  done
  [ "${n[de]}" = "${n[en]}" ] ||
    runs_error "$DATA/$split.en: ${n[en]} lines, but $split.de has ${n[de]}: the pair is not aligned"
  if [ "${n[de]}" != "$(known "$split.de" 2)" ]; then
    same_copy=0
    copy_notes+=("$split: ${n[de]} lines (the paper's copy: $(known "$split.de" 2))")
  fi
  unset n
done
# The codes: beside the splits (the top level) or one up (the splits are tmp/).
CODES=
for c in "$DATA/code" "$DATA/../code"; do [ -f "$c" ] && { CODES=$(cd "$(dirname "$c")" && pwd)/code; break; }; done
if [ -n "$CODES" ]; then
  id=$(blob_id "$CODES")
  [ "$id" = "$(known code 4)" ] && echo "code: $CODES, blob $id = the paper's BPE codes" ||
    { same_copy=0; echo "code: $CODES, blob $id: other BPE codes (the paper's: $(known code 4))"; }
fi
# The text: BPE'd already (compare with the BPE column), or tokenized
# (compare with the tokenized column, then apply the codes with clinic bpe and
# compare what it wrote with the BPE column).
describe() {  # describe FILE NAME COLUMN WHAT
  local id; id=$(blob_id "$1")
  if [ "$id" = "$(known "$2" "$3")" ]; then
    echo "$2: $(wc -l < "$1") lines, blob $id = the paper's copy ($4)"
  else
    same_copy=0
    echo "$2: $(wc -l < "$1") lines, blob $id: a different copy (the paper's $4: $(known "$2" "$3"))"
  fi
}
if ! grep -q -F '@@ ' <(head -n 2000 "$DATA/train.de"); then
  [ -n "$CODES" ] ||
    runs_error "$DATA/train.de: no '@@ ' BPE marks in its first 2000 lines, and no BPE codes beside it ($DATA/code or $DATA/../code): the recipe trains on the joint BPE"
  for split in train valid test; do
    for lang in de en; do describe "$DATA/$split.$lang" "$split.$lang" 3 "tokenized"; done
  done
  echo "applying the BPE codes (clinic bpe) into $OUT/data"
  mkdir -p "$OUT/data"
  for split in train valid test; do
    for lang in de en; do
      f=$OUT/data/$split.$lang
      [ -s "$f" ] && [ "$f" -nt "$DATA/$split.$lang" ] && [ "$f" -nt "$CODES" ] && continue
      "$CLINIC" bpe --codes "$CODES" --input "$DATA/$split.$lang" --output "$f" ||
        runs_error "clinic bpe failed on $DATA/$split.$lang"
    done
  done
  DATA=$OUT/data
  what="joint 10k BPE, applied here"
else
  what="joint 10k BPE"
fi
for split in train valid test; do
  for lang in de en; do describe "$DATA/$split.$lang" "$split.$lang" 4 "$what"; done
done
if [ "$same_copy" = 1 ]; then
  COPY="the paper's copy (fairseq prepare-iwslt14.sh; blob ids of test/data/iwslt14/README.md)"
else
  COPY="a different copy${copy_notes:+: ${copy_notes[*]}}"
fi
echo "data: $COPY"

# ---- 2. vocab -------------------------------------------------------------
echo "== 2. vocab"
RECIPE_SETS=(--set data.dir="$DATA" "${SETS[@]}")
[ "$DEVICE" = auto ] || RECIPE_SETS+=(--set train.device="$DEVICE")
[ -z "$MAX_UPDATES" ] || RECIPE_SETS+=(--set train.max_updates="$MAX_UPDATES")
VOCAB=$OUT/vocab/dict.txt
if [ -s "$VOCAB" ]; then
  echo "joined dictionary: $VOCAB (built earlier: $(wc -l < "$VOCAB") types)"
else
  "$CLINIC" vocab iwslt14/base "${RECIPE_SETS[@]}" --run-dir "$OUT/vocab" > "$OUT/vocab.log" 2>&1 ||
    { cat "$OUT/vocab.log" >&2; runs_error "clinic vocab failed (log: $OUT/vocab.log)"; }
  [ -s "$VOCAB" ] || runs_error "$VOCAB: clinic vocab wrote no joined dictionary"
  echo "joined dictionary: $VOCAB ($(wc -l < "$VOCAB") types from train.de + train.en)"
fi

# ---- 3. train -------------------------------------------------------------
updates=$("$CLINIC" config iwslt14/base "${RECIPE_SETS[@]}" | awk '/^train:/ { t = 1 } t && /^  max_updates:/ && !u { u = $2 } END { print u }')
runs_total=$(( ${#variants[@]} * ${#seeds[@]} ))
echo "== 3. train ${#variants[@]} variants x ${#seeds[@]} seeds = $runs_total runs of $updates updates, $JOBS at a time"
# The cost, measured: a few updates of the real model on the chosen device,
# for the runs not finished yet.
pending=0
for v in "${variants[@]}"; do
  for s in "${seeds[@]}"; do
    runs_is_done "$OUT/$v-seed$s" "iwslt14/$v" "${RECIPE_SETS[@]}" --set train.seed="$s" ||
      pending=$((pending + 1))
  done
done
if [ "$pending" = 0 ]; then
  echo "cost: none (every run finished earlier)"
elif bench=$("$CLINIC" bench "iwslt14/${variants[0]}" "${RECIPE_SETS[@]}" --steps 5 --json 2> "$OUT/bench.log"); then
  ups=$(echo "$bench" | grep -o '"updates_per_s": *[0-9.e+-]*' | sed 's/.*: *//' || true)
  dev=$(echo "$bench" | grep -o '"device": *"[^"]*"' | sed 's/.*: *"//; s/"$//' || true)
  awk -v ups="${ups:-0}" -v u="$updates" -v n="$pending" -v d="${dev:-?}" -v j="$JOBS" 'BEGIN {
    if (ups <= 0) { print "cost: not measured (clinic bench printed no updates_per_s)"; exit }
    ms = 1000 / ups; h = ms * u / 3.6e6
    printf "cost: %.1f ms/update on %s (clinic bench: 5 updates of the first variant, synthetic 4,096-token batches)\n", ms, d
    printf "      = %.3g device-hours per run, %.3g for the %d runs to train (from where each stopped: less)\n", h, h * n, n }'
else
  echo "cost: not measured (clinic bench failed: $OUT/bench.log)"
fi
for v in "${variants[@]}"; do
  for s in "${seeds[@]}"; do
    run=$OUT/$v-seed$s
    mkdir -p "$run"
    [ -f "$run/checkpoint_last.pt" ] || [ -s "$run/dict.txt" ] || runs_copy_atomic "$VOCAB" "$run/dict.txt"
    runs_train "$run" "$updates" "iwslt14/$v" "${RECIPE_SETS[@]}" --set train.seed="$s"
  done
done
runs_wait
runs_finish

# ---- 4. average, 5. decode ------------------------------------------------
echo "== 4. average the last $AVERAGE_LAST epoch checkpoints; 5. decode test (beam 5) and score"
first_decode_s=
for v in "${variants[@]}"; do
  for s in "${seeds[@]}"; do
    run=$OUT/$v-seed$s
    avg=$run/average_last$AVERAGE_LAST.pt
    if [ ! -s "$avg" ] || [ "$avg" -ot "$run/.runs-done" ]; then
      "$CLINIC" average --run-dir "$run" --last "$AVERAGE_LAST" --out "$avg" > "$run/average.log" 2>&1 ||
        { runs_fail "$run: clinic average failed: $(grep 'clinic: error' "$run/average.log" | head -n 1)"; continue; }
      rm -f "$run/test.bleu"
    fi
    echo "$v seed $s: $(grep -i 'averag' "$run/average.log" | tail -n 1)"
    if [ ! -s "$run/test.bleu" ]; then
      if [ -n "$first_decode_s" ]; then
        echo "$v seed $s: decoding (cost: the first decode took ${first_decode_s} s)"
      else
        echo "$v seed $s: decoding test (cost: not measured yet; beam 5 over $(wc -l < "$DATA/test.de") lines)"
      fi
      t0=$(date +%s)
      "$CLINIC" eval --checkpoint "$avg" --split test --beam 5 --output "$run/test.hyp" \
        > "$run/test.bleu.tmp" 2> "$run/eval.log" ||
        { runs_fail "$run: clinic eval failed: $(grep 'clinic: error' "$run/eval.log" | head -n 1)"; continue; }
      mv "$run/test.bleu.tmp" "$run/test.bleu"
      first_decode_s=${first_decode_s:-$(( $(date +%s) - t0 ))}
    fi
    echo "$v seed $s: $(head -n 1 "$run/test.bleu")"
  done
done
runs_finish

# ---- 6. table -------------------------------------------------------------
echo "== 6. table"
declare -A PAPER=([post_ln]="35.64 0.23" [pre_ln]="35.50 0.04" [admin]="35.67 0.15")
declare -A NAME=([post_ln]=Post-LN [pre_ln]=Pre-LN [admin]=Admin)
md="# IWSLT'14 De-En (recipes/iwslt14): $(IFS=,; echo "${variants[*]}") x seeds $(IFS=,; echo "${seeds[*]}")

Command: \`scripts/reproduce.sh iwslt14 DATA_DIR --seeds $(IFS=,; echo "${seeds[*]}") --variants $(IFS=,; echo "${variants[*]}")$( [ -z "$MAX_UPDATES" ] || echo " --max-updates $MAX_UPDATES")$( [ "$AVERAGE_LAST" = 10 ] || echo " --average-last $AVERAGE_LAST")$( [ "$DEVICE" = auto ] || echo " --device $DEVICE")$(for x in "${SETS[@]}"; do [ "$x" = --set ] || printf ' --set %s' "$x"; done)\`
Data: $COPY. $updates updates per run; the last $AVERAGE_LAST epoch checkpoints averaged; test decoded
with beam 5; BLEU tokenized and lowercased after --remove-bpe (as fairseq-generate scores it).
Mean +- sample std (n-1) over seeds; the paper: Liu et al. 2020, 5 seeds.

| variant | BLEU (mean ± std) | seeds | per seed | paper |
|---|---|---|---|---|
"
json_rows=()
for v in "${variants[@]}"; do
  vals=()
  per=()
  for s in "${seeds[@]}"; do
    b=$(sed -n 's/^BLEU = \([0-9.]*\).*/\1/p' "$OUT/$v-seed$s/test.bleu" | head -n 1)
    [ -n "$b" ] || runs_error "$OUT/$v-seed$s/test.bleu: no 'BLEU = ' line"
    vals+=("$b")
    per+=("\"$s\": $b")
  done
  read -r mean std <<<"$(printf '%s\n' "${vals[@]}" | awk '{ x[NR] = $1; s += $1 } END {
    m = s / NR; v = 0; for (i = 1; i <= NR; i++) v += (x[i] - m) ^ 2
    if (NR > 1) printf "%.2f %.2f\n", m, sqrt(v / (NR - 1)); else printf "%.2f null\n", m }')"
  read -r pm ps <<<"${PAPER[$v]:-null null}"
  shown=$([ "$std" = null ] && echo "$mean" || echo "$mean ± $std")
  paper=$([ "$pm" = null ] && echo "–" || echo "$pm ± $ps")
  md+="| ${NAME[$v]:-$v} | $shown | ${#vals[@]} | $(IFS=' '; echo "${vals[*]}") | $paper |
"
  json_rows+=("    \"$v\": {\"mean\": $mean, \"std\": $std, \"n\": ${#vals[@]}, \"per_seed\": {$(IFS=,; echo "${per[*]}" | sed 's/,/, /g')}, \"paper\": {\"mean\": $pm, \"std\": $ps, \"n\": 5}}")
done
json="{
  \"table\": \"iwslt14\",
  \"data_dir\": \"$DATA\",
  \"data_copy\": \"$(echo "$COPY" | sed 's/\\/\\\\/g; s/"/\\"/g')\",
  \"max_updates\": $updates,
  \"average_last\": $AVERAGE_LAST,
  \"beam\": 5,
  \"bleu\": \"tokenized, lowercased, after --remove-bpe\",
  \"variants\": {
$(IFS=$'\n'; echo "${json_rows[*]}" | sed '$!s/$/,/')
  }
}"
runs_write_atomic "$OUT/table.md" "${md%$'\n'}"
runs_write_atomic "$OUT/table.json" "$json"
cat "$OUT/table.md"
echo "table: $OUT/table.md, $OUT/table.json"
exit
}
