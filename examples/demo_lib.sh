# Shared by examples/run_local_demo.sh and examples/tune_demo.sh (sourced, not run).
#
#   demo_init BUILD_DIR     paths, binaries, the run folder $RUN with data/ (the committed splits)
#   demo_base               the pre-trained base model in $BASE (cached by its inputs' content)
#   demo_eval OUT MODEL [ADAPTER] SPLIT
#                           OUT.sft.json, OUT.pref.json (paft-worker eval on the SPLIT files) and,
#                           unless MODEL is the base without adapter, OUT.delta.json (inspect)
#   demo_merge_like_job JOB_YAML SFT_ADAPTER DPO_ADAPTER OUT
#                           the job's merge (method and densities) of two adapters into OUT
#   demo_merge METHOD SFT SFT_DENSITY DPO DPO_DENSITY OUT
#                           a merge of two adapters into OUT (OUT.yaml its config, OUT.log)
#   demo_sequential SEED JOB_YAML SFT_ADAPTER
#                           the sequential baseline: the SFT adapter merged into the base, then
#                           the job's DPO branch trained on that model; its model in
#                           $RUN/models/sequential-SEED

demo_init() {
  BUILD_DIR=$(cd "${1:-build}" && pwd)
  SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  ROOT=${PAFT_DEMO_ROOT:-$(pwd)/.paft/local}
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  RUN=$ROOT/run-$(date +%Y%m%d-%H%M%S)-$$
  PRETRAIN_STEPS=${PAFT_DEMO_PRETRAIN_STEPS:-1500}
  BIN_WORKER=$BUILD_DIR/worker/paft-worker
  BIN_MERGER=$BUILD_DIR/merger/paft-merger
  PAFTCTL=$BUILD_DIR/cli/paftctl
  mkdir -p "$RUN/logs" "$RUN/data" "$RUN/models" "$RUN/eval" "$ROOT/models"
  cp "$SRC"/examples/data/*.jsonl "$RUN/data/"
  START=$(date +%s)
}

stage() { echo; echo "== [$(($(date +%s) - START))s] $*"; }

demo_base() {
  # The tokenizer learns from the pre-training text and the *training* splits only: validation
  # and test text is seen by nothing before it is evaluated.
  local inputs=("$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/sft_train.jsonl"
                "$SRC/examples/data/pref_train.jsonl")
  local key
  key=$(cat "${inputs[@]}" "$SRC/examples/pretrain.yaml" | sha256sum | cut -c1-12)-$PRETRAIN_STEPS
  BASE=$ROOT/models/demo-base-$key
  if [ ! -f "$BASE/model.safetensors" ]; then
    stage "pre-training the demo base model ($PRETRAIN_STEPS steps; cached in $BASE)"
    local work=$ROOT/pretrain-$key
    rm -rf "$work" && mkdir -p "$work/data"
    "$BUILD_DIR/examples/paft-make-toy-model" --out="$work/init" --vocab_size=256 \
      --hidden_size=128 --intermediate_size=384 --layers=4 --heads=4 --kv_heads=2 --dtype=float32
    sed -E 's/"(text|prompt|completion|chosen|rejected)"://g; s/^\{|\}$//g' "${inputs[@]}" |
      sed -E 's/","/\n/g; s/"//g' >"$work/corpus.txt"
    spm_train --input="$work/corpus.txt" --model_prefix="$work/init/tokenizer" --vocab_size=256 \
      --model_type=bpe --character_coverage=1.0 --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 \
      >"$work/spm_train.log" 2>&1
    cp "$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/pref_train.jsonl" "$work/data/"
    sed -E "s/^  max_steps: .*/  max_steps: $PRETRAIN_STEPS/" "$SRC/examples/pretrain.yaml" \
      >"$work/pretrain.yaml"
    "$BIN_WORKER" train "$work/pretrain.yaml" --branch=sft --threads=2 2>"$work/pretrain.log" |
      sed -nE 's/^PAFT_EVENT \{.*"loss":([0-9.]+).*"step":([0-9]+).*"tokens_per_second":([0-9.]+).*/\2 \1 \3/p' |
      awk -v total="$PRETRAIN_STEPS" '$1 % 50 == 0 || $1 == total {
        printf "  pre-training step %d/%d  loss %.3f  %.0f tok/s\n", $1, total, $2, $3; fflush() }'
    local final=$work/pretrain/sft/checkpoints/checkpoint-$PRETRAIN_STEPS
    [ -f "$final/model.safetensors" ] || { echo "demo: pre-training failed; see $work/pretrain.log" >&2; exit 1; }
    mkdir -p "$BASE.tmp"
    cp "$final/config.json" "$final/model.safetensors" "$work/init/tokenizer.model" "$BASE.tmp/"
    rm -rf "$BASE" && mv "$BASE.tmp" "$BASE"
  fi
  ln -sfn "$BASE" "$RUN/models/demo-base"
}

demo_eval() {  # OUT MODEL [ADAPTER] SPLIT
  local out=$1 model=$2 adapter=$3 split=$4
  local args=(--base="$model" --threads=2 --max_new_tokens=8 --cache_dir="$RUN/eval/cache")
  [ -n "$adapter" ] && args+=(--adapter="$adapter")
  "$BIN_WORKER" eval "${args[@]}" --dataset="$RUN/data/sft_$split.jsonl" >"$out.sft.json"
  "$BIN_WORKER" eval "${args[@]}" --reference="$BASE" --beta=0.5 \
    --dataset="$RUN/data/pref_$split.jsonl" >"$out.pref.json"
  if [ -n "$adapter" ] || [ "$model" != "$BASE" ]; then
    "$BIN_MERGER" inspect --base="$BASE" --summary --json "${adapter:-$model}" >"$out.delta.json"
  fi
}

demo_sequential() {  # SEED JOB_YAML SFT_ADAPTER
  local seed=$1 job=$2 sft_adapter=$3
  local sft_model=$RUN/models/sft-model-$seed
  cat >"$RUN/sft-into-base-$seed.yaml" <<YAML
merge_method: task_arithmetic
base_model: $BASE
models:
  - model: $sft_adapter
    parameters: {weight: 1.0}
YAML
  "$BIN_MERGER" merge "$RUN/sft-into-base-$seed.yaml" "$sft_model" >"$RUN/logs/sft-into-base-$seed.log" 2>&1
  sed -E "s|^base_model: .*|base_model: $sft_model|; s|^output_dir: .*|output_dir: $RUN/jobs/sequential-$seed|" \
    "$job" >"$RUN/sequential-$seed.yaml"
  # One process runs the branch's global batch (its world_size as gradient accumulation).
  "$BIN_WORKER" train "$RUN/sequential-$seed.yaml" --branch=alignment --threads=2 \
    >"$RUN/logs/sequential-$seed.events" 2>"$RUN/logs/sequential-$seed.log"
  local adapter
  adapter=$(ls -d "$RUN/jobs/sequential-$seed"/alignment/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1)
  cat >"$RUN/sequential-merge-$seed.yaml" <<YAML
merge_method: task_arithmetic
base_model: $sft_model
models:
  - model: $adapter
    parameters: {weight: 1.0}
YAML
  "$BIN_MERGER" merge "$RUN/sequential-merge-$seed.yaml" "$RUN/models/sequential-$seed" \
    >"$RUN/logs/sequential-merge-$seed.log" 2>&1
}

demo_merge_like_job() {  # JOB_YAML SFT_ADAPTER DPO_ADAPTER OUT: the job's merge of two adapters
  local job=$1 sft=$2 dpo=$3 out=$4
  local method sft_density dpo_density
  method=$(sed -nE 's/^  method: ([a-z_]+).*/\1/p' "$job")
  sft_density=$(sed -nE '/^merge:/,$ s/^  sft: \{weight: 1.0, density: ([0-9.]+)\}.*/\1/p' "$job")
  dpo_density=$(sed -nE '/^merge:/,$ s/^  alignment: \{weight: 1.0, density: ([0-9.]+)\}.*/\1/p' "$job")
  if [ -z "$method" ] || [ -z "$sft_density" ] || [ -z "$dpo_density" ]; then
    echo "demo: cannot read the merge of $job (method, sft and alignment density)" >&2
    exit 2
  fi
  demo_merge "$method" "$sft" "$sft_density" "$dpo" "$dpo_density" "$out"
}

demo_merge() {  # METHOD SFT SFT_DENSITY DPO DPO_DENSITY OUT: two adapters merged (weights 1)
  cat >"$6.yaml" <<YAML
merge_method: $1
base_model: $BASE
models:
  - model: $2
    parameters: {weight: 1.0, density: $3}
  - model: $4
    parameters: {weight: 1.0, density: $5}
YAML
  "$BIN_MERGER" merge "$6.yaml" "$6" >"$6.log" 2>&1
}

last_checkpoint() { ls -d "$1"/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1; }
