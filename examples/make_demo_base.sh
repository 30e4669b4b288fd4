#!/usr/bin/env bash
# Makes the demo's base model: a tiny Llama-architecture model (4 layers, hidden 128, vocabulary
# 256) pre-trained from random weights on examples/data/pretrain.jsonl (sequences and greeting
# exchanges; no evaluation text), with a BPE sentencepiece tokenizer trained on the pre-training
# text and the *training* splits only. This is how examples/demo-base/ (committed, with its
# SHA256SUMS) was made; another CPU makes other weights from the same inputs (its BLAS kernels
# round differently over 1500 steps), which is why the demo starts from the committed one.
#
#   examples/make_demo_base.sh OUT [BUILD_DIR]
#
# Environment: PAFT_DEMO_PRETRAIN_STEPS (default 1500). OUT gets config.json, model.safetensors
# and tokenizer.model, written to OUT.tmp first and renamed.
set -euo pipefail
OUT=${1:?usage: examples/make_demo_base.sh OUT [BUILD_DIR]}
BUILD_DIR=$(cd "${2:-build}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${PAFT_DEMO_PRETRAIN_STEPS:-1500}
work=$OUT.work
rm -rf "$work" "$OUT.tmp" && mkdir -p "$work/data"
"$BUILD_DIR/examples/paft-make-toy-model" --out="$work/init" --vocab_size=256 \
  --hidden_size=128 --intermediate_size=384 --layers=4 --heads=4 --kv_heads=2 --dtype=float32
inputs=("$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/sft_train.jsonl"
        "$SRC/examples/data/pref_train.jsonl")
sed -E 's/"(text|prompt|completion|chosen|rejected)"://g; s/^\{|\}$//g' "${inputs[@]}" |
  sed -E 's/","/\n/g; s/"//g' >"$work/corpus.txt"
spm_train --input="$work/corpus.txt" --model_prefix="$work/init/tokenizer" --vocab_size=256 \
  --model_type=bpe --character_coverage=1.0 --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 \
  >"$work/spm_train.log" 2>&1
cp "$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/pref_train.jsonl" "$work/data/"
sed -E "s/^  max_steps: .*/  max_steps: $STEPS/" "$SRC/examples/pretrain.yaml" >"$work/pretrain.yaml"
"$BUILD_DIR/worker/paft-worker" train "$work/pretrain.yaml" --branch=sft --threads=2 \
    2>"$work/pretrain.log" |
  sed -nE 's/^PAFT_EVENT \{.*"loss":([0-9.]+).*"step":([0-9]+).*"tokens_per_second":([0-9.]+).*/\2 \1 \3/p' |
  awk -v total="$STEPS" '$1 % 50 == 0 || $1 == total {
    printf "  pre-training step %d/%d  loss %.3f  %.0f tok/s\n", $1, total, $2, $3; fflush() }'
final=$work/pretrain/sft/checkpoints/checkpoint-$STEPS
[ -f "$final/model.safetensors" ] || { echo "demo: pre-training failed; see $work/pretrain.log" >&2; exit 1; }
mkdir -p "$OUT.tmp"
cp "$final/config.json" "$final/model.safetensors" "$work/init/tokenizer.model" "$OUT.tmp/"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
rm -rf "$work"
