# Sourced by deploy/images.sh and deploy/containers_e2e.sh: the podman configuration of this
# repository (deploy/podman/containers.conf) unless the caller chose one.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/podman/containers.conf}
