#!/usr/bin/env bash
# Runs a PAFT job on a local cluster: the merger, the coordinator and one worker agent per pool
# ("sft" and "align", 2 CPU slots each) on this machine, then submits examples/paft-job.yaml and
# watches it to the end. State, logs and outputs go under .paft/local/ (kept between runs).
#
# The base is a tiny random Llama-architecture model with a sentencepiece tokenizer trained here
# on the bundled data: the run shows real LoRA training of both branches (SFT with L1, DPO), real
# adapter checkpoints and a TIES merge. (A pre-trained demo base and an evaluation table come with
# the "main job end to end" issue; ranks of one branch do not synchronise gradients yet.)
set -euo pipefail

BUILD_DIR=$(cd "${1:-build}" && pwd)
ROOT=$(pwd)/.paft/local
RUN=$ROOT/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN/logs" "$ROOT/models"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_port_file() {
  for _ in $(seq 1 200); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  echo "demo: $2 did not start; see $RUN/logs" >&2
  exit 1
}
port_of() { sed -E "s/.*\"$2\":([0-9]+).*/\\1/" "$1"; }

if [ ! -f "$ROOT/models/toy-base/tokenizer.model" ]; then
  rm -rf "$ROOT/models/toy-base"
  "$BUILD_DIR/examples/paft-make-toy-model" --out="$ROOT/models/toy-base" --vocab_size=256 \
    --hidden_size=64 --intermediate_size=128 --layers=2 --heads=4 --kv_heads=2
  # A BPE tokenizer trained on the bundled texts (vocabulary within the model's 256).
  sed -E 's/"[a-z_]+": //g; s/[{}"]//g; s/, /\n/g' examples/data/*.jsonl > "$ROOT/corpus.txt"
  spm_train --input="$ROOT/corpus.txt" --model_prefix="$ROOT/models/toy-base/tokenizer" \
    --vocab_size=128 --model_type=bpe --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 \
    >"$ROOT/spm_train.log" 2>&1
fi
mkdir -p "$RUN/data" "$RUN/models"
cp examples/data/*.jsonl "$RUN/data/"
ln -s "$ROOT/models/toy-base" "$RUN/models/toy-base"
cp examples/paft-job.yaml "$RUN/job.yaml"

echo "demo: starting the local cluster in $RUN"
"$BUILD_DIR/merger/paft-merger" serve --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --port_file="$RUN/merger.ports" 2>"$RUN/logs/merger.log" &
PIDS+=($!)
wait_port_file "$RUN/merger.ports" merger
MERGER_PORT=$(port_of "$RUN/merger.ports" grpc)

"$BUILD_DIR/coordinator/paft-coordinator" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --state_db="$RUN/coordinator.db" --merger="127.0.0.1:$MERGER_PORT" \
  --port_file="$RUN/coordinator.ports" 2>"$RUN/logs/coordinator.log" &
PIDS+=($!)
wait_port_file "$RUN/coordinator.ports" coordinator
COORDINATOR="127.0.0.1:$(port_of "$RUN/coordinator.ports" grpc)"

for pool in sft align; do
  "$BUILD_DIR/worker/paft-worker" --coordinator="$COORDINATOR" --name="local-$pool" \
    --pool="$pool" --devices=2 --address=127.0.0.1 2>"$RUN/logs/worker-$pool.log" &
  PIDS+=($!)
done

export PAFT_COORDINATOR=$COORDINATOR
"$BUILD_DIR/cli/paftctl" health >/dev/null
for _ in $(seq 1 50); do
  [ "$("$BUILD_DIR/cli/paftctl" workers | wc -l)" -ge 3 ] && break
  sleep 0.1
done
"$BUILD_DIR/cli/paftctl" workers
echo
set +e
"$BUILD_DIR/cli/paftctl" submit "$RUN/job.yaml" --request_id="demo-$(basename "$RUN")" --watch
status=$?
set -e
echo
echo "demo: coordinator metrics (excerpt):"
curl -s "http://127.0.0.1:$(port_of "$RUN/coordinator.ports" metrics)/metrics" |
  grep -E '^paft_(jobs|job_transitions_total|pool_slots)' || true
if [ $status -eq 0 ]; then
  echo "demo: the merged model is in $RUN/jobs/local-demo/merged"
  echo "demo: delta analysis of the two branches' final adapters:"
  "$BUILD_DIR/merger/paft-merger" inspect --summary --base="$ROOT/models/toy-base" \
    "$RUN/jobs/local-demo/sft/checkpoints/checkpoint-30" \
    "$RUN/jobs/local-demo/alignment/checkpoints/checkpoint-30" | tail -3
else
  echo "demo: the job did not succeed (exit $status); logs in $RUN/logs" >&2
fi
exit $status
