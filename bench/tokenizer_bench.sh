#!/usr/bin/env bash
# Tokenizer throughput: paft's tokenizer.json pipeline (paft-tokenizer-bench, one core) beside the
# JavaScript peer @lenml/tokenizers (node, one core), alternating, on the same corpus, per
# tokenizer kind: byte-level BPE (llama3, qwen3) and SentencePiece-style BPE (gemma3, llama2).
# The corpus (~4 MB) is the repository's Markdown and source text plus the golden hard cases,
# repeated with shuffled lines, each line made unique by its number (a tokenizer without a
# pre-tokenizer encodes a whole line as one piece: repeated lines would only measure a cache).
# Cold passes, no warm-up. Also times `paft-prepare --encode` end to end on it.
#   bench/tokenizer_bench.sh [BUILD_DIR]    (REPEATS=3; tokenizers from fetch_tokenizers.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
REPEATS=${REPEATS:-3}
CACHE=${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers}
tests/tokenizer/golden/fetch_tokenizers.sh "$CACHE" >/dev/null
WORK=$(mktemp -d /tmp/paft-tokenizer-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# One text per line: the repository's documents and code, and the hard cases.
{
  cat README.md docs/*.md common/*.cc trainer/*.cc tokenizer/hf/*.cc
  /usr/bin/python3 -c 'import json,sys; [print(t.replace("\n"," ")) for t in json.load(open(sys.argv[1]))]' \
    tests/tokenizer/golden/corpus.json
} | grep -v '^$' >"$WORK/base.txt"
: >"$WORK/corpus.txt"
while [ "$(stat -c %s "$WORK/corpus.txt")" -lt 4000000 ]; do shuf "$WORK/base.txt" >>"$WORK/corpus.txt"; done
awk '{ print NR ": " $0 }' "$WORK/corpus.txt" >"$WORK/numbered.txt" && mv "$WORK/numbered.txt" "$WORK/corpus.txt"
echo "corpus: $(wc -l <"$WORK/corpus.txt") lines, $(stat -c %s "$WORK/corpus.txt") bytes"
for name in llama3 qwen3 gemma3 llama2; do
  [ -f "$CACHE/$name/tokenizer.json" ] || { echo "$name: not fetched, skipped"; continue; }
  for r in $(seq "$REPEATS"); do
    taskset -c 0 "$BUILD_DIR/bench/paft-tokenizer-bench" --tokenizer="$CACHE/$name" \
      --corpus="$WORK/corpus.txt" --repeats=1
    taskset -c 0 node bench/tokenizer_peer.mjs "$CACHE/lib/main.mjs" "$CACHE/$name" "$WORK/corpus.txt" 1
  done
done | tee "$WORK/results.jsonl"
/usr/bin/python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'tokenizer':10} {'paft Mtok/s':>12} {'js-peer Mtok/s':>15} {'ratio':>6}")
for name in dict.fromkeys(r["tokenizer"].rstrip("/").split("/")[-1] for r in rows):
    med = {impl: statistics.median(r["tokens_per_s"] for r in rows
                                   if r["impl"] == impl and r["tokenizer"].endswith(name)) / 1e6
           for impl in ("paft", "js-peer")}
    print(f"{name:10} {med['paft']:12.2f} {med['js-peer']:15.2f} {med['paft'] / med['js-peer']:6.1f}")
PY
# The CLI end to end (JSON lines in and out, tokenizer load included), byte-level BPE.
/usr/bin/python3 -c 'import json,sys; [print(json.dumps({"text": l.rstrip("\n")})) for l in open(sys.argv[1])]' \
  "$WORK/corpus.txt" >"$WORK/corpus.jsonl"
start=$(date +%s.%N)
taskset -c 0 "$BUILD_DIR/tokenizer/paft-prepare" --tokenizer="$CACHE/llama3" --encode <"$WORK/corpus.jsonl" >"$WORK/ids.jsonl"
end=$(date +%s.%N)
tokens=$(/usr/bin/python3 -c 'import json,sys; print(sum(len(json.loads(l)["ids"]) for l in open(sys.argv[1])))' "$WORK/ids.jsonl")
/usr/bin/python3 -c "print(f'paft-prepare --encode (llama3, load included): {$tokens/($end-$start)/1e6:.2f} Mtok/s, {$end-$start:.2f} s')"
