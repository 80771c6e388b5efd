# shellcheck shell=bash
# The one "train many settings, a few at a time, then diagnose" loop behind
# scripts/reproduce.sh, cases.sh, case_a.sh and table1.sh (issue 36 item 6).
# Source it after `set -euo pipefail`; it reads
#   CLINIC          the clinic binary (default build/bin/clinic)
#   JOBS            runs trained at once (default 2; give each train.threads=1)
#   PROGRESS_EVERY  seconds between progress lines of a run (default 60; 0: none)
#   RUNS_FAILURES   file that collects failures (default: none, printed only)
#   RUNS_EXIT_IS_RESULT  1: a run that exits non-zero (stopped on non-finite
#                   losses, say) is a finished result, not a failure (the deep
#                   table: diagnose judges it)
#   RUNS_ON_DONE    a function called as `RUNS_ON_DONE RUN` in the run's own job
#                   once it finished (its evaluation, say), so two runs evaluate
#                   while the next two train
#   RUNS_RECORDS, RUNS_OUT, RUNS_RECORD_FILES  keep each finished run's small
#                   results — .runs-done, metrics.jsonl and RUNS_RECORD_FILES
#                   (names in the run dir) — in RUNS_RECORDS/<RUN relative to
#                   RUNS_OUT>/ (written after RUNS_ON_DONE, as a whole directory
#                   renamed into place). A run whose dir does not exist but whose
#                   record holds the same command is restored from the record
#                   instead of trained: a table outlives its run directories (a
#                   new machine, a deleted runs/), checkpoints aside.
# A run is finished when its dir holds .runs-done with the very command that
# trained it: re-running skips it; a changed command (more updates, another
# flag) resumes the run dir, which clinic train continues exactly.

CLINIC=${CLINIC:-build/bin/clinic}
JOBS=${JOBS:-2}
PROGRESS_EVERY=${PROGRESS_EVERY:-60}

runs_error() {  # one clinic-style error line, exit 1
  echo "clinic: error: $*" >&2
  exit 1
}

runs_usage_error() {  # a bad flag or list: one clinic-style error line, exit 2
  echo "clinic: error: $*" >&2
  exit 2
}

# runs_write_atomic FILE TEXT: TEXT and a newline to FILE.tmp, then renamed;
# a failed write (a full disk) is one error and FILE keeps what it held.
runs_write_atomic() {
  { printf '%s\n' "$2" > "$1.tmp" && mv "$1.tmp" "$1"; } 2>/dev/null ||
    { rm -f "$1.tmp"; runs_error "$1: cannot write (full disk, or no such writable directory)"; }
}

# runs_copy_atomic SRC DST: SRC copied to DST.tmp.PID, then renamed; a failed
# copy is one error and DST keeps what it held.
runs_copy_atomic() {
  { cp "$1" "$2.tmp.$$" && mv "$2.tmp.$$" "$2"; } 2>/dev/null ||
    { rm -f "$2.tmp.$$"; runs_error "$2: cannot write a copy of $1 (full disk, or no such writable directory)"; }
}

runs_fail() {  # a failed run or stage: said at once, collected for the end
  echo "$*" >&2
  [ -z "${RUNS_FAILURES:-}" ] || echo "$*" >> "$RUNS_FAILURES"
}

runs_is_done() {  # runs_is_done RUN ARG...: trained with exactly this command?
  local run=$1; shift
  [ -f "$run/.runs-done" ] && [ "$(cat "$run/.runs-done")" = "$(printf '%q ' "$@")" ]
}

# runs_train RUN MAX_UPDATES ARG...: `clinic train ARG... --run-dir RUN` in the
# background (at most JOBS at once), log in RUN.log, a progress line every
# PROGRESS_EVERY s ("RUN: update U/MAX, S s/update, ETA"). Returns at once;
# runs_wait waits for all.
runs_train() {
  local run=$1 max=$2; shift 2
  runs_restore "$run" "$@"
  if runs_is_done "$run" "$@"; then
    echo "$(basename "$run"): finished earlier (skipped; $run/.runs-done)"
    return 0
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  _runs_one "$run" "$max" "$@" &
}

_runs_last_update() {  # the last logged training update of RUN (or empty)
  tail -n 200 "$1/metrics.jsonl" 2>/dev/null | grep -o '"update": *[0-9]*' | tail -n 1 |
    grep -o '[0-9]*$' || true
}

# _runs_log_update LOG OFFSET: the last update this session's lines of LOG (the
# bytes past OFFSET) reached: "[train] resumed ... at update U" or "[train]
# epoch E update U |" (or empty). Not metrics.jsonl: after a resume it still
# holds the old session's updates past the checkpoint (update 160 while the
# run, back at 100, logs 110), which made the rate 0 and the ETA 0h00m.
_runs_log_update() {
  tail -c +$(( $2 + 1 )) "$1" 2>/dev/null |
    grep -oE '\[train\] (epoch [0-9]+ update|resumed .* at update) [0-9]+' | tail -n 1 |
    grep -oE '[0-9]+$' || true
}

# runs_progress_line NAME U U0 MAX SECONDS: "NAME: update U/MAX, S s/update,
# ETA XhYYm", the rate over the SECONDS since the session's first sample at
# update U0; "ETA pending" until the run has moved past U0.
runs_progress_line() {
  awk -v n="$1" -v u="$2" -v u0="$3" -v m="$4" -v t="$5" \
    'BEGIN { if (u <= u0) { printf "%s: update %d/%d, ETA pending\n", n, u, m; exit }
             r = t / (u - u0); eta = (m > u) ? r * (m - u) : 0
             printf "%s: update %d/%d, %.2f s/update, ETA %dh%02dm\n", n, u, m, r,
                    int(eta / 3600), int(eta % 3600 / 60) }'
}

_runs_one() {
  local run=$1 max=$2; shift 2
  mkdir -p "$(dirname "$run")"
  local name; name=$(basename "$run")
  echo "$name: training (log: $run.log)"
  local offset=0
  [ ! -f "$run.log" ] || offset=$(stat -c %s "$run.log")
  nice "$CLINIC" train "$@" --run-dir "$run" >> "$run.log" 2>&1 &
  local pid=$! start; start=$(date +%s)
  # Stopped, the run checkpoints and exits 0 (clinic train's SIGTERM contract).
  trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit 143' TERM INT
  local ticks=0 u0="" t0=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    [ "$PROGRESS_EVERY" -gt 0 ] || continue
    # The rate's origin, looked for every second until found: a resumed run's
    # checkpoint (its "resumed" line comes first), a fresh run's first update.
    if [ -z "$u0" ]; then u0=$(_runs_log_update "$run.log" "$offset"); t0=$ticks; fi
    if [ $((ticks % PROGRESS_EVERY)) -eq 0 ] && [ -n "$u0" ]; then
      runs_progress_line "$name" "$(_runs_log_update "$run.log" "$offset")" "$u0" "$max" \
        $((ticks - t0))
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ "$rc" = 0 ] && tail -n 50 "$run.log" | grep '\[train\] stopped:' | tail -n 1 | grep -q 'stop signal'; then
    # Someone else's SIGTERM/SIGINT: checkpointed, not finished; the next run resumes it.
    runs_fail "$run: stopped by a signal at update $(_runs_last_update "$run") (checkpointed; re-run to resume)"
  elif [ "$rc" = 0 ] || [ "${RUNS_EXIT_IS_RESULT:-0}" = 1 ]; then
    runs_write_atomic "$run/.runs-done" "$(printf '%q ' "$@")"
    echo "$name: finished in $(( $(date +%s) - start )) s$([ "$rc" = 0 ] || echo " (clinic train exited with $rc: kept as a result, see $run.log)")"
    [ -z "${RUNS_ON_DONE:-}" ] || "$RUNS_ON_DONE" "$run"
    runs_record "$run"
  else
    runs_fail "$run: clinic train exited with $rc (see $run.log)"
  fi
}

_runs_record_dir() {  # where RUN's record lives
  echo "$RUNS_RECORDS/${1#"$RUNS_OUT"/}"
}

# runs_record RUN: RUN's record rewritten from its dir (nothing without
# RUNS_RECORDS or before .runs-done). A failed write is said and collected;
# the record it replaces stays whole.
runs_record() {
  local run=$1 f ok=1
  [ -n "${RUNS_RECORDS:-}" ] && [ -f "$run/.runs-done" ] || return 0
  local dst; dst=$(_runs_record_dir "$run")
  local tmp=$dst.tmp.$$
  { rm -rf "$tmp" && mkdir -p "$tmp"; } 2>/dev/null || ok=0
  for f in .runs-done metrics.jsonl ${RUNS_RECORD_FILES:-}; do
    if [ "$ok" = 1 ] && [ -f "$run/$f" ]; then cp "$run/$f" "$tmp/" 2>/dev/null || ok=0; fi
  done
  # The old record moves aside only once the new one is whole.
  if [ "$ok" = 1 ]; then
    { rm -rf "$dst.old" && { [ ! -d "$dst" ] || mv "$dst" "$dst.old"; } && mv "$tmp" "$dst"; } 2>/dev/null || ok=0
  fi
  if [ "$ok" = 1 ]; then
    rm -rf "$dst.old"
  else
    rm -rf "$tmp"
    if [ ! -d "$dst" ] && [ -d "$dst.old" ]; then mv "$dst.old" "$dst" || true; fi
    runs_fail "$dst: cannot write the record of $run (full disk, or no such writable directory)"
  fi
}

# runs_restore RUN ARG...: RUN's dir made from its record when the dir does not
# exist and the record was trained with exactly this command. A dir that exists
# (a run in progress, someone's files) is never touched.
runs_restore() {
  local run=$1; shift
  [ -n "${RUNS_RECORDS:-}" ] && [ ! -e "$run" ] || return 0
  local rec f; rec=$(_runs_record_dir "$run")
  runs_is_done "$rec" "$@" || return 0
  mkdir -p "$run.tmp.$$" || runs_error "$run: cannot create the run directory"
  for f in "$rec"/.runs-done "$rec"/*; do
    [ ! -f "$f" ] || cp "$f" "$run.tmp.$$/" || { rm -rf "$run.tmp.$$"; runs_error "$run: cannot restore $f"; }
  done
  # Results newer than .runs-done, as a run evaluated here leaves them (a git
  # checkout gives every file the same time).
  find "$run.tmp.$$" -type f ! -name .runs-done -exec touch {} + 2>/dev/null || true
  mv "$run.tmp.$$" "$run" || { rm -rf "$run.tmp.$$"; runs_error "$run: cannot restore from $rec"; }
  echo "$(basename "$run"): restored from its record $rec (no checkpoint)"
}

# SIGTERM/SIGINT to the driver stops every run (each checkpoints) before exiting.
_runs_interrupt() {
  echo "interrupted: stopping the runs (each writes its checkpoint)" >&2
  local p
  for p in $(jobs -rp); do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  exit 130
}
trap _runs_interrupt TERM INT

runs_wait() {
  while [ -n "$(jobs -rp)" ]; do wait -n || true; done
}

# runs_diagnose OUT RUN...: one clinic diagnose report over the runs, its
# verdict printed (the report's paths are not).
runs_diagnose() {
  local out=$1; shift
  "$CLINIC" diagnose "$@" --out "$out" | grep -v '^report:' ||
    runs_fail "$out: clinic diagnose exited with $?"
}

runs_finish() {  # exit 1 when anything failed
  if [ -n "${RUNS_FAILURES:-}" ] && [ -s "$RUNS_FAILURES" ]; then
    echo "failures:" >&2
    cat "$RUNS_FAILURES" >&2
    exit 1
  fi
}

# runs_parse_list FLAG VALUE REGEX WHAT: a comma list of distinct items, one
# per line; a bad or repeated item is a usage error (exit 2).
runs_parse_list() {
  local flag=$1 value=$2 re=$3 what=$4 item
  [ -n "$value" ] || runs_usage_error "$flag: empty list"
  local -A seen=()
  local -a items
  IFS=, read -ra items <<<"$value"
  for item in "${items[@]}"; do
    [[ "$item" =~ $re ]] || runs_usage_error "$flag: '$item' is not $what"
    [ -z "${seen[$item]:-}" ] || runs_usage_error "$flag: '$item' is given twice"
    seen[$item]=1
    echo "$item"
  done
}

# runs_stats VALUE...: "mean std n" (sample std, n-1; "null" below 2 values),
# two decimals, as the paper's tables.
runs_stats() {
  printf '%s\n' "$@" | awk 'NF { x[++n] = $1; s += $1 } END {
    if (n == 0) { print "null null 0"; exit }
    m = s / n; v = 0; for (i = 1; i <= n; i++) v += (x[i] - m) ^ 2
    if (n > 1) printf "%.2f %.2f %d\n", m, sqrt(v / (n - 1)), n; else printf "%.2f null 1\n", m }'
}

# runs_bleu FILE: the score of a `clinic eval` output ("BLEU = 37.14 ...").
runs_bleu() {
  sed -n 's/^BLEU = \([0-9.]*\).*/\1/p' "$1" 2>/dev/null | head -n 1
}
