#!/usr/bin/env bash
# The cluster as containers, end to end: the merger, the coordinator and one worker per pool
# (sft, align), each in its own container from the images `./setup.sh images` builds, on the
# host network with one shared volume. A PAFT job (real trainer, LoRA, 2 ranks per branch) is
# submitted with paftctl from outside the containers and must end SUCCEEDED with a merged model
# on the volume; midway through the SFT branch (after its first checkpoint) the sft worker's
# container is killed and started again, and the job must still succeed. gRPC health and
# /metrics are checked on every container.
#
#   deploy/containers_e2e.sh BUILD_DIR      (paftctl and paft-make-toy-model come from BUILD_DIR)
#
# Exit 77 (ctest: skipped) when podman or the images are missing, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:?usage: deploy/containers_e2e.sh BUILD_DIR}" && pwd)
TAG=${PAFT_IMAGE_TAG:-dev}
source deploy/podman_env.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIPPED: needs root (rootful podman, where ./setup.sh images put the images)"
  exit 77
fi
if ! command -v podman >/dev/null; then
  echo "SKIPPED: podman is not installed (./setup.sh images installs it and builds the images)"
  exit 77
fi
DIGEST=$(deploy/source_digest.sh)
for component in coordinator merger worker; do
  if ! podman image exists "paft-$component:$TAG"; then
    echo "SKIPPED: image paft-$component:$TAG is not built (./setup.sh images)"
    exit 77
  fi
  built=$(podman image inspect --format '{{ index .Config.Labels "paft.source-digest" }}' \
    "paft-$component:$TAG")
  if [ "$built" != "$DIGEST" ]; then
    echo "SKIPPED: image paft-$component:$TAG was built from other sources (digest '$built'," \
      "this tree: $DIGEST); ./setup.sh images rebuilds it"
    exit 77
  fi
done

ROOT=$(mktemp -d /tmp/paft-containers-XXXXXX)
# The containers share the host's network with whatever else runs (other tests' clusters hand
# out c10d ports from 29500): this cluster's rendezvous ports start elsewhere, below the
# ephemeral range. A port still taken restarts the branch on the next one (PortInUse).
RENDEZVOUS_PORT_BASE=$((20000 + RANDOM % 80 * 100))
PREFIX=paft-e2e-$$
log() { echo "[$(date +%H:%M:%S)] $*"; }
cleanup() {
  local status=$?
  if [ $status -ne 0 ]; then
    for c in merger coordinator w-sft w-align; do
      echo "---- podman logs $PREFIX-$c (last 40 lines)"
      podman logs --tail 40 "$PREFIX-$c" 2>&1 || true
    done
  fi
  podman rm -f -t 5 "$PREFIX-merger" "$PREFIX-coordinator" "$PREFIX-w-sft" "$PREFIX-w-align" \
    >/dev/null 2>&1 || true
  rm -rf "$ROOT"
  exit $status
}
trap cleanup EXIT

# Inputs on the volume: a toy Llama model with a sentencepiece tokenizer, two datasets, the spec.
"$BUILD/examples/paft-make-toy-model" --out="$ROOT/models/base" --vocab_size=64 --hidden_size=32 \
  --intermediate_size=64 --layers=2 --heads=4 --kv_heads=2 >/dev/null
words=("1+1=" 2 hi hello go away what is the cat)
for i in $(seq 0 199); do echo "${words[$(((i * 7) % 10))]} ${words[$(((i * 3) % 10))]}"; done \
  >"$ROOT/corpus.txt"
spm_train --input="$ROOT/corpus.txt" --model_prefix="$ROOT/models/base/tokenizer" --vocab_size=40 \
  --model_type=bpe --bos_id=1 --eos_id=2 --unk_id=0 >/dev/null 2>&1
mkdir -p "$ROOT/data"
echo '{"prompt": "1+1=", "completion": "2"}' >"$ROOT/data/sft.jsonl"
echo '{"prompt": "hi", "chosen": "hello", "rejected": "go"}' >"$ROOT/data/pref.jsonl"
cat >"$ROOT/job.yaml" <<'EOF'
name: containers
base_model: models/base
output_dir: jobs/containers
restart_budget: 2
sft:
  pool: sft
  world_size: 2
  dataset: {path: data/sft.jsonl}
  max_steps: 600
  checkpoint: {every_steps: 20}
alignment:
  pool: align
  world_size: 2
  dataset: {path: data/pref.jsonl}
  dpo: {beta: 0.1}
  max_steps: 8
merge:
  method: ties
  normalize: true
  sft: {density: 1.0}
  alignment: {density: 1.0}
EOF
# The containers run as uid 10001; the volume is mounted at the same path inside, so that every
# path means the same inside and out.
chown -R 10001:10001 "$ROOT"
VOLUME=(-v "$ROOT:$ROOT")
RUN=(podman run -d --network=host --init "${VOLUME[@]}")

port() {  # port NAME FILE: the port a server wrote to its port file (waits up to 60 s)
  for _ in $(seq 600); do
    if [ -s "$2" ]; then
      sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" "$2"
      return
    fi
    sleep 0.1
  done
  echo "no port file $2" >&2
  return 1
}

log "starting the merger, the coordinator and two workers"
"${RUN[@]}" --name "$PREFIX-merger" "paft-merger:$TAG" serve --plaintext \
  --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$ROOT/merger.ports" >/dev/null
MERGER=$(port grpc "$ROOT/merger.ports")
"${RUN[@]}" --name "$PREFIX-coordinator" "paft-coordinator:$TAG" --plaintext \
  --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$ROOT/coordinator.ports" \
  --state_db="$ROOT/coordinator.db" --merger="127.0.0.1:$MERGER" --storage_roots="$ROOT" \
  --lease_ttl=5s --heartbeat_interval=500ms --tick_interval=100ms --adoption_grace=10s \
  --rendezvous_port_base="$RENDEZVOUS_PORT_BASE" >/dev/null
COORDINATOR=127.0.0.1:$(port grpc "$ROOT/coordinator.ports")
for pool in sft align; do
  "${RUN[@]}" --name "$PREFIX-w-$pool" "paft-worker:$TAG" --coordinator="$COORDINATOR" \
    --name="w-$pool" --pool="$pool" --devices=2 --address=127.0.0.1 --threads=1 \
    --metrics_listen=127.0.0.1:0 --port_file="$ROOT/w-$pool.ports" >/dev/null
done

PAFTCTL=("$BUILD/cli/paftctl" --coordinator="$COORDINATOR")
log "health over gRPC and /metrics of every container"
"${PAFTCTL[@]}" health
"$BUILD/cli/paftctl" --coordinator="127.0.0.1:$MERGER" health
check_metrics() {  # check_metrics NAME PORTFILE FAMILY
  local p body
  p=$(port metrics "$2")
  body=$(curl -fsS "http://127.0.0.1:$p/metrics")
  grep -q "^# TYPE $3 " <<<"$body" || { echo "$1: /metrics on port $p has no $3" >&2; return 1; }
  echo "$1: /metrics on port $p serves $3"
}
check_metrics merger "$ROOT/merger.ports" paft_merges_total
check_metrics coordinator "$ROOT/coordinator.ports" paft_jobs
for pool in sft align; do
  check_metrics "worker $pool" "$ROOT/w-$pool.ports" paft_agent_registered
done
for _ in $(seq 100); do
  listed=$("${PAFTCTL[@]}" workers)
  [ "$(grep -c w- <<<"$listed")" -ge 2 ] && break
  sleep 0.2
done
"${PAFTCTL[@]}" workers

log "submitting the job"
JOB=$("${PAFTCTL[@]}" --json submit "$ROOT/job.yaml" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["job_id"])')
[ -n "$JOB" ] || { echo "submit returned no job id" >&2; exit 1; }
log "job $JOB; waiting for the SFT branch's first checkpoint"
for _ in $(seq 600); do
  checkpoints=$("${PAFTCTL[@]}" --json checkpoints "$JOB")
  grep -q BRANCH_KIND_SFT <<<"$checkpoints" && break
  sleep 0.5
done
grep -q BRANCH_KIND_SFT <<<"$checkpoints" || { echo "no SFT checkpoint within 5 minutes" >&2; exit 1; }

log "killing the sft worker's container mid-branch, then starting it again"
podman kill "$PREFIX-w-sft" >/dev/null
# The kill must have come mid-branch: the branch had not finished when its ranks died.
"${PAFTCTL[@]}" --json get "$JOB" | python3 -c '
import json, sys
sft = json.load(sys.stdin)["sft"]
assert sft["state"] != "BRANCH_STATE_SUCCEEDED", "the SFT branch ended before the kill: lengthen it"
print("sft branch at the kill:", sft["state"], "step", sft.get("step", 0))'
sleep 2
podman start "$PREFIX-w-sft" >/dev/null

log "waiting for the job to end"
if ! timeout 600 "${PAFTCTL[@]}" watch "$JOB" >"$ROOT/watch.log"; then
  tail -30 "$ROOT/watch.log"
  "${PAFTCTL[@]}" get "$JOB"
  exit 1
fi
"${PAFTCTL[@]}" get "$JOB"
# Succeeded; the kill cost the SFT branch an attempt (restarted from its checkpoint); the merged
# model is on the volume.
MERGED=$("${PAFTCTL[@]}" --json get "$JOB" | python3 -c '
import json, sys
job = json.load(sys.stdin)
assert job["state"] == "JOB_STATE_SUCCEEDED", "job state: " + job["state"]
assert int(job["sft"]["attempt"]) >= 2, "the SFT branch was not restarted by the kill"
print(job["merged_model_path"])')
for f in config.json tokenizer.model; do
  [ -s "$MERGED/$f" ] || { echo "merged model lacks $f ($MERGED)" >&2; exit 1; }
done
ls "$MERGED"/*.safetensors >/dev/null
log "PASSED: job $JOB SUCCEEDED after the sft worker's container was killed; merged model in $MERGED"
