#!/usr/bin/env bash
# One command to set up, build and run paft on a Debian 12 machine.
#
#   ./setup.sh demo    install what is missing, build, run a PAFT job on a local cluster
#   ./setup.sh test    install what is missing, build, run every test (what CI runs)
#   ./setup.sh build   install what is missing and build
#   ./setup.sh deps    only install the Debian packages
#   ./setup.sh fuzz    also install clang and libFuzzer, run every fuzz target (FUZZ_SECONDS each)
#   ./setup.sh bench   also install python3-torch, run the training bench beside its PyTorch peer
#   ./setup.sh tsan    build the coordinator's unit tests under ThreadSanitizer and run them
#   ./setup.sh images  also install podman, build the coordinator, merger and worker images
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), CMAKE_ARGS,
# FUZZ_SECONDS (default 60), PAFT_IMAGE_TAG (default dev).
set -euo pipefail

cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# Debian 12 packages. libopenblas0-pthread replaces the slow reference BLAS that libtorch would
# otherwise load (docs/toolchain.md).
PACKAGES=(
  g++ cmake make pkg-config curl
  libtorch-dev libgloo-dev libopenblas0-pthread
  liblapack-dev  # the merger links LAPACK (OpenBLAS's through the alternative) for SVD merges
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev prometheus-cpp-dev libsqlite3-dev libsentencepiece-dev sentencepiece
  libpcre2-dev libutf8proc-dev libicu-dev  # tokenizer.json: split regexes, normalization, properties
  nlohmann-json3-dev libyaml-cpp-dev libgtest-dev libgmock-dev
  prometheus  # promtool: the tests lint the alert rules and every server's /metrics
  openssl     # the TLS tests make their certificates
  clang-14    # a test checks the coordinator's lock annotations with clang's -Wthread-safety
)

install_deps() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#PACKAGES[@]} Debian packages present"
    return
  fi
  echo "setup: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

run_tests() {
  # Integration tests start real processes on loopback ports; keep them from running into each
  # other's CPU budget on a 2-core machine by running at most two test processes at once.
  (cd "$BUILD_DIR" && ctest --output-on-failure -j 2 --timeout 300)
}

cmd=${1:-}
case "$cmd" in
  deps) install_deps ;;
  build) install_deps; build ;;
  test) install_deps; build; tests/tokenizer/golden/fetch_tokenizers.sh; run_tests ;;
  demo) install_deps; build; exec examples/run_local_demo.sh "$BUILD_DIR" ;;
  fuzz) install_deps clang libclang-rt-14-dev; exec fuzz/run.sh "${FUZZ_SECONDS:-60}" ;;
  bench) install_deps python3-torch; build; exec bench/train_bench.sh "$BUILD_DIR" ;;
  tsan) install_deps; exec tests/tsan/run.sh ;;
  images) exec deploy/images.sh ;;
  *)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
