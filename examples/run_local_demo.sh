#!/usr/bin/env bash
# The demo: PAFT jobs end to end on a local cluster, and an evaluation that can be trusted.
#
#   examples/run_local_demo.sh [BUILD_DIR]      (./setup.sh demo builds first, then runs this)
#
# 1. The base model is the committed examples/demo-base (a tiny Llama-architecture model that
#    examples/make_demo_base.sh pre-trained on examples/data/pretrain.jsonl, with a BPE tokenizer
#    trained on the pre-training text and the training splits only), checked against its
#    SHA256SUMS: every machine fine-tunes the same weights. PAFT_DEMO_BASE=pretrain pre-trains one
#    here instead (cached under .paft/local/models/).
# 2. `paftctl local up` starts a local cluster: the merger, the coordinator (SQLite state in the
#    run folder) and one worker agent per pool ("sft" and "align", 2 CPU slots each).
# 3. For each seed, examples/paft-job.yaml runs through paftctl: LoRA SFT with PAFT's L1 penalty
#    and LoRA DPO in parallel, 2 data-parallel ranks each (Gloo), then the job's merge search
#    scores its candidate merges on the validation splits and the merger makes the chosen one.
#    Beside it, with the same settings and seed: plain SFT (no L1), its merge with the DPO adapter
#    the same way ("parallel, no L1"), and the sequential baseline (plain SFT, then DPO on the SFT
#    model).
# 4. Every model is evaluated on the *test* splits (100 SFT questions, 120 preference pairs) and
#    reported as mean ± sd over the seeds, with the differences that exceed the spread named
#    (also in the run folder as results.md/.json). The merge was chosen on the validation
#    splits (the job's merge.search; the L1 strength by examples/tune_demo.sh); the test splits
#    are read only here.
#
# Environment: PAFT_DEMO_SEEDS (default "1 2 3 4 5"), PAFT_DEMO_BASE (committed or pretrain),
# PAFT_DEMO_PRETRAIN_STEPS (pretrain's steps, default 1500; set alone, it asks for pretrain),
# PAFT_DEMO_ROOT (default .paft/local), PAFT_DEMO_JOB (the job spec, default
# examples/paft-job.yaml; its paths are relative to the run folder; its "seed: 1" lines are set
# to each seed).
set -euo pipefail
source "$(dirname "$0")/demo_lib.sh"
demo_init "${1:-build}"
SEEDS=${PAFT_DEMO_SEEDS:-1 2 3 4 5}
demo_machine

CLUSTER=$RUN/cluster
cleanup() {
  [ -f "$CLUSTER/cluster.json" ] && "$PAFTCTL" --local_dir="$CLUSTER" local down >/dev/null || true
}
trap cleanup EXIT

demo_base
JOB_TEMPLATE=${PAFT_DEMO_JOB:-$SRC/examples/paft-job.yaml}
grep -q '^  seed: 1$' "$JOB_TEMPLATE" || { echo "demo: $JOB_TEMPLATE has no '  seed: 1' line" >&2; exit 2; }

stage "starting the local cluster (paftctl local up) in $CLUSTER"
"$PAFTCTL" --local_dir="$CLUSTER" local up
COORDINATOR=$(sed -nE 's/.*"coordinator": "([^"]+)".*/\1/p' "$CLUSTER/cluster.json")
METRICS_PORT=$(sed -nE 's/.*"coordinator_metrics_port": ([0-9]+).*/\1/p' "$CLUSTER/cluster.json")
export PAFT_COORDINATOR=$COORDINATOR
"$PAFTCTL" workers

stage "evaluating the base model on the test splits"
demo_eval "$RUN/eval/base" "$BASE" "" test

for seed in $SEEDS; do
  JOB_YAML=$RUN/job-seed-$seed.yaml
  sed -E "s/^  seed: 1$/  seed: $seed/; s|^name: .*|name: local-demo-seed-$seed|; s|^output_dir: .*|output_dir: jobs/seed-$seed|" \
    "$JOB_TEMPLATE" >"$JOB_YAML"
  stage "seed $seed: the PAFT job (SFT and DPO in parallel, then the merge)"
  set +e
  "$PAFTCTL" --progress_every_s=5 submit "$JOB_YAML" --request_id="demo-$(basename "$RUN")-$seed" --watch \
    | tee "$RUN/logs/job-seed-$seed.watch"
  status=${PIPESTATUS[0]}
  set -e
  if [ $status -ne 0 ]; then
    echo "demo: the job did not succeed (exit $status); logs in $CLUSTER/logs and $RUN/jobs" >&2
    exit $status
  fi
  sed -nE 's/^submitted job ([^ ]+) .*/\1/p' "$RUN/logs/job-seed-$seed.watch" | head -1 >"$RUN/job-id-$seed"
  JOB=$RUN/jobs/seed-$seed
  SFT_L1_ADAPTER=$(last_checkpoint "$JOB/sft")
  DPO_ADAPTER=$(last_checkpoint "$JOB/alignment")

  stage "seed $seed: plain SFT (the job's SFT branch without L1), and its merge with the DPO adapter"
  sed -E "s/l1_lambda: [0-9.e-]+/l1_lambda: 0/; s|^output_dir: .*|output_dir: jobs/plain-sft-$seed|" \
    "$JOB_YAML" >"$RUN/plain-sft-$seed.yaml"
  "$BIN_WORKER" train "$RUN/plain-sft-$seed.yaml" --branch=sft --threads=2 \
    >"$RUN/logs/plain-sft-$seed.events" 2>"$RUN/logs/plain-sft-$seed.log"
  SFT_ADAPTER=$(last_checkpoint "$RUN/jobs/plain-sft-$seed/sft")
  # The merge the job's search chose for this seed (on the validation splits), for a like-for-like
  # comparison.
  "$PAFTCTL" merges "$(cat "$RUN/job-id-$seed")"
  demo_merge_as_chosen "$JOB/merge-search/table.json" "$SFT_ADAPTER" "$DPO_ADAPTER" "$RUN/models/parallel-$seed"

  stage "seed $seed: the sequential baseline (DPO on the plain SFT model, the job's DPO settings)"
  demo_sequential "$seed" "$JOB_YAML" "$SFT_ADAPTER"

  stage "seed $seed: evaluating every model on the test splits"
  mkdir -p "$RUN/eval/seed-$seed"
  demo_eval "$RUN/eval/seed-$seed/sft" "$BASE" "$SFT_ADAPTER" test
  demo_eval "$RUN/eval/seed-$seed/sft_l1" "$BASE" "$SFT_L1_ADAPTER" test
  demo_eval "$RUN/eval/seed-$seed/dpo" "$BASE" "$DPO_ADAPTER" test
  demo_eval "$RUN/eval/seed-$seed/sequential" "$RUN/models/sequential-$seed" "" test
  demo_eval "$RUN/eval/seed-$seed/parallel" "$RUN/models/parallel-$seed" "" test
  demo_eval "$RUN/eval/seed-$seed/paft" "$JOB/merged" "" test
done
echo "demo: coordinator metrics (excerpt):"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
  grep -E '^paft_(jobs\{|branch_restarts_total|checkpoints_total)' || true

stage "results on the test splits over seeds ($SEEDS) (written to $RUN/eval/results.md)"
ROWS="base:base (pre-trained),sft:SFT only,sft_l1:SFT only with L1,dpo:DPO only"
ROWS+=",sequential:sequential: SFT then DPO,parallel:parallel: SFT ∥ DPO merged (no L1)"
ROWS+=",paft:PAFT: SFT with L1 ∥ DPO merged"
COMPARE="sequential-sft:exact_match,paft-sequential:exact_match,paft-parallel:exact_match"
COMPARE+=",parallel-sequential:exact_match,paft-dpo:reward_accuracy"
COMPARE+=",paft-sequential:reward_accuracy,sft_l1-sft:factor_density,sft_l1-sft:exact_match"
"$BUILD_DIR/examples/paft-demo-report" --dir="$RUN/eval" --rows="$ROWS" --compare="$COMPARE"
echo
echo "demo: merged models in $RUN/jobs/seed-*/merged; the run's state, logs and outputs in $RUN"
demo_machine
echo "demo: done in $(($(date +%s) - START)) s"
