#!/usr/bin/env bash
# The demo: a complete PAFT job on a local cluster, and what it achieved.
#
#   examples/run_local_demo.sh [BUILD_DIR]      (./setup.sh demo builds first, then runs this)
#
# 1. A tiny Llama-architecture base model is pre-trained here on the bundled text (counting, the
#    alphabet, greetings) with a sentencepiece tokenizer trained on the bundled data; cached
#    under .paft/local/models/ for later runs.
# 2. `paftctl local up` starts a local cluster: the merger, the coordinator (SQLite state in the
#    run folder) and one worker agent per pool ("sft" and "align", 2 CPU slots each); `paftctl
#    local down` stops it at the end.
# 3. examples/paft-job.yaml runs through paftctl: LoRA SFT with PAFT's L1 penalty and LoRA DPO in
#    parallel, 2 data-parallel ranks each (Gloo), then a TIES merge of the two adapters.
# 4. The sequential baseline (SFT, then DPO on the SFT model) is trained with the same settings.
# 5. Base, SFT-only, DPO-only, sequential and PAFT-merged models are evaluated on the held-out
#    splits and compared in a table (also written to the run folder as results.md/.json).
#
# Environment: PAFT_DEMO_PRETRAIN_STEPS (default 300), PAFT_DEMO_ROOT (default .paft/local),
# PAFT_DEMO_JOB (the job spec, default examples/paft-job.yaml; its data paths are relative to
# the run folder, which holds data/ and models/demo-base).
set -euo pipefail

BUILD_DIR=$(cd "${1:-build}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${PAFT_DEMO_ROOT:-$(pwd)/.paft/local}
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
RUN=$ROOT/run-$(date +%Y%m%d-%H%M%S)-$$
PRETRAIN_STEPS=${PAFT_DEMO_PRETRAIN_STEPS:-300}
BIN_WORKER=$BUILD_DIR/worker/paft-worker
BIN_MERGER=$BUILD_DIR/merger/paft-merger
PAFTCTL=$BUILD_DIR/cli/paftctl
mkdir -p "$RUN/logs" "$RUN/data" "$RUN/models" "$RUN/eval" "$ROOT/models"
START=$(date +%s)
stage() { echo; echo "== [$(($(date +%s) - START))s] $*"; }

CLUSTER=$RUN/cluster
cleanup() {
  [ -f "$CLUSTER/cluster.json" ] && "$PAFTCTL" --local_dir="$CLUSTER" local down >/dev/null || true
}
trap cleanup EXIT

cp "$SRC"/examples/data/*.jsonl "$RUN/data/"

# --- 1. the pre-trained base (cached by the content of its inputs)
KEY=$(cat "$SRC/examples/data/pretrain.jsonl" "$SRC/examples/pretrain.yaml" "$SRC"/examples/data/*.jsonl |
  sha256sum | cut -c1-12)-$PRETRAIN_STEPS
BASE=$ROOT/models/demo-base-$KEY
if [ ! -f "$BASE/model.safetensors" ]; then
  stage "pre-training the demo base model ($PRETRAIN_STEPS steps; cached in $BASE)"
  WORK=$ROOT/pretrain-$KEY
  rm -rf "$WORK" && mkdir -p "$WORK/data"
  "$BUILD_DIR/examples/paft-make-toy-model" --out="$WORK/init" --vocab_size=256 \
    --hidden_size=128 --intermediate_size=384 --layers=4 --heads=4 --kv_heads=2 --dtype=float32
  # A BPE tokenizer trained on every bundled text (one text per line).
  sed -E 's/"(text|prompt|completion|chosen|rejected)"://g; s/^\{|\}$//g' "$SRC"/examples/data/*.jsonl |
    sed -E 's/","/\n/g; s/"//g' >"$WORK/corpus.txt"
  spm_train --input="$WORK/corpus.txt" --model_prefix="$WORK/init/tokenizer" --vocab_size=256 \
    --model_type=bpe --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 >"$WORK/spm_train.log" 2>&1
  cp "$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/preference.jsonl" "$WORK/data/"
  sed -E "s/^  max_steps: .*/  max_steps: $PRETRAIN_STEPS/" "$SRC/examples/pretrain.yaml" \
    >"$WORK/pretrain.yaml"
  "$BIN_WORKER" train "$WORK/pretrain.yaml" --branch=sft --threads=2 2>"$WORK/pretrain.log" |
    sed -nE 's/^PAFT_EVENT \{.*"loss":([0-9.]+).*"step":([0-9]+).*"tokens_per_second":([0-9.]+).*/\2 \1 \3/p' |
    awk -v total="$PRETRAIN_STEPS" '$1 % 25 == 0 || $1 == total {
      printf "  pre-training step %d/%d  loss %.3f  %.0f tok/s\n", $1, total, $2, $3; fflush() }'
  FINAL=$WORK/pretrain/sft/checkpoints/checkpoint-$PRETRAIN_STEPS
  [ -f "$FINAL/model.safetensors" ] || { echo "demo: pre-training failed; see $WORK/pretrain.log" >&2; exit 1; }
  mkdir -p "$BASE.tmp"
  cp "$FINAL/config.json" "$FINAL/model.safetensors" "$WORK/init/tokenizer.model" "$BASE.tmp/"
  rm -rf "$BASE" && mv "$BASE.tmp" "$BASE"
fi
ln -s "$BASE" "$RUN/models/demo-base"
cp "${PAFT_DEMO_JOB:-$SRC/examples/paft-job.yaml}" "$RUN/job.yaml"

# --- 2. the local cluster
stage "starting the local cluster (paftctl local up) in $CLUSTER"
"$PAFTCTL" --local_dir="$CLUSTER" local up
COORDINATOR=$(sed -nE 's/.*"coordinator": "([^"]+)".*/\1/p' "$CLUSTER/cluster.json")
METRICS_PORT=$(sed -nE 's/.*"coordinator_metrics_port": ([0-9]+).*/\1/p' "$CLUSTER/cluster.json")
export PAFT_COORDINATOR=$COORDINATOR
"$PAFTCTL" workers

# --- 3. the PAFT job
stage "running the PAFT job (SFT and DPO in parallel, then the merge)"
set +e
"$PAFTCTL" --progress_every_s=5 submit "$RUN/job.yaml" --request_id="demo-$(basename "$RUN")" --watch
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "demo: the job did not succeed (exit $status); logs in $CLUSTER/logs and $RUN/jobs" >&2
  exit $status
fi
JOB=$RUN/jobs/local-demo
SFT_ADAPTER=$(ls -d "$JOB"/sft/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)
DPO_ADAPTER=$(ls -d "$JOB"/alignment/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)
echo "demo: coordinator metrics (excerpt):"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
  grep -E '^paft_(jobs\{|branch_restarts_total|checkpoints_total)' || true

# --- 4. the sequential baseline: the SFT adapter merged into the base, then DPO on that model
stage "training the sequential baseline (DPO on the SFT model, same DPO settings)"
cat >"$RUN/sft-into-base.yaml" <<EOF
merge_method: task_arithmetic
base_model: $BASE
models:
  - model: $SFT_ADAPTER
    parameters: {weight: 1.0}
EOF
"$BIN_MERGER" merge "$RUN/sft-into-base.yaml" "$RUN/models/sft-model" >"$RUN/logs/sft-into-base.log" 2>&1
sed -E "s|^base_model: .*|base_model: models/sft-model|; s|^output_dir: .*|output_dir: jobs/sequential|" \
  "$RUN/job.yaml" >"$RUN/sequential.yaml"
"$BIN_WORKER" train "$RUN/sequential.yaml" --branch=alignment --threads=2 \
  >"$RUN/logs/sequential.events" 2>"$RUN/logs/sequential.log"
SEQ_ADAPTER=$(ls -d "$RUN"/jobs/sequential/alignment/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)
cat >"$RUN/sequential-merge.yaml" <<EOF
merge_method: task_arithmetic
base_model: $RUN/models/sft-model
models:
  - model: $SEQ_ADAPTER
    parameters: {weight: 1.0}
EOF
"$BIN_MERGER" merge "$RUN/sequential-merge.yaml" "$RUN/models/sequential-model" \
  >"$RUN/logs/sequential-merge.log" 2>&1

# --- 5. evaluation on the held-out splits
stage "evaluating base, SFT-only, DPO-only, sequential and PAFT-merged models on held-out data"
evaluate() {  # ROW MODEL [ADAPTER]
  local row=$1 model=$2 adapter=${3:-}
  local args=(--base="$model" --threads=2 --max_new_tokens=8 --cache_dir="$RUN/eval")
  [ -n "$adapter" ] && args+=(--adapter="$adapter")
  "$BIN_WORKER" eval "${args[@]}" --dataset="$RUN/data/sft_eval.jsonl" >"$RUN/eval/$row.sft.json"
  "$BIN_WORKER" eval "${args[@]}" --reference="$BASE" --beta=0.5 \
    --dataset="$RUN/data/preference_eval.jsonl" >"$RUN/eval/$row.pref.json"
  if [ "$row" != base ]; then
    "$BIN_MERGER" inspect --base="$BASE" --summary --json --epsilon=1e-6 "${adapter:-$model}" \
      >"$RUN/eval/$row.delta.json"
  fi
  echo "  evaluated $row"
}
evaluate base "$BASE"
evaluate sft "$BASE" "$SFT_ADAPTER"
evaluate dpo "$BASE" "$DPO_ADAPTER"
evaluate sequential "$RUN/models/sequential-model"
evaluate paft "$JOB/merged"

stage "results (held-out splits; written to $RUN/eval/results.md)"
"$BUILD_DIR/examples/paft-demo-report" --dir="$RUN/eval"
echo
echo "demo: the merged model is in $JOB/merged; the run's state, logs and outputs in $RUN"
echo "demo: done in $(($(date +%s) - START)) s"
