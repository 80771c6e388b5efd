#!/usr/bin/env bash
# The GPU check, in two halves (issue 22):
#
#   scripts/gpu-check.sh prepare   here (Debian 12): packs the Debian libraries
#                                  clinic builds against into .gpu/deps.tar.xz
#                                  (ignored by git), from the installed packages.
#   scripts/gpu-check.sh run       on a GPU machine that has a python3 whose
#                                  PyTorch 2.x + CUDA wheel holds LibTorch, nvcc,
#                                  CMake and ninja, but no network and none of
#                                  Debian's libraries: builds clinic against that
#                                  LibTorch, runs the test suite with the CUDA
#                                  instances of the device tests, trains
#                                  IWSLT-small on synthetic copy batches in fp32,
#                                  bf16 and fp16 (loss scaler) and prints one JSON
#                                  line per precision. Results go to $OUT (or
#                                  build-gpu/out). Budget: well under 10 minutes.
#
#   scripts/gpu-check.sh perf      on the GPU machine: build, then clinic beside
#                                  plain PyTorch and torch.compile (perf_gpu below).
# With the device tool: prepare here, then
#   run(command="scripts/gpu-check.sh run", carry=[".gpu"], timeout_s=540)
#   run(command="scripts/gpu-check.sh perf", carry=[".gpu"], timeout_s=560)
set -uo pipefail
cd "$(dirname "$0")/.."

# Debian packages whose headers, CMake configs and shared libraries the build
# needs. Runtime libraries are listed beside their -dev packages; LibTorch and
# CUDA come from the GPU machine's own PyTorch wheel. BLAS is left out: with
# LibTorch 2.x attention runs in SDPA, not in clinic's sgemm (CLINIC_USE_BLAS=OFF).
PACKAGES=(
  libyaml-cpp-dev libyaml-cpp0.7 libfmt-dev libfmt9 libspdlog-dev libspdlog1.10
  libcli11-dev libgtest-dev libgmock-dev libsentencepiece-dev libsentencepiece0
  libjemalloc-dev libjemalloc2 libicu-dev libicu72 nlohmann-json3-dev
)
# Tests that need gnuplot (not on the GPU machine); the report does not
# depend on the device, and CI runs them.
NO_GNUPLOT='Diagnose.ReportOnARealDivergingRun|Analyze.CommandWritesTableAndPlot'

prepare() {
  set -e
  scripts/install-deps.sh
  rm -f .gpu/deps.tar.xz .gpu/files
  mkdir -p .gpu
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      { echo "clinic: error: gpu-check prepare: Debian package $p is not installed" >&2; exit 1; }
    # Files and links only (tar makes the directories); no documentation.
    dpkg -L "$p" | while IFS= read -r f; do
      case "$f" in /usr/share/doc/* | /usr/share/man/* | /usr/share/lintian/*) continue ;; esac
      if [ -f "$f" ] || [ -L "$f" ]; then echo "${f#/}"; fi
    done >>.gpu/files
  done
  local n
  n=$(wc -l <.gpu/files)
  tar -C / --no-recursion -cJf .gpu/deps.tar.xz -T .gpu/files
  local tree
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
  local deps
  deps=$(stat -c %s .gpu/deps.tar.xz)
  echo "gpu-check prepare: $n files of ${#PACKAGES[@]} packages -> .gpu/deps.tar.xz" \
       "($((deps / 1048576)) MiB); working tree $((tree / 1048576)) MiB;" \
       "together $(((deps + tree) / 1048576)) MiB of the 64 MiB that may travel"
  if [ $((deps + tree)) -gt $((60 * 1048576)) ]; then
    echo "clinic: error: gpu-check prepare: more than 60 MiB would travel" >&2
    exit 1
  fi
}

out="${OUT:-$PWD/build-gpu/out}"
t0=$(date +%s)
stamp() { echo "[gpu-check +$(($(date +%s) - t0))s] $*"; }

build_gpu() {
  mkdir -p "$out"
  [ -f .gpu/deps.tar.xz ] ||
    { echo "clinic: error: .gpu/deps.tar.xz missing: run 'scripts/gpu-check.sh prepare' first" >&2; exit 1; }
  deps=/tmp/clinic-deps
  rm -rf "$deps" && mkdir -p "$deps" && tar -C "$deps" -xJf .gpu/deps.tar.xz
  py=$(command -v python3)
  local torch_cmake
  torch_cmake=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)') ||
    { echo "clinic: error: python3 has no torch" >&2; exit 1; }
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    nvcc --version | tail -2
    cmake --version | head -1
    g++ --version | head -1
  } >"$out/machine.txt" 2>&1
  cat "$out/machine.txt"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

  stamp "configure + build against $torch_cmake"
  if ! { cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_PREFIX_PATH="$torch_cmake;$deps/usr" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
           -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include" -DCLINIC_USE_BLAS=OFF \
           -DCLINIC_BUILD_TESTS=ON &&
         cmake --build build-gpu -j "$(nproc)"; } >"$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    echo "clinic: error: gpu-check: the build failed (build.log)" >&2
    exit 1
  fi
  stamp "built"
  # The TensorBoard-reader oracle: this machine's python3 has tensorboard.
  mkdir -p build-gpu/oracle-venv/bin && ln -sf "$py" build-gpu/oracle-venv/bin/python
  # PyTorch wheels export their own std::filesystem; clinic must bind to
  # libstdc++'s (CMakeLists.txt names libstdc++ first). Show where it binds.
  env | grep -E '^LD_' || true
  readelf -d build-gpu/bin/clinic_tests | grep NEEDED | head -3
  rm -f /tmp/clinic-ldb.*
  LD_DEBUG=bindings LD_DEBUG_OUTPUT=/tmp/clinic-ldb build-gpu/bin/clinic_tests \
    --gtest_filter=Diagnose.HealthyRunFiresNothing >/dev/null 2>&1
  grep -h "remove_all" /tmp/clinic-ldb.* 2>/dev/null | grep "normal symbol" | head -2 |
    sed 's/.*binding file/binding/'
}

tests_gpu() {
  stamp "test suite (GPU visible: the OnDevice/*/cuda instances run on CUDA)"
  local ctest_rc
  (cd build-gpu && ctest -j 8 --timeout 300 --output-on-failure -E "$NO_GNUPLOT") >"$out/ctest.log" 2>&1
  ctest_rc=$?
  grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)|\(SEGFAULT\)|Subprocess aborted" "$out/ctest.log" | head -40
  grep -E "OnDevice.*cuda" "$out/ctest.log" | grep -Ec "Passed" |
    xargs -I{} echo "CUDA device-test instances passed: {}"
  grep -E "C10dWorld.Nccl" "$out/ctest.log" | grep -E "Passed|Failed|Skipped" | sed 's/^ *[0-9/]* *//'
  stamp "tests done (rc $ctest_rc)"
  dist_gpu
  return $ctest_rc
}

# Data parallel over NCCL, one rank per GPU (NCCL refuses two ranks on one
# device): on a one-GPU machine the second rank must be refused with a clear
# line, and the job must end (not hang) with that error.
dist_gpu() {
  local ngpu
  ngpu=$(nvidia-smi -L | grep -c '^GPU')
  stamp "data parallel: clinic train --nproc 2 on CUDA ($ngpu GPU(s) here)"
  rm -rf build-gpu/run-dp
  timeout 120 build-gpu/bin/clinic train multi30k/admin --nproc 2 --run-dir build-gpu/run-dp \
    --set train.device=cuda --set train.max_updates=20 --set train.threads=4 \
    --set train.dist_timeout_s=60 >"$out/dp.log" 2>&1
  echo "--nproc 2 rc $? (expected: 0 with >= 2 GPUs; non-zero with a clinic: error line with 1)"
  grep -E "clinic: error|world size|stopped" "$out/dp.log" | head -4
}

bench_gpu() {
  local bin=build-gpu/bin/clinic
  : >"$out/bench.jsonl"
  for prec in fp32 bf16 fp16; do
    stamp "bench $prec"
    "$bin" bench iwslt14/admin --set data.vocab_size=10000 --set train.device=cuda \
      --set train.precision="$prec" --set train.threads=4 --set train.loss_scale_init=65536 \
      --task copy --steps 300 --warmup 10 --curve-points 10 --json \
      >>"$out/bench.jsonl" 2>>"$out/bench.log" || echo "clinic: error: bench $prec failed" >&2
  done
  cat "$out/bench.jsonl"

  stamp "end-to-end: clinic train multi30k on CUDA (fp16, validation, BLEU)"
  rm -rf build-gpu/run-m30k
  timeout 150 "$bin" train multi30k/admin --run-dir build-gpu/run-m30k --set train.device=cuda \
    --set train.precision=fp16 --set train.max_updates=400 --set train.threads=4 \
    >"$out/train.log" 2>&1
  echo "train rc $?"
  grep -E "valid|bleu|BLEU|error|overflow" "$out/train.log" | tail -8

  "$py" - "$out/bench.jsonl" <<'EOF' | tee "$out/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["precision"]: r for r in rows}
print("precision  tokens/s   MFU     GEMM peak (TFLOP/s, dtype)  peak GPU MiB  loss first->last  scale events")
for p, r in by.items():
    c = r["loss_curve"]
    print(f'{p:9s} {r["tokens_per_s"]:10.0f} {100*r["mfu"]:6.2f}%  {r["gemm_peak_gflops"]/1e3:8.1f} {r["gemm_peak_dtype"]:10s}'
          f'  {r["device_peak_memory_mb"]:10.0f}  {c[0][1]:.3f} -> {c[-1][1]:.4f}'
          f'  overflows {r["loss_scale_overflows"]} growths {r["loss_scale_growths"]} scale {r["loss_scale"]}')
if "fp32" in by:
    ref = {u: l for u, l in by["fp32"]["loss_curve"]}
    for p in ("bf16", "fp16"):
        if p not in by: continue
        worst = max(abs(l - ref[u]) / max(ref[u], 0.05) for u, l in by[p]["loss_curve"] if u in ref)
        print(f"{p} vs fp32: largest relative loss difference along the curve {worst:.3f}"
              f" -> {'agree' if worst < 0.15 else 'DISAGREE'} (threshold 0.15)")
EOF
  stamp "done"
}

# Issue 33 item 5: clinic beside plain PyTorch on the same GPU, one table.
# The same IWSLT-small model (iwslt14/post_ln: 6+6 layers, d 512, FFN 1024,
# 4 heads, shared 10k vocabulary) from the same initial weights (bench
# --save-init), the same optimizer (Adam, betas 0.9/0.98, no decay, lr 5e-4
# constant), synthetic copy batches of 32-token rows, at 4,096 and 32,768
# tokens per update, fp32 / bf16 / fp16:
#   clinic         clinic bench: phase-timed, the host reads every update (today's path)
#   clinic_device  clinic bench --throughput: decided on the device (train.host_reads: log_interval)
#   torch_eager    tools/bench/reference_train.py (autocast; fp16 with GradScaler)
#   torch_compile  the same under torch.compile (bf16); mode=max-autotune too (bf16, 4,096
#                  tokens) with PERF_AUTOTUNE=1: its autotuning takes minutes of the budget
#   clinic_graph   --throughput with train.cuda_graph: one captured update, replayed
# Then one learning run per side
# (bf16, 4,096 tokens, a 512-token copy vocabulary, 300 updates) for the loss
# curves. Prints the table with MFU against clinic's measured GEMM peak of that
# dtype; writes $out/perf.json (for docs/bench/).
# PERF_DEVICE, PERF_TOKENS, PERF_STEPS and PERF_SETS (extra --set k=v words)
# shrink it for a dry run on the CPU: scripts/gpu-check.sh perf-dry.
perf_gpu() {
  local bin=${PERF_BIN:-build-gpu/bin/clinic} rec=iwslt14/post_ln dev=${PERF_DEVICE:-cuda}
  local pdir="$out/perf" ref=tools/bench/reference_train.py
  rm -rf "$pdir" && mkdir -p "$pdir"
  local extra=()
  for kv in ${PERF_SETS:-}; do extra+=(--set "$kv"); done
  local common=(--set train.device="$dev" --set train.threads=4 --set train.loss_scale_init=65536
                --set diag.interval=0 --set optim.name=adam --set optim.weight_decay=0
                --set optim.lr=5e-4 "${extra[@]}" --task copy --json)
  local pyargs=(--device "$dev" --threads 4 --curve-points 5 --lr 5e-4 --label-smoothing 0.1 --dropout 0.3
                --attention-dropout 0.1 --activation-dropout 0.1)
  stamp "perf: initial weights"
  "$bin" bench "$rec" "${common[@]}" --set data.vocab_size=10000 --steps 1 --warmup 0 \
    --save-init "$pdir/init.pt" >/dev/null 2>>"$pdir/log" ||
    { echo "clinic: error: perf: bench --save-init failed ($pdir/log)" >&2; return 1; }
  local tokens prec steps warm rows
  for tokens in ${PERF_TOKENS:-4096 32768}; do
    rows=$((tokens / 32))
    if [ "$tokens" -le 4096 ]; then steps=100 warm=10; else steps=30 warm=5; fi
    steps=${PERF_STEPS:-$steps}
    for prec in fp32 bf16 fp16; do
      stamp "perf: $tokens tokens, $prec"
      local tag="$tokens-$prec" set=(--set data.vocab_size=10000 --set data.max_tokens="$tokens"
                                     --set train.precision="$prec" --steps "$steps" --warmup "$warm")
      timeout 120 "$bin" bench "$rec" "${common[@]}" "${set[@]}" >"$pdir/clinic-$tag.json" 2>>"$pdir/log"
      timeout 120 "$bin" bench "$rec" "${common[@]}" "${set[@]}" --throughput \
        >"$pdir/clinic_device-$tag.json" 2>>"$pdir/log"
      timeout 120 "$bin" bench "$rec" "${common[@]}" "${set[@]}" --throughput --set train.cuda_graph=true \
        >"$pdir/clinic_graph-$tag.json" 2>>"$pdir/log"
      timeout 120 "$py" "$ref" "$pdir/init.pt" --copy "$rows,32" --precision "$prec" \
        --steps "$steps" --warmup "$warm" "${pyargs[@]}" >"$pdir/torch_eager-$tag.json" 2>>"$pdir/log"
      if [ "$prec" = bf16 ]; then
        timeout 240 "$py" "$ref" "$pdir/init.pt" --copy "$rows,32" --precision "$prec" --compile default \
          --steps "$steps" --warmup "$warm" "${pyargs[@]}" >"$pdir/torch_compile-$tag.json" 2>>"$pdir/log"
        if [ "$tokens" -le 4096 ] && [ "${PERF_AUTOTUNE:-0}" = 1 ]; then
          timeout 300 "$py" "$ref" "$pdir/init.pt" --copy "$rows,32" --precision "$prec" \
            --compile max-autotune --steps "$steps" --warmup "$warm" "${pyargs[@]}" \
            >"$pdir/torch_autotune-$tag.json" 2>>"$pdir/log"
        fi
      fi
    done
  done
  stamp "perf: loss curves (bf16, 4,096 tokens, 512-token vocabulary, 300 updates)"
  "$bin" bench "$rec" "${common[@]}" --set data.vocab_size=512 --steps 1 --warmup 0 \
    --save-init "$pdir/init512.pt" >/dev/null 2>>"$pdir/log"
  timeout 120 "$bin" bench "$rec" "${common[@]}" --set data.vocab_size=512 --set train.precision=bf16 \
    --steps "${PERF_STEPS:-300}" --warmup 0 --curve-points 30 --throughput \
    >"$pdir/curve-clinic_device.json" 2>>"$pdir/log"
  timeout 120 "$bin" bench "$rec" "${common[@]}" --set data.vocab_size=512 --set train.precision=bf16 \
    --steps "${PERF_STEPS:-300}" --warmup 0 --curve-points 30 --throughput --set train.cuda_graph=true \
    >"$pdir/curve-clinic_graph.json" 2>>"$pdir/log"
  timeout 120 "$py" "$ref" "$pdir/init512.pt" --copy 128,32 --precision bf16 --steps "${PERF_STEPS:-300}" --warmup 0 \
    "${pyargs[@]}" --curve-points 30 >"$pdir/curve-torch_eager.json" 2>>"$pdir/log"
  "$py" scripts/perf_table.py "$pdir" "$out/machine.txt" | tee "$out/perf.txt"
  stamp "perf done"
}

case "${1:-}" in
  prepare) prepare ;;
  run) build_gpu || exit 1; tests_gpu; rc=$?; bench_gpu; exit $rc ;;
  tests) build_gpu || exit 1; tests_gpu ;;  # build + test suite only
  bench) build_gpu || exit 1; bench_gpu ;;  # build + training figures only
  perf) build_gpu || exit 1; perf_gpu ;;    # build + clinic beside PyTorch (issue 33)
  perf-dry)  # the perf pipeline on this machine's build, tiny (no GPU): PERF_PY = a python with torch 2.x
    mkdir -p "$out"; py=${PERF_PY:-python3}; PERF_BIN=${PERF_BIN:-build/bin/clinic}
    PERF_DEVICE=${PERF_DEVICE:-cpu} PERF_TOKENS=${PERF_TOKENS:-256} PERF_STEPS=${PERF_STEPS:-4} \
      PERF_SETS=${PERF_SETS:-"model.d_model=32 model.ffn_dim=64 model.encoder_layers=2 model.decoder_layers=2"} \
      perf_gpu ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run|tests|bench|perf|perf-dry" >&2; exit 2 ;;
esac
