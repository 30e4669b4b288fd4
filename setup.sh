#!/usr/bin/env bash
# One command to set up, build and run paft on a Debian 12 machine.
#
#   ./setup.sh demo    install what is missing, build, run a PAFT job on a local cluster
#   ./setup.sh test    install what is missing, build, run every test (what CI runs)
#   ./setup.sh build   install what is missing and build
#   ./setup.sh deps    only install the Debian packages and the Python venv (PyTorch and the
#                      Hugging Face tools the tests compare against, from PyPI)
#   ./setup.sh fuzz    also install clang and libFuzzer, run every fuzz target (FUZZ_SECONDS each)
#   ./setup.sh bench   run the training bench beside its PyTorch-Python peer (the same torch)
#   ./setup.sh tsan    build the coordinator's unit tests under ThreadSanitizer and run them
#   ./setup.sh images  also install podman, build the coordinator, merger and worker images
#   ./setup.sh gpu-check  build, run the GPU check (bench/gpu_check.sh; exits 77 without a GPU)
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), CMAKE_ARGS,
# FUZZ_SECONDS (default 60), PAFT_IMAGE_TAG (default dev), PAFT_VENV_ROOT (where the venvs are
# kept, default ~/.cache/paft).
set -euo pipefail

cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# Debian 12 packages. LibTorch itself comes from PyPI (below); libgloo-dev brings the headers that
# c10d's ProcessGroupGloo.hpp includes (the wheel ships none; docs/toolchain.md). The merger's
# LAPACK runs on OpenBLAS (libopenblas0-pthread) rather than the slow reference BLAS.
PACKAGES=(
  g++ cmake make pkg-config curl python3-venv
  libgloo-dev libopenblas0-pthread
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

# The Python venv with the pinned PyPI packages: requirements/torch.txt (the torch wheel whose
# LibTorch the build links) and requirements/test.txt (the Hugging Face tools the ecosystem tests
# compare against). One venv per content of the requirements files and Python version, kept
# under PAFT_VENV_ROOT, so a second checkout or CI run reuses it without downloading again;
# ./.venv links to it (CMake finds torch through it). One installer at a time per venv (a lock
# beside it); a venv counts once its marker is written, so an interrupted install is made again.
REQUIREMENTS="requirements/torch.txt requirements/test.txt"
ensure_venv() {
  local root=${PAFT_VENV_ROOT:-${HOME:-/root}/.cache/paft}
  local key
  # shellcheck disable=SC2086
  key=$( (python3 --version; cat $REQUIREMENTS) | sha256sum | cut -c1-16)
  local venv="$root/venv-$key"
  mkdir -p "$root"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$venv/.paft-complete" ]; then
    echo "setup: creating the Python venv $venv (PyPI: $REQUIREMENTS)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    local req
    for req in $REQUIREMENTS; do
      "$venv/bin/python" -m pip install --quiet --no-deps -r "$req"
    done
    "$venv/bin/python" -m pip check
    touch "$venv/.paft-complete"
  fi
  exec 9>&-
  if [ -e .venv ] && [ ! -L .venv ]; then
    echo "setup: ./.venv exists and is not the link setup.sh makes; move it away" >&2
    exit 1
  fi
  ln -sfn "$venv" .venv
  local version
  version=$(.venv/bin/python -c 'import torch; print(torch.__version__)')
  echo "setup: Python venv .venv -> $venv (torch $version)"
}

build() {
  ensure_venv
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
  deps) install_deps; ensure_venv ;;
  build) install_deps; build ;;
  test) install_deps; build; tests/tokenizer/golden/fetch_tokenizers.sh; run_tests ;;
  demo) install_deps; build; exec examples/run_local_demo.sh "$BUILD_DIR" ;;
  fuzz) install_deps clang libclang-rt-14-dev; ensure_venv; exec fuzz/run.sh "${FUZZ_SECONDS:-60}" ;;
  bench) install_deps; build; exec bench/train_bench.sh "$BUILD_DIR" ;;
  tsan) install_deps; ensure_venv; exec tests/tsan/run.sh ;;
  images) exec deploy/images.sh ;;
  gpu-check) install_deps; build; exec bench/gpu_check.sh "$BUILD_DIR" ;;
  *)
    sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"
    exit 2
    ;;
esac
