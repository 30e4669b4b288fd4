#!/usr/bin/env bash
# paft-merger beside mergekit (the peer users would run instead; pinned in requirements/test.txt),
# in one run: the same YAML config merged by `paft-merger merge` and by `mergekit-yaml`, each in
# its own process, alternating, REPEATS times; the table shows the median wall time and peak RSS.
#
#   bench/mergekit_bench.sh [BUILD_DIR]      (default build; REPEATS=2, LAYERS=22, THREADS=2)
#
# Models: TinyLlama-1.1B's shape (22 layers; 1.10e9 parameters), random weights in bf16 written by
# paft-merge-bench: a base, a densely changed model and a sparsely changed one (2.2 GB each).
# Config: the two as inputs, weight 1, density 0.5 (ties, dare_ties), `dtype: float32,
# out_dtype: bfloat16` -- arithmetic in fp32 on both sides, written in bf16 (paft-merger and
# mergekit bit-equal on this form: tests/ecosystem/mergekit_test.py). mergekit also with
# `dtype: bfloat16` (its bf16 arithmetic, which paft does not do) for reference. Both with
# THREADS threads (mergekit's --num-threads).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
REPEATS=${REPEATS:-2}
LAYERS=${LAYERS:-22}
THREADS=${THREADS:-2}
PY=.venv/bin/python
MERGER="$BUILD_DIR/merger/paft-merger"
[ -x "$MERGER" ] || { echo "build first: ./setup.sh build" >&2; exit 2; }
[ -x .venv/bin/mergekit-yaml ] || { echo "needs the project venv with mergekit: ./setup.sh deps" >&2; exit 2; }

WORK=$(mktemp -d /tmp/paft-mergekit-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BUILD_DIR/bench/paft-merge-bench" --dir="$WORK" --layers="$LAYERS" --methods= >&2
RESULTS="$WORK/results.jsonl"

config() {  # method dtype-lines
  local method=$1 dtype=$2 params="weight: 1.0"
  [ "$method" != task_arithmetic ] && params="weight: 1.0, density: 0.5"
  cat <<EOF
merge_method: $method
base_model: $WORK/base-L$LAYERS
models:
  - model: $WORK/sft-L$LAYERS
    parameters: {$params}
  - model: $WORK/dpo-L$LAYERS
    parameters: {$params}
$dtype
EOF
}

measure() {  # impl method arithmetic command...
  local impl=$1 method=$2 arithmetic=$3
  shift 3
  rm -rf "$WORK/out"
  # Wall time and the peak RSS of the one child this wrapper runs.
  $PY - "$impl" "$method" "$arithmetic" "$@" <<'PY' >>"$RESULTS"
import json, resource, subprocess, sys, time
impl, method, arithmetic, *command = sys.argv[1:]
start = time.perf_counter()
r = subprocess.run(command, capture_output=True, text=True)
seconds = time.perf_counter() - start
if r.returncode != 0:
    sys.exit(f"{impl} {method} failed: {r.stderr[-1500:]}")
print(json.dumps({"impl": impl, "method": method, "arithmetic": arithmetic, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
PY
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $REPEATS repeats" >&2
for ((r = 0; r < REPEATS; ++r)); do
  for method in task_arithmetic ties dare_ties; do
    config $method $'dtype: float32\nout_dtype: bfloat16' >"$WORK/$method.yaml"
    config $method 'dtype: bfloat16' >"$WORK/$method-bf16.yaml"
    measure paft $method fp32 "$MERGER" merge "$WORK/$method.yaml" "$WORK/out" --threads="$THREADS"
    measure mergekit $method fp32 .venv/bin/mergekit-yaml "$WORK/$method.yaml" "$WORK/out" \
      --quiet --num-threads "$THREADS"
    measure mergekit $method bf16 .venv/bin/mergekit-yaml "$WORK/$method-bf16.yaml" "$WORK/out" \
      --quiet --num-threads "$THREADS"
  done
done

$PY - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(impl, method, arithmetic, key):
    v = [r[key] for r in rows if (r["impl"], r["method"], r["arithmetic"]) == (impl, method, arithmetic)]
    return statistics.median(v) if v else float("nan")
print("| method | paft s | mergekit s (fp32) | mergekit / paft time | paft peak RSS MiB "
      "| mergekit peak RSS MiB (fp32) | paft / mergekit memory | mergekit bf16 arithmetic: s, MiB |")
print("|---|---|---|---|---|---|---|---|")
for method in ("task_arithmetic", "ties", "dare_ties"):
    a, b = med("paft", method, "fp32", "seconds"), med("mergekit", method, "fp32", "seconds")
    m, n = med("paft", method, "fp32", "peak_rss_mib"), med("mergekit", method, "fp32", "peak_rss_mib")
    c, d = med("mergekit", method, "bf16", "seconds"), med("mergekit", method, "bf16", "peak_rss_mib")
    print(f"| {method} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {m:.0f} | {n:.0f} | {m / n:.2f} | "
          f"{c:.1f}, {d:.0f} |")
PY
