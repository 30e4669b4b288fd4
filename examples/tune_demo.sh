#!/usr/bin/env bash
# Chooses the demo job's L1 strength and merge on the *validation* splits (never the test
# splits): for each seed, trains the SFT branch for each l1_lambda and the DPO branch once (one
# process each with the job's global batch), merges each SFT adapter with the DPO adapter in
# each way, evaluates every result on sft_val/pref_val, then prints the mean ± sd table and the
# best setting by the mean of SFT exact match and preference reward accuracy. docs/demo.md
# records its output and examples/paft-job.yaml holds the chosen l1_lambda (the job chooses its
# merge itself with merge.search; this script compares merges by hand across λ values).
#
#   examples/tune_demo.sh [BUILD_DIR]
#
# Environment: PAFT_TUNE_L1 (default "0 1e-3 1e-2"), PAFT_TUNE_MERGES (default
# "ties:0.2 ties:0.5 ties:1.0 task_arithmetic:1.0"), PAFT_TUNE_SEEDS (default "1 2 3"), and
# demo_lib.sh's (PAFT_DEMO_ROOT, ...).
set -euo pipefail
source "$(dirname "$0")/demo_lib.sh"
demo_init "${1:-build}"
L1S=${PAFT_TUNE_L1:-0 1e-3 1e-2}
MERGES=${PAFT_TUNE_MERGES:-ties:0.2 ties:0.5 ties:1.0 task_arithmetic:1.0}
SEEDS=${PAFT_TUNE_SEEDS:-1 2 3}
demo_base
JOB=$RUN/job.yaml
cp "$SRC/examples/paft-job.yaml" "$JOB"
ROWS=("dpo:DPO only")
for l1 in $L1S; do
  ROWS+=("sft_l1_$l1:SFT only l1 $l1")
  for merge in $MERGES; do
    ROWS+=("paft_l1_${l1}_${merge%%:*}_${merge##*:}:PAFT l1 $l1 ${merge%%:*} density ${merge##*:}")
  done
done

for seed in $SEEDS; do
  out=$RUN/eval/seed-$seed
  mkdir -p "$out"
  stage "seed $seed: training the DPO branch"
  sed -E "s/^  seed: 1$/  seed: $seed/; s|^output_dir: .*|output_dir: jobs/dpo-$seed|" "$JOB" \
    >"$RUN/job-dpo-$seed.yaml"
  "$BIN_WORKER" train "$RUN/job-dpo-$seed.yaml" --branch=alignment --threads=2 \
    >"$RUN/logs/dpo-$seed.events" 2>"$RUN/logs/dpo-$seed.log"
  DPO_ADAPTER=$(last_checkpoint "$RUN/jobs/dpo-$seed/alignment")
  demo_eval "$out/dpo" "$BASE" "$DPO_ADAPTER" val
  for l1 in $L1S; do
    stage "seed $seed, l1_lambda $l1: training the SFT branch, merging, evaluating on validation"
    sed -E "s/^  seed: 1$/  seed: $seed/; s/l1_lambda: [0-9.e-]+/l1_lambda: $l1/; s|^output_dir: .*|output_dir: jobs/sft-$l1-$seed|" \
      "$JOB" >"$RUN/job-sft-$l1-$seed.yaml"
    "$BIN_WORKER" train "$RUN/job-sft-$l1-$seed.yaml" --branch=sft --threads=2 \
      >"$RUN/logs/sft-$l1-$seed.events" 2>"$RUN/logs/sft-$l1-$seed.log"
    SFT_ADAPTER=$(last_checkpoint "$RUN/jobs/sft-$l1-$seed/sft")
    demo_eval "$out/sft_l1_$l1" "$BASE" "$SFT_ADAPTER" val
    for merge in $MERGES; do
      method=${merge%%:*} density=${merge##*:}
      key=paft_l1_${l1}_${method}_$density
      demo_merge "$method" "$SFT_ADAPTER" "$density" "$DPO_ADAPTER" "$density" "$RUN/models/$key-$seed"
      demo_eval "$out/$key" "$RUN/models/$key-$seed" "" val
    done
  done
done

stage "validation results over seeds ($SEEDS) (written to $RUN/eval/results.md)"
rows=$(IFS=,; echo "${ROWS[*]}")
"$BUILD_DIR/examples/paft-demo-report" --dir="$RUN/eval" --rows="$rows" --compare= --select=paft_
echo "tune: done in $(($(date +%s) - START)) s"
