#!/usr/bin/env bash
# Builds the coordinator, merger and worker images from deploy/docker/Dockerfile with podman,
# checks each one, and reports their sizes (./setup.sh images). On a Debian 12 machine with no
# image registry: podman, runc and mmdebstrap come from Debian's packages, and the base image
# debian:12 (also tagged debian:12-slim) is made here from Debian's mirror with mmdebstrap.
#
#   deploy/images.sh [TARGET...]      (targets: coordinator merger worker; default all three)
#
# Environment: PAFT_IMAGE_TAG (default dev): images are localhost/paft-TARGET:TAG.
# The build stage installs the pinned PyPI torch wheel (LibTorch, a CUDA 13 build) and compiles the
# project (Release) inside the image build, with this machine's CUDA toolkit (/usr/local/cuda, which
# the wheel's CMake configuration needs) mounted read-only; the three targets share it through
# podman's layer cache. Checked per image: it answers --help, runs as uid 10001, finds every
# library its binaries link, and holds no compiler or build tool.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/podman_env.sh
# Rootful podman, one image store: as root, or again through sudo keeping the configuration.
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=CONTAINERS_CONF,PAFT_IMAGE_TAG "$0" "$@"
fi
TAG=${PAFT_IMAGE_TAG:-dev}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(coordinator merger worker)
BASE=docker.io/library/debian:12
log() { echo "images: $*"; }

missing=()
# catatonit: the init process that `podman run --init` (containers_e2e.sh) starts in each
# container; Debian's podman only recommends it.
for p in podman runc mmdebstrap catatonit; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The base image, made from Debian's mirror: minbase with merged /usr (else usrmerge pulls in
# perl), without documentation, man pages and locales (as debian:12-slim), and with the official
# images' apt clean-up, so that no `RUN apt-get` layer keeps .deb files or apt's 80 MB caches.
if ! podman image exists "$BASE"; then
  work=.paft/images
  mkdir -p "$work"
  cat >"$work/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
  log "making $BASE with mmdebstrap (1-2 min)"
  mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="upload $work/docker-clean /etc/apt/apt.conf.d/docker-clean" \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs-bookworm.tar"
  podman import --change 'CMD ["bash"]' "$work/rootfs-bookworm.tar" "$BASE"
  rm -f "$work/rootfs-bookworm.tar"
fi
podman image exists "$BASE-slim" || podman tag "$BASE" "$BASE-slim"

CUDA_HOME=$(readlink -f /usr/local/cuda 2>/dev/null || true)
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  log "no CUDA toolkit at /usr/local/cuda: the torch wheel's CMake configuration needs one (nvcc)"
  exit 1
fi
# pip in the build trusts the CAs this machine trusts (the Dockerfile's PIP_CERT).
CA_MOUNT=()
[ -s /etc/ssl/certs/ca-certificates.crt ] &&
  CA_MOUNT=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca-certificates.crt:ro)
# Which sources the images hold: containers_e2e.sh runs only on images of the tree under test.
DIGEST=$(deploy/source_digest.sh)
for target in "${TARGETS[@]}"; do
  image=localhost/paft-$target:$TAG
  log "building $image"
  start=$(date +%s)
  podman build --network=host --pull=never -v "$CUDA_HOME:/usr/local/cuda:ro" "${CA_MOUNT[@]}" \
    --build-arg "PAFT_SOURCE_DIGEST=$DIGEST" -f deploy/docker/Dockerfile --target "$target" \
    -t "$image" .
  log "$image built in $(($(date +%s) - start)) s"
  # Checks: --help answers (absl exits 1 after printing it), a non-root user, no toolchain.
  help=$(podman run --rm --network=host "$image" --help 2>&1 || true)
  grep -q "paft-" <<<"$help" || { log "$image: --help printed no usage: $help"; exit 1; }
  uid=$(podman run --rm --entrypoint /usr/bin/id "$image" -u)
  [ "$uid" = 10001 ] || { log "$image runs as uid $uid, not 10001"; exit 1; }
  tools=$(podman run --rm --entrypoint /bin/sh "$image" -c \
    'for t in cc c++ gcc g++ clang cmake make ld as; do command -v $t; done; true')
  [ -z "$tools" ] || { log "$image holds build tools: $tools"; exit 1; }
  missing_libs=$(podman run --rm --entrypoint /bin/sh "$image" -c \
    'for b in /usr/local/bin/*; do ldd "$b" | grep "not found" | sed "s|^|$b: |"; done; true')
  [ -z "$missing_libs" ] || { log "$image lacks libraries: $missing_libs"; exit 1; }
  log "$image: --help answers, runs as uid 10001, every library found, no compiler or build tool"
done
log "sizes:"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'paft-|debian' | sort
