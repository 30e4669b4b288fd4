#!/usr/bin/env bash
# Builds the fuzz targets with clang under AddressSanitizer + UndefinedBehaviorSanitizer (in
# build-fuzz/) and runs each for SECONDS (default 60), starting from the committed corpus.
# Crashing inputs are written to build-fuzz/crashes/<target>/; fix the bug, then copy the input
# into fuzz/corpus/<target>/ so that ctest replays it from then on.
#
#   fuzz/run.sh [SECONDS] [TARGET...]        (targets: safetensors jsonl job_spec mergekit_config)
#
# Needs clang and libclang-rt-14-dev (./setup.sh fuzz installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors jsonl job_spec mergekit_config)
BUILD=build-fuzz
FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_C_FLAGS="$FLAGS" \
  -DPAFT_FUZZ=ON -DPAFT_BUILD_TESTS=OFF -DPAFT_BUILD_BENCH=OFF >"$BUILD.cmake.log" 2>&1 ||
  { cat "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" $(printf -- '--target fuzz_%s ' "${TARGETS[@]}")
status=0
for target in "${TARGETS[@]}"; do
  work=$BUILD/corpus/$target
  crashes=$BUILD/crashes/$target
  mkdir -p "$work" "$crashes"
  echo "== fuzz_$target for ${SECONDS_PER_TARGET}s"
  # A copy of the seeds is the working corpus: new interesting inputs go there, not into git.
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$BUILD/fuzz/fuzz_$target" -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 \
      -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 \
      "$work" "fuzz/corpus/$target" 2>"$BUILD/fuzz_$target.log"; then
    echo "fuzz_$target FOUND A CRASH: $(ls "$crashes")"; tail -40 "$BUILD/fuzz_$target.log"
    status=1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|cov: " "$BUILD/fuzz_$target.log" | tail -3
done
exit $status
