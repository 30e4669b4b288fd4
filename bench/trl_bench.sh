#!/usr/bin/env bash
# paft's trainer beside TRL's (the peer users would run instead), in one run on this machine:
# `paft-worker train` and bench/trl_peer.py (TRL's SFTTrainer / DPOTrainer, pinned in
# requirements/test.txt) on the same model folder, the same JSONL data and the same settings,
# alternating, REPEATS times; the table shows the median of each. Each run is its own process:
# peak RSS is that process's (paft: the trainer process; TRL: the Python process).
#
#   bench/trl_bench.sh [BUILD_DIR]        (default build; REPEATS=2)
#
# Model: hidden 512, intermediate 1408, 8 layers, 8 heads, 2 KV heads, untied head, Llama 2's
# tokenizer (vocabulary 32,000), random weights in a bf16 checkpoint. Data: 32 prompt/completion
# examples (SFT, ~210 tokens each) or preference pairs (DPO, ~2 x 130 tokens) of random words.
# Settings on both sides: batch 4, 8 steps, AdamW at a constant 1e-4, clipping at 1, SDPA
# attention, LoRA r 16 alpha 32 on q/k/v/o_proj (paft's L1 off: TRL has none) or full
# fine-tuning, fp32 or bf16 (LoRA: the base held in bf16; full: fp32 weights under autocast),
# activation checkpointing off unless the row says on (TRL's own default is on).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
REPEATS=${REPEATS:-2}
WORKER="$BUILD_DIR/worker/paft-worker"
PY=.venv/bin/python
TOKENIZERS=${PAFT_TOKENIZER_CACHE:-$HOME/.cache/paft/tokenizers}
[ -x "$WORKER" ] || { echo "build first: ./setup.sh build" >&2; exit 2; }
$PY -c 'import trl' 2>/dev/null || { echo "needs the project venv with TRL: ./setup.sh deps" >&2; exit 2; }
[ -f "$TOKENIZERS/llama2/tokenizer.json" ] || tests/tokenizer/golden/fetch_tokenizers.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

WORK=$(mktemp -d /tmp/paft-trl-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"
"$BUILD_DIR/examples/paft-make-toy-model" --out="$WORK/model" --dtype=bfloat16 --vocab_size=32000 \
  --hidden_size=512 --intermediate_size=1408 --layers=8 --heads=8 --kv_heads=2 \
  --tie_embeddings=false >/dev/null
cp "$TOKENIZERS/llama2/tokenizer.json" "$TOKENIZERS/llama2/tokenizer_config.json" "$WORK/model/"
$PY - "$WORK" <<'PY'
import json, random, sys
words = ("the of and to in is was for on that with as by at from his her they this which have "
         "river mountain bright quiet garden window letter morning number simple answer city "
         "music story light water paper friend market school winter summer yellow purple").split()
rng = random.Random(0)
text = lambda n: " ".join(rng.choice(words) for _ in range(n))
with open(f"{sys.argv[1]}/sft.jsonl", "w") as f:
    for _ in range(32):
        f.write(json.dumps({"prompt": text(40) + ":", "completion": " " + text(120)}) + "\n")
with open(f"{sys.argv[1]}/dpo.jsonl", "w") as f:
    for _ in range(32):
        f.write(json.dumps({"prompt": text(40) + ":", "chosen": " " + text(60),
                            "rejected": " " + text(60)}) + "\n")
PY

paft() {  # trainer mode precision checkpointing
  local trainer=$1 mode=$2 precision=$3 ac=$4 job="$WORK/job-$1-$2-$3-$4.yaml"
  local branch=sft objective="sft: {l1_lambda: 0}" other=alignment other_objective="dpo: {}"
  if [ "$trainer" = dpo ]; then
    branch=alignment objective="dpo: {beta: 0.1}" other=sft other_objective="sft: {}"
  fi
  local tuning="lora: {r: 16, alpha: 32, target_modules: [q_proj, k_proj, v_proj, o_proj]}"
  [ "$mode" = full ] && tuning="full: {}"
  rm -rf "$WORK/out"
  cat >"$job" <<EOF
name: trl-bench
base_model: $WORK/model
output_dir: $WORK/out
$branch:
  pool: p
  world_size: 1
  dataset: {path: $WORK/$trainer.jsonl}
  $objective
  $tuning
  optimizer: {learning_rate: 1.0e-4, lr_schedule: constant, weight_decay: 0, max_grad_norm: 1.0}
  batch: {per_device_batch_size: 4, max_length: 4096}
  max_steps: 8
  precision: $precision
  activation_checkpointing: $ac
$other:
  pool: q
  world_size: 1
  dataset: {path: $WORK/$trainer.jsonl}
  $other_objective
EOF
  # The trainer's peak RSS: the largest of this wrapper's children (the trainer process).
  $PY - "$WORKER" "$job" "$branch" "$trainer" "$mode" "$precision" "$ac" <<'PY'
import json, resource, statistics, subprocess, sys
worker, job, branch, trainer, mode, precision, ac = sys.argv[1:]
r = subprocess.run([worker, "train", job, f"--branch={branch}"], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"paft-worker train failed: {r.stderr[-1500:]}")
events = [json.loads(l[len("PAFT_EVENT "):]) for l in r.stdout.splitlines() if l.startswith("PAFT_EVENT ")]
rates = [e["tokens_per_second"] for e in events if e.get("type") == "progress"][2:]
print(json.dumps({"impl": "paft", "trainer": trainer, "mode": mode, "precision": precision,
                  "checkpointing": ac == "true", "tokens_per_s": statistics.median(rates),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
PY
}

trl() {  # trainer mode precision checkpointing
  local flag=""
  [ "$4" = true ] && flag=--checkpointing
  $PY bench/trl_peer.py --model="$WORK/model" --data="$WORK/$1.jsonl" --trainer=$1 --mode=$2 \
    --precision=$3 --batch=4 --steps=8 $flag
}

echo "machine: $(nproc) cores, $(grep -o -m1 'avx512_bf16' /proc/cpuinfo || echo 'no avx512_bf16'); $REPEATS repeats" >&2
CONFIGS=("sft lora fp32 false" "sft lora bf16 false" "sft full fp32 false" "sft full bf16 false"
         "dpo lora fp32 false" "dpo lora bf16 false" "sft lora bf16 true")
for ((r = 0; r < REPEATS; ++r)); do
  for c in "${CONFIGS[@]}"; do
    # shellcheck disable=SC2086
    paft $c >>"$RESULTS" || echo "paft $c failed" >&2
    # shellcheck disable=SC2086
    trl $c >>"$RESULTS" 2>"$WORK/trl.err" || { echo "trl $c failed: $(tail -3 "$WORK/trl.err")" >&2; }
  done
done

$PY - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{\"")]
def med(impl, c, key):
    v = [r[key] for r in rows if r["impl"] == impl and (r["trainer"], r["mode"], r["precision"],
         r["checkpointing"]) == c]
    return statistics.median(v) if v else float("nan")
print("| trainer | tuning | precision | activation checkpointing | paft tokens/s | TRL tokens/s "
      "| paft/TRL | paft peak RSS MiB | TRL peak RSS MiB | paft/TRL memory |")
print("|---|---|---|---|---|---|---|---|---|---|")
seen = []
for r in rows:
    c = (r["trainer"], r["mode"], r["precision"], r["checkpointing"])
    if c in seen:
        continue
    seen.append(c)
    a, b = med("paft", c, "tokens_per_s"), med("trl", c, "tokens_per_s")
    m, n = med("paft", c, "peak_rss_mib"), med("trl", c, "peak_rss_mib")
    print(f"| {c[0].upper()} | {c[1]} | {c[2]} | {'on' if c[3] else 'off'} | {a:.0f} | {b:.0f} | "
          f"{a / b:.2f} | {m:.0f} | {n:.0f} | {m / n:.2f} |")
PY
