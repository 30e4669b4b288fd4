#!/usr/bin/env bash
# Runs a PAFT job on a local cluster: the merger, the coordinator and one worker agent per pool
# ("sft" and "align", 2 CPU slots each) on this machine, then submits examples/skeleton-job.yaml
# and watches it to the end. State, logs and outputs go under .paft/local/ (kept between runs).
#
# The trainer is still the placeholder (worker/placeholder_trainer.cc): this shows scheduling,
# checkpoints and the merge working end to end, not learning.
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

if [ ! -d "$ROOT/models/toy-base" ]; then
  "$BUILD_DIR/examples/paft-make-toy-model" --out="$ROOT/models/toy-base"
fi
mkdir -p "$RUN/data" "$RUN/models"
cp examples/data/*.jsonl "$RUN/data/"
ln -s "$ROOT/models/toy-base" "$RUN/models/toy-base"
cp examples/skeleton-job.yaml "$RUN/job.yaml"

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
  PAFT_PLACEHOLDER_STEP_MS=${PAFT_PLACEHOLDER_STEP_MS:-100} \
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
  echo "demo: the merged model is in $RUN/jobs/skeleton-demo/merged"
else
  echo "demo: the job did not succeed (exit $status); logs in $RUN/logs" >&2
fi
exit $status
