#!/usr/bin/env bash
# Checks that each `./setup.sh` command the README and docs name installs everything it uses:
# every command runs in its own fresh container of the bare Debian 12 base (the images'
# mmdebstrap minbase, made by deploy/images.sh), on a clean clone of this checkout's HEAD, as
# a new user on a new machine would run it. Nothing is installed in the container beforehand
# but what the project's machines are promised to have: the CUDA toolkit (this host's
# /usr/local/cuda, mounted read-only), python3, ca-certificates and git (the clone's own). The
# real tokenizer files come from ../shared beside the checkout, as on those machines.
#
#   deploy/fresh_machine_check.sh [COMMAND...]   (default: demo test tsan fuzz bench gpu-check)
#
# Each command gets its own clean clone. Prints, per command, PASSED/FAILED (exit status) and its
# time; the logs are kept under
# .paft/fresh/<date>/<command>.log. gpu-check passes with exit 77 (no GPU: "skipped") as
# setup.sh documents. The Python venv (PyPI, 3.5 GB) is made by the first command into a cache
# that starts empty for this run and is shared by the later commands (ensure_venv is one code
# path for all of them); the Debian packages are installed afresh in every container.
# `images` is not run here (podman inside a container); deploy/images.sh installs what it
# needs itself (podman, runc, mmdebstrap, catatonit) and was checked on a fresh machine.
#
# Environment: FUZZ_SECONDS (default 10 here), PAFT_FRESH_KEEP=1 keeps the containers.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/podman_env.sh
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=CONTAINERS_CONF,FUZZ_SECONDS,PAFT_FRESH_KEEP "$0" "$@"
fi
COMMANDS=("$@")
[ ${#COMMANDS[@]} -gt 0 ] || COMMANDS=(demo test tsan fuzz bench gpu-check)
BASE=docker.io/library/debian:12
if ! podman image exists "$BASE"; then
  echo "fresh: no $BASE image; ./setup.sh images makes it (mmdebstrap from Debian's mirror)" >&2
  exit 1
fi
SHARED=$(cd .. && pwd)/shared
[ -d "$SHARED" ] || { echo "fresh: no ../shared beside the checkout" >&2; exit 1; }
CUDA_HOME=$(readlink -f /usr/local/cuda 2>/dev/null || true)

RUN_DIR=.paft/fresh/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR/venv-cache"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
COMMIT=$(git rev-parse --short HEAD)
echo "fresh: HEAD $COMMIT, logs in $RUN_DIR"

MOUNTS=(-v "$SHARED:/work/shared:ro" -v "$RUN_DIR/venv-cache:/root/.cache/paft")
[ -n "$CUDA_HOME" ] && MOUNTS+=(-v "$CUDA_HOME:/usr/local/cuda:ro")
CA=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then  # a proxy's CA, as this host trusts it
  MOUNTS+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
  CA=(-e PIP_CERT=/run/host-ca.crt -e REQUESTS_CA_BUNDLE=/run/host-ca.crt)
fi

declare -A RESULT
for cmd in "${COMMANDS[@]}"; do
  log="$RUN_DIR/$cmd.log"
  name=paft-fresh-$$-$cmd
  echo "fresh: $cmd ..."
  # A clean clone per command: no build folder or venv link carries over from another.
  git clone -q --no-hardlinks . "$RUN_DIR/src-$cmd/main"
  start=$(date +%s)
  status=0
  # The promised base: python3, ca-certificates, git. Then the command, as the README says.
  podman run --name "$name" --network=host --pull=never --shm-size=2g "${MOUNTS[@]}" "${CA[@]}" \
    -v "$RUN_DIR/src-$cmd/main:/work/main" \
    -e FUZZ_SECONDS="${FUZZ_SECONDS:-10}" -w /work/main "$BASE" bash -c '
      set -e
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 ca-certificates git >/dev/null
      [ -s /run/host-ca.crt ] && cp /run/host-ca.crt /usr/local/share/ca-certificates/host.crt &&
        update-ca-certificates >/dev/null 2>&1
      echo "fresh: base ready, running ./setup.sh '"$cmd"'"
      ./setup.sh '"$cmd"'
    ' >"$log" 2>&1 || status=$?
  seconds=$(($(date +%s) - start))
  [ "${PAFT_FRESH_KEEP:-0}" = 1 ] || podman rm -f "$name" >/dev/null 2>&1 || true
  if [ $status -eq 0 ] || { [ "$cmd" = gpu-check ] && [ $status -eq 77 ]; }; then
    RESULT[$cmd]="PASSED (exit $status) in $((seconds / 60)) min $((seconds % 60)) s"
  else
    RESULT[$cmd]="FAILED (exit $status) after $((seconds / 60)) min $((seconds % 60)) s; tail of $log:"
    RESULT[$cmd]+=$'\n'"$(tail -15 "$log")"
  fi
  echo "fresh: $cmd: ${RESULT[$cmd]}"
done

echo
echo "fresh-machine check of $COMMIT on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'):"
failed=0
for cmd in "${COMMANDS[@]}"; do
  echo "  ./setup.sh $cmd: ${RESULT[$cmd]%%$'\n'*}"
  [[ ${RESULT[$cmd]} == PASSED* ]] || failed=1
done
exit $failed
