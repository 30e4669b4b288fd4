#!/usr/bin/env bash
# The GPU check (./setup.sh gpu-check): what a CUDA machine does with paft's trainer, in one run of
# under 5 minutes on one H100-class GPU. Exits 77 with a message where no GPU is visible.
#
#   bench/gpu_check.sh [BUILD_DIR]      (default build)
#
# 1. LibTorch, CUDA and NCCL versions, and the GPUs seen (paft-worker devices).
# 2. bf16 matmul TFLOP/s (8192^3).
# 3. A tiny model's log-probs on the GPU against the CPU's: fp32 (<= 1e-4) and bf16 autocast,
#    SDPA and eager attention.
# 4. The loss at Llama-3's vocabulary (paft-loss-bench): the chunked log-probs beside the full
#    logits, LoRA in bf16, V 128,256, 2 x 4,096 tokens, hidden 2048: the loss's extra GPU memory
#    and the step time of each.
# 5. NCCL all-reduce bus bandwidth over every local GPU (with 2 or more).
# 6. Training steps of a Llama-3.2-1B-shaped model (random weights, vocab 128,256, tied
#    embeddings) in bf16, LoRA (all linear layers, r 16) and full fine-tuning, through the real
#    trainer (paft-train-bench): tokens/s and MFU against the GPU's dense bf16 peak.
# 7. With 2 or more GPUs: the data-parallel test (2 ranks over NCCL equal to 1 rank).
# One table at the end; the exit code is non-zero when a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
PY=.venv/bin/python
for b in worker/paft-worker bench/paft-gpu-check bench/paft-train-bench bench/paft-loss-bench \
    examples/paft-make-toy-model tests/ddp_test; do
  [ -x "$BUILD_DIR/$b" ] || { echo "gpu-check: $BUILD_DIR/$b missing: build first (./setup.sh build)" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/paft-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"
failed=0

"$BUILD_DIR/worker/paft-worker" devices >"$WORK/devices.json" || { echo "gpu-check: paft-worker devices failed" >&2; exit 1; }
gpus=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["devices"]))' "$WORK/devices.json")
if [ "$gpus" -eq 0 ]; then
  echo "gpu-check: no CUDA device visible (paft-worker devices: $(tr -d '\n ' <"$WORK/devices.json")); skipped" >&2
  exit 77
fi
cat "$WORK/devices.json"

check() {  # name, timeout seconds, command...: its JSON lines go to RESULTS
  local name=$1 limit=$2
  shift 2
  echo "gpu-check: $name" >&2
  if ! timeout "$limit" "$@" >>"$RESULTS" 2>"$WORK/$name.err"; then
    echo "gpu-check: $name FAILED: $(tail -3 "$WORK/$name.err")" >&2
    echo "{\"check\": \"$name\", \"failed\": true}" >>"$RESULTS"
    failed=1
  fi
}
check matmul 60 "$BUILD_DIR/bench/paft-gpu-check" matmul
check logprobs 120 "$BUILD_DIR/bench/paft-gpu-check" logprobs
for path in chunked full; do
  check "loss-$path" 120 "$BUILD_DIR/bench/paft-loss-bench" --device=cuda --path="$path" --mode=lora \
    --precision=bf16 --vocab=128256 --seq=4096 --batch=2 --hidden=2048 --layers=2
done
check allreduce 120 "$BUILD_DIR/bench/paft-gpu-check" allreduce "$gpus"

# Llama-3.2-1B's shape: hidden 2048, MLP 8192, 16 layers, 32 heads over 8 KV heads, vocab 128,256.
"$BUILD_DIR/examples/paft-make-toy-model" --out="$WORK/llama-1b" --vocab_size=128256 --hidden_size=2048 \
  --intermediate_size=8192 --layers=16 --heads=32 --kv_heads=8 --tie_embeddings=true --dtype=bfloat16 >/dev/null
train() {  # mode, batch
  local line
  echo "gpu-check: train $1" >&2
  if line=$(timeout 240 "$BUILD_DIR/bench/paft-train-bench" --model="$WORK/llama-1b" --mode="$1" \
      --precision=bf16 --seq=2048 --batch="$2" --steps=4 2>"$WORK/train-$1.err"); then
    echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); d["check"]="train"; print(json.dumps(d))' >>"$RESULTS"
  else
    echo "gpu-check: train $1 FAILED: $(tail -3 "$WORK/train-$1.err")" >&2
    echo "{\"check\": \"train\", \"mode\": \"$1\", \"failed\": true}" >>"$RESULTS"
    failed=1
  fi
}
train lora 4
train full 2

if [ "$gpus" -ge 2 ]; then
  echo "gpu-check: ddp_test" >&2
  if timeout 300 "$BUILD_DIR/tests/ddp_test" --gtest_brief=1 >"$WORK/ddp.out" 2>&1; then
    echo '{"check": "ddp", "passed": true}' >>"$RESULTS"
  else
    echo "gpu-check: ddp_test FAILED: $(tail -5 "$WORK/ddp.out")" >&2
    echo '{"check": "ddp", "failed": true}' >>"$RESULTS"
    failed=1
  fi
fi

$PY - "$WORK/devices.json" "$RESULTS" "$WORK/llama-1b/config.json" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from flops import flops_per_token
devices = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
gpu = devices["devices"][0]
# Dense bf16 peaks (TFLOP/s) of the data-centre GPUs, from the vendors' data sheets.
# The more specific names first: "H200 NVL" before "H200".
PEAKS = {"H100 NVL": 835.5, "H100 PCIe": 756.0, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4,
         "H200 NVL": 835.5, "GH200": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1,
         "B200": 2250.0}
peak = next((v for k, v in PEAKS.items() if k in gpu["model"]), None)
matmul = next((r for r in rows if r.get("check") == "matmul" and "tflops" in r), None)
peak_source = "data sheet"
if peak is None and matmul:
    peak, peak_source = matmul["tflops"], "measured matmul"
T = 2048
print()
print(f"| {gpu['model']} ({len(devices['devices'])} GPU), torch {devices['torch']}, CUDA {devices['cuda']}, NCCL {devices['nccl']} | result |")
print("|---|---|")
for r in rows:
    c = r.get("check")
    if r.get("failed"):
        print(f"| {c} {r.get('mode', '')} | **FAILED** |")
    elif c == "matmul":
        print(f"| bf16 matmul {r['n']}^3 | {r['tflops']:.0f} TFLOP/s |")
    elif c == "logprobs":
        print(f"| log-probs GPU vs CPU, {r['attention']} {r['precision']} | max abs diff {r['gpu_max_abs_diff']:.2e} (CPU's own {r['cpu_max_abs_diff']:.2e}; tolerance {r['tolerance']}) {'ok' if r['passed'] else '**FAILED**'} |")
    elif r.get("path") in ("chunked", "full"):
        print(f"| loss, {r['path']} log-probs: LoRA bf16, V {r['vocab']:,}, {r['batch']} x {r['seq']:,} tokens, hidden {r['hidden']} | loss {r['loss']:.4f}, extra GPU memory {r['loss_extra_mib']:,.0f} MiB, step {r['step_s']*1e3:.0f} ms (chunk rows {r['chunk_rows']}) |")
    elif c == "allreduce":
        if "skipped" in r:
            print(f"| NCCL all-reduce | skipped: {r['skipped']} |")
        else:
            print(f"| NCCL all-reduce {r['gpus']} GPUs, {r['mib']} MiB bf16 | {r['ms']:.2f} ms, bus {r['busbw_gbps']:.0f} GB/s |")
    elif c == "train":
        flops = flops_per_token(sys.argv[3], r["mode"], T)
        mfu = f"MFU {r['tokens_per_s'] * flops / (peak * 1e12):.1%} of {peak:.0f} TFLOP/s ({peak_source})" if peak else "MFU unknown (no peak)"
        print(f"| Llama-3.2-1B shape, {r['mode']}, bf16, seq {T}, {r['attn']} | {r['tokens_per_s']:.0f} tokens/s, {r['step_s']*1e3:.0f} ms/step, {mfu}, peak GPU memory {r.get('peak_gpu_mib', float('nan')):.0f} MiB |")
    elif c == "ddp":
        print("| 2-rank NCCL run equal to 1 rank (ddp_test) | ok |")
EOF
exit $failed
