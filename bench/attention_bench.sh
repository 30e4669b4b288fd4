#!/usr/bin/env bash
# Fused attention (sdpa, the default) against the explicit eager path: peak memory and tokens/s
# of LoRA training steps (forward + backward + update, through the real trainer) at sequence
# lengths 1024, 2048 and 4096, fp32 and bf16, each configuration in its own process (peak RSS is
# per process), the two kernels alternating.
#
#   bench/attention_bench.sh [BUILD_DIR]      (default build; SEQS="1024 2048 4096")
#
# Shape: attention-dominated at long sequences: hidden 512, 8 heads over 2 KV heads (GQA),
# 4 layers, MLP 1408, vocab 2048, batch 1.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
SEQS=${SEQS:-1024 2048 4096}
BENCH="$BUILD_DIR/bench/paft-train-bench"
PY=.venv/bin/python
[ -x "$BENCH" ] || { echo "build first: ./setup.sh build" >&2; exit 2; }
WORK=$(mktemp -d /tmp/paft-attention-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BUILD_DIR/examples/paft-make-toy-model" --out="$WORK/model" --dtype=bfloat16 --vocab_size=2048 \
  --hidden_size=512 --intermediate_size=1408 --layers=4 --heads=8 --kv_heads=2 >/dev/null
precisions="fp32"
grep -qw avx512_bf16 /proc/cpuinfo && precisions="fp32 bf16"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
for seq in $SEQS; do
  for precision in $precisions; do
    for attn in sdpa eager; do
      echo "seq $seq $precision $attn" >&2
      "$BENCH" --model="$WORK/model" --mode=lora --precision=$precision --seq=$seq --batch=1 \
        --steps=3 --attn_implementation=$attn >>"$WORK/results.jsonl" 2>"$WORK/stderr" ||
        echo "failed: seq $seq $precision $attn: $(tail -1 "$WORK/stderr")" >&2
    done
  done
done
$PY - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(seq, p, attn):
    return next((r for r in rows if r["seq"] == seq and r["precision"] == p and r["attn"] == attn), None)
print("| seq | precision | sdpa tokens/s | eager tokens/s | speed-up | sdpa peak RSS MiB | eager peak RSS MiB | memory saved |")
print("|---|---|---|---|---|---|---|---|")
for seq in sorted({r["seq"] for r in rows}):
    for p in ("fp32", "bf16"):
        s, e = get(seq, p, "sdpa"), get(seq, p, "eager")
        if not s or not e:
            continue
        print(f"| {seq} | {p} | {s['tokens_per_s']:.0f} | {e['tokens_per_s']:.0f} | "
              f"{s['tokens_per_s'] / e['tokens_per_s']:.2f}x | {s['peak_rss_mib']:.0f} | "
              f"{e['peak_rss_mib']:.0f} | {e['peak_rss_mib'] - s['peak_rss_mib']:.0f} MiB |")
PY
