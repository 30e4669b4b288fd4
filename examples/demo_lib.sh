# Shared by examples/run_local_demo.sh and examples/tune_demo.sh (sourced, not run).
#
#   demo_init BUILD_DIR     paths, binaries, the run folder $RUN with data/ (the committed splits)
#   demo_base               the base model in $BASE: the committed examples/demo-base (checked
#                           against its SHA256SUMS), or with PAFT_DEMO_BASE=pretrain (or
#                           PAFT_DEMO_PRETRAIN_STEPS set) one pre-trained here, cached by its inputs
#   demo_machine            prints the CPU and LibTorch's CPU kernels and BLAS
#   demo_eval OUT MODEL [ADAPTER] SPLIT
#                           OUT.sft.json, OUT.pref.json (paft-worker eval on the SPLIT files) and,
#                           unless MODEL is the base without adapter, OUT.delta.json (inspect)
#   demo_merge_as_chosen TABLE SFT_ADAPTER DPO_ADAPTER OUT
#                           the merge a job's merge search chose (its table.json) of two adapters
#   demo_merge METHOD SFT SFT_DENSITY DPO DPO_DENSITY OUT
#                           a merge of two adapters with weights 1 into OUT
#   demo_merge_weighted METHOD SFT_WEIGHT SFT_DENSITY DPO_WEIGHT DPO_DENSITY SFT DPO OUT
#                           the same with weights (OUT.yaml its config, OUT.log)
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
  BIN_WORKER=$BUILD_DIR/worker/paft-worker
  BIN_MERGER=$BUILD_DIR/merger/paft-merger
  PAFTCTL=$BUILD_DIR/cli/paftctl
  mkdir -p "$RUN/logs" "$RUN/data" "$RUN/models" "$RUN/eval" "$ROOT/models"
  cp "$SRC"/examples/data/*.jsonl "$RUN/data/"
  START=$(date +%s)
}

stage() { echo; echo "== [$(($(date +%s) - START))s] $*"; }

demo_base() {
  local mode=${PAFT_DEMO_BASE:-}
  if [ -z "$mode" ]; then  # setting the step count alone asks for pre-training, as it always did
    mode=committed
    [ -n "${PAFT_DEMO_PRETRAIN_STEPS:-}" ] && mode=pretrain
  fi
  case $mode in
  committed)
    if [ -n "${PAFT_DEMO_PRETRAIN_STEPS:-}" ]; then
      echo "demo: PAFT_DEMO_PRETRAIN_STEPS applies to PAFT_DEMO_BASE=pretrain, not committed" >&2
      exit 2
    fi
    # The committed base (examples/make_demo_base.sh made it): every machine fine-tunes the same
    # weights. Checked against its SHA256SUMS, so a damaged copy is named, not used.
    BASE=$SRC/examples/demo-base
    if ! (cd "$BASE" && sha256sum --quiet -c SHA256SUMS); then
      echo "demo: $BASE does not match its SHA256SUMS (a damaged checkout?)" >&2
      exit 1
    fi
    stage "the committed base model examples/demo-base (model.safetensors sha256 $(grep model.safetensors "$BASE/SHA256SUMS" | cut -c1-16)...)"
    ;;
  pretrain)
    # Pre-trained on this machine (cached by its inputs' content and the step count).
    local key steps=${PAFT_DEMO_PRETRAIN_STEPS:-1500}
    key=$(cat "$SRC/examples/data/pretrain.jsonl" "$SRC/examples/data/sft_train.jsonl" \
      "$SRC/examples/data/pref_train.jsonl" "$SRC/examples/pretrain.yaml" | sha256sum | cut -c1-12)
    BASE=$ROOT/models/demo-base-$key-$steps
    if [ ! -f "$BASE/model.safetensors" ]; then
      stage "pre-training a base model here ($steps steps; cached in $BASE)"
      PAFT_DEMO_PRETRAIN_STEPS=$steps "$SRC/examples/make_demo_base.sh" "$BASE" "$BUILD_DIR"
    fi
    ;;
  *)
    echo "demo: PAFT_DEMO_BASE is '$mode'; it takes 'committed' (default) or 'pretrain'" >&2
    exit 2
    ;;
  esac
  ln -sfn "$BASE" "$RUN/models/demo-base"
}

# What the numbers were computed on: the CPU, and the kernels LibTorch picked for it (fine-tuning
# on other kernels moves the numbers a little; docs/demo.md).
demo_machine() {
  local cpu torch="unknown"
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
  if [ -x "$SRC/.venv/bin/python" ]; then
    torch=$("$SRC/.venv/bin/python" -c 'import torch; print("torch", torch.__version__, "with",
      torch.backends.cpu.get_cpu_capability(), "CPU kernels, BLAS", "MKL" if torch.backends.mkl.is_available() else "other")' 2>/dev/null || echo unknown)
  fi
  echo "demo: machine: ${cpu:-unknown CPU}, $(nproc) cores; $torch"
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

demo_merge_as_chosen() {  # TABLE SFT_ADAPTER DPO_ADAPTER OUT: the merge a job's search chose
  local table=$1 sft=$2 dpo=$3 out=$4 chosen
  # method, sft weight and density, alignment weight and density of the chosen candidate
  chosen=$("$SRC/.venv/bin/python" -c '
import json, sys
t = json.load(open(sys.argv[1]))
m = t["candidates"][t.get("chosen", 0)]["merge"]
print(m["method"], m["sft"]["weight"], m["sft"]["density"], m["alignment"]["weight"], m["alignment"]["density"])
' "$table") || { echo "demo: cannot read the chosen merge of $table" >&2; exit 2; }
  # shellcheck disable=SC2086
  demo_merge_weighted $chosen "$sft" "$dpo" "$out"
}

demo_merge() {  # METHOD SFT SFT_DENSITY DPO DPO_DENSITY OUT: two adapters merged (weights 1)
  demo_merge_weighted "$1" 1.0 "$3" 1.0 "$5" "$2" "$4" "$6"
}

# METHOD SFT_WEIGHT SFT_DENSITY DPO_WEIGHT DPO_DENSITY SFT DPO OUT: two adapters merged (OUT.yaml
# its config, OUT.log)
demo_merge_weighted() {
  cat >"$8.yaml" <<YAML
merge_method: $1
base_model: $BASE
models:
  - model: $6
    parameters: {weight: $2, density: $3}
  - model: $7
    parameters: {weight: $4, density: $5}
YAML
  "$BIN_MERGER" merge "$8.yaml" "$8" >"$8.log" 2>&1
}

last_checkpoint() { ls -d "$1"/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -1; }
