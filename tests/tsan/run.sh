#!/usr/bin/env bash
# ThreadSanitizer build of the coordinator's unit tests (in build-tsan/), then runs them: every
# test of coordinator_test — the job manager, registry, store, merge driver, watch hub, and the
# JobService streams over in-process gRPC — with TSan halting on the first report.
#
#   tests/tsan/run.sh [GTEST_FILTER]      (./setup.sh tsan; ~5 min on 2 cores, mostly the build)
#
# The coordinator's annotated mutex is a std::mutex in this build (common/mutex.h, PAFT_TSAN):
# Debian's libabsl is not instrumented, so TSan could not see absl::Mutex. Debian's gRPC,
# protobuf and SQLite are not instrumented either: TSan sees their pthread locks, not their
# memory accesses. gRPC and absl synchronize with futexes TSan cannot see, so their own internal
# accesses are suppressed (tests/tsan/suppressions.txt: those libraries only, none of paft's
# code). Checked: with the lock of JobManager::ProgressEvents removed, the stream tests fail with
# a data race report naming it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=build-tsan
FLAGS="-fsanitize=thread -fno-omit-frame-pointer -g -O1 -DPAFT_TSAN"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
  -DPAFT_BUILD_BENCH=OFF >"$BUILD.cmake.log" 2>&1 || { cat "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target coordinator_test
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan/suppressions.txt ${TSAN_OPTIONS:-}" \
  "$BUILD/tests/coordinator_test" --gtest_filter="${1:-*}"
