#!/usr/bin/env bash
# Prints the digest of the sources an image is built from: every file deploy/docker/Dockerfile
# copies into its build stage (tracked, or untracked and not ignored), by content. images.sh
# labels each image with it (paft.source-digest); containers_e2e.sh runs only on images whose
# label matches the tree under test, so that the drill never passes or fails on stale binaries.
#
#   deploy/source_digest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(deploy/docker/Dockerfile requirements/torch.txt CMakeLists.txt cmake proto common
  coordinator merger tokenizer trainer worker cli examples fuzz)
git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" | sort -z |
  xargs -0 sha256sum | sha256sum | cut -c1-16
