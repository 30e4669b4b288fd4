#!/usr/bin/env bash
# The loss's memory and step time at real vocabularies: the trainer's chunked log-probs beside
# the full-logits path (what transformers computes), in one run on the same machine, one process
# per configuration and path, the two paths alternating (bench/loss_bench.cc says what is
# measured). Prints a markdown table (docs/trainer.md#the-loss-at-real-vocabularies).
#
#   bench/loss_bench.sh [BUILD_DIR]      (default build; QUICK=1: only V = 128,256)
#
# Rows: a LoRA run (frozen head) in fp32 at V = 32,000 (Llama-2, Mistral), 128,256 (Llama-3) and
# 152,064 (Qwen2), T = 1,024 and 4,096, batch 1, every position a target; then at V = 128,256 the
# same in bf16 autocast and with a trainable head (full fine-tuning) in fp32. The model is tiny
# (2 layers, hidden 64), so the head and the loss are most of the step.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
BENCH="$BUILD_DIR/bench/paft-loss-bench"
[ -x "$BENCH" ] || { echo "build first: ./setup.sh build" >&2; exit 2; }
RESULTS=$(mktemp /tmp/paft-loss-bench.XXXXXX)
trap 'rm -f "$RESULTS"' EXIT

VOCABS="32000 128256 152064"
[ "${QUICK:-0}" = 1 ] && VOCABS=128256
configs=()
for v in $VOCABS; do
  for t in 1024 4096; do configs+=("lora fp32 $v $t"); done
done
for t in 1024 4096; do
  configs+=("lora bf16 128256 $t" "full fp32 128256 $t")
done
for c in "${configs[@]}"; do
  read -r mode precision vocab seq <<<"$c"
  for path in chunked full; do
    "$BENCH" --path="$path" --mode="$mode" --precision="$precision" --vocab="$vocab" \
      --seq="$seq" >>"$RESULTS"
  done
done

python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
key = lambda r: (r["mode"], r["precision"], r["vocab"], r["seq"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["path"]] = r
print(f"CPU: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, "
      f"{rows[0]['threads']} threads; batch 1, every position a target, median of 3 steps after a warm-up.\n")
print("| head | precision | V | T | chunk rows | full: loss memory | chunked | chunked / full "
      "| full: step | chunked | speed-up |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for k, p in sorted(by.items(), key=lambda kv: (kv[0][0] != "lora", kv[0][1], kv[0][2], kv[0][3])):
    f, c = p["full"], p["chunked"]
    assert abs(f["loss"] - c["loss"]) <= 1e-4 * abs(f["loss"]), (k, f["loss"], c["loss"])
    head = "frozen (LoRA)" if k[0] == "lora" else "trainable"
    print(f"| {head} | {k[1]} | {k[2]:,} | {k[3]:,} | {c['chunk_rows']} "
          f"| {f['loss_extra_mib']:,.0f} MiB | {c['loss_extra_mib']:,.0f} MiB "
          f"| {100 * c['loss_extra_mib'] / f['loss_extra_mib']:.1f}% "
          f"| {f['step_s']:.2f} s | {c['step_s']:.2f} s | {f['step_s'] / c['step_s']:.2f}× |")
EOF
