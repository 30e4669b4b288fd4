#!/usr/bin/env bash
# Training throughput and memory of paft beside a PyTorch-Python peer (bench/train_peer.py, on
# the same torch release, from the project's venv), in one run, on the same shapes and the same
# machine. Each configuration runs in its own process (peak RSS is per process), paft and the
# peer alternating, REPEATS times; the table shows the median of each.
#
#   bench/train_bench.sh [BUILD_DIR]        (default build; REPEATS=3, BIG=1 adds the 1.1B model)
#
# Shapes: "vocab" (hidden 256, 6 layers, vocab 8192: the vocabulary head dominates), "layers"
# (TinyLlama's proportions scaled down: hidden 512, intermediate 1408, 8 layers, 8 heads, 2 KV
# heads, vocab 2048). Both use SDPA attention. The peer runs twice: as a user runs it ("peer"),
# and with the allocator settings paft's trainer makes itself ("peer+malloc",
# MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_), to show what is paft's code and what is the
# allocator.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
REPEATS=${REPEATS:-3}
BENCH="$BUILD_DIR/bench/paft-train-bench"
PY=.venv/bin/python
PEER="$PY bench/train_peer.py"
[ -x "$BENCH" ] || { echo "build first: ./setup.sh build" >&2; exit 2; }
$PY -c 'import torch' 2>/dev/null || { echo "needs the project venv: ./setup.sh deps" >&2; exit 2; }

WORK=$(mktemp -d /tmp/paft-train-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"
make_model() {  # name, make-toy-model flags...
  local name=$1; shift
  "$BUILD_DIR/examples/paft-make-toy-model" --out="$WORK/$name" --dtype=bfloat16 "$@" >/dev/null
}
make_model vocab --vocab_size=8192 --hidden_size=256 --intermediate_size=688 --layers=6 --heads=4 --kv_heads=4
make_model layers --vocab_size=2048 --hidden_size=512 --intermediate_size=1408 --layers=8 --heads=8 --kv_heads=2

run() {  # shape, extra tag, command...
  local shape=$1 tag=$2; shift 2
  local line
  if line=$("$@" 2>"$WORK/stderr"); then
    echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); d["shape"]=sys.argv[1]; d["tag"]=sys.argv[2]; print(json.dumps(d))' "$shape" "$tag" >>"$RESULTS"
  else
    echo "failed: $* ($(tail -1 "$WORK/stderr"))" >&2
  fi
}

echo "machine: $(nproc) cores, $(grep -o -m1 'avx512_bf16' /proc/cpuinfo || echo 'no avx512_bf16'); $REPEATS repeats" >&2
# This machine's matmul peak through the same torch (2048^3, all cores), fp32 and bf16.
$PY - >"$WORK/peak.json" <<'PY'
import json, time, torch
out = {}
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    out[name] = 2 * 2048**3 * 10 / (time.perf_counter() - t) / 1e9
print(json.dumps(out))
PY
for ((r = 0; r < REPEATS; ++r)); do
  for shape in vocab layers; do
    seq=128; [ "$shape" = layers ] && seq=256
    for mode in full lora; do
      for precision in fp32 bf16; do
        args=(--model="$WORK/$shape" --mode=$mode --precision=$precision --seq=$seq --batch=4 --steps=6)
        run $shape "" "$BENCH" "${args[@]}"
        run $shape "" $PEER "${args[@]}"
        run $shape malloc env MALLOC_MMAP_THRESHOLD_=33554432 \
          MALLOC_TRIM_THRESHOLD_=1073741824 $PEER "${args[@]}"
      done
    done
  done
  # Padding-free batches on completions of random lengths (real tokens counted).
  for pf in false true; do
    run layers "ragged padding_free=$pf" "$BENCH" --model="$WORK/layers" --mode=lora \
      --precision=bf16 --seq=256 --batch=4 --steps=4 --ragged --padding_free=$pf
  done
  # Data parallelism: 2 ranks (one thread each) against 1 rank (one thread) at the same per-rank
  # batch; on this 2-core machine the ranks share the cores with nothing else.
  args=(--model="$WORK/layers" --mode=lora --precision=bf16 --seq=256 --batch=2 --steps=4 --threads=1)
  run layers ddp "$BENCH" "${args[@]}"
  port=$((29000 + RANDOM % 2000))
  "$BENCH" "${args[@]}" --world=2 --rank=1 --port=$port >/dev/null 2>&1 &
  run layers ddp "$BENCH" "${args[@]}" --world=2 --rank=0 --port=$port
  wait
done

if [ "${BIG:-0}" = 1 ]; then
  # TinyLlama-1.1B's shape, random weights in a bf16 checkpoint, LoRA at sequence 512, batch 1.
  make_model tiny --vocab_size=32000 --hidden_size=2048 --intermediate_size=5632 --layers=22 \
    --heads=32 --kv_heads=4 --tie_embeddings=false
  for ac in false true; do
    run tiny "checkpointing=$ac" "$BENCH" --model="$WORK/tiny" --mode=lora --precision=bf16 \
      --seq=512 --batch=1 --steps=2 --activation_checkpointing=$ac
  done
  echo "tiny checkpoint: $(stat -c %s "$WORK/tiny/model.safetensors") bytes" >&2
  stat -c %s "$WORK/tiny/model.safetensors" >"$WORK/tiny.size"
fi

$PY - "$RESULTS" "$WORK/tiny.size" "$WORK/peak.json" "$WORK" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peak = json.load(open(sys.argv[3]))
sys.path.insert(0, "bench")
from flops import flops_per_token
def med(impl, shape, mode, precision, tag="", world=1, key="tokens_per_s"):
    v = [r[key] for r in rows if r["impl"] == impl and r["shape"] == shape and r["mode"] == mode
         and r["precision"] == precision and r["tag"] == tag and r["world"] == world]
    return statistics.median(v) if v else float("nan")
print(f"matmul peak here (2048^3, torch): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
print()
print("| shape | mode | precision | paft tokens/s | peer | peer+malloc | paft/peer | paft/peer+malloc "
      "| paft GFLOP/s (of matmul peak) | paft peak RSS MiB | peer peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for shape in ("vocab", "layers"):
    for mode in ("full", "lora"):
        for p in ("fp32", "bf16"):
            a, b = med("paft", shape, mode, p), med("pytorch", shape, mode, p)
            c = med("pytorch", shape, mode, p, "malloc")
            seq = 128 if shape == "vocab" else 256
            g = a * flops_per_token(os.path.join(sys.argv[4], shape, "config.json"), mode, seq) / 1e9
            print(f"| {shape} | {mode} | {p} | {a:.0f} | {b:.0f} | {c:.0f} | {a / b:.2f} | {a / c:.2f} | "
                  f"{g:.0f} ({g / peak[p]:.0%}) | {med('paft', shape, mode, p, key='peak_rss_mib'):.0f} | "
                  f"{med('pytorch', shape, mode, p, key='peak_rss_mib'):.0f} |")
print()
for p in ("fp32", "bf16"):
    lora, full = med("paft", "layers", "lora", p), med("paft", "layers", "full", p)
    print(f"LoRA / full fine-tuning, layers shape, {p}: {lora / full:.2f}x")
padded = med("paft", "layers", "lora", "bf16", "ragged padding_free=false")
packed = med("paft", "layers", "lora", "bf16", "ragged padding_free=true")
print(f"ragged lengths, layers LoRA bf16: padded {padded:.0f} tokens/s, padding-free {packed:.0f} "
      f"tokens/s ({packed / padded:.2f}x)")
one = med("paft", "layers", "lora", "bf16", "ddp", 1, "step_s")
two = med("paft", "layers", "lora", "bf16", "ddp", 2, "step_s")
print(f"data parallel, layers LoRA bf16, batch 2 per rank, 1 thread per rank: "
      f"1 rank {one:.3f} s/step, 2 ranks {two:.3f} s/step ({two / one:.2f}x)")
if os.path.exists(sys.argv[2]):
    size = int(open(sys.argv[2]).read()) / 2**20
    for ac in ("false", "true"):
        rss = med("paft", "tiny", "lora", "bf16", f"checkpointing={ac}", key="peak_rss_mib")
        print(f"TinyLlama-1.1B shape, LoRA bf16, seq 512, batch 1, activation checkpointing {ac}: "
              f"peak RSS {rss:.0f} MiB = {rss / size:.2f}x the {size:.0f} MiB checkpoint")
PY
