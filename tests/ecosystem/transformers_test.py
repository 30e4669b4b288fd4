#!/usr/bin/env python3
"""transformers itself judges paft's model code and the folders paft writes: for Llama (untied,
with Llama 3's rope scaling), Llama with tied embeddings, Qwen2 (q/k/v biases, tied) and Mistral
(a sliding window shorter than the sequences), models with random weights written here as
Hugging Face folders (config.json, model.safetensors, Llama 3's tokenizer files), then
  1. `paft-worker eval` on a prompt/completion dataset: each example's completion log-prob must
     equal transformers' (AutoModelForCausalLM, fp32) on the very token ids paft trained on, read
     back from the prepared .paftds;
  2. for each family, a merge of two such models by `paft-merger merge` (task_arithmetic, or
     ties for Qwen2 and Mistral): transformers loads the folder paft wrote, and its log-probs equal
     `paft-worker eval`'s on it.

  transformers_test.py BUILD_DIR [CACHE]    exit 0: equal; 1: a difference; 77: transformers or
                                            the tokenizer files missing"""
import glob
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
    from transformers import AutoModelForCausalLM

    from ecosystem_common import (LLAMA, build_tools, completion_log_probs, paft_eval,
                                  require_llama3_tokenizer, tokenizer_cache, write_model)
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

CACHE = tokenizer_cache(sys.argv)
WORKER, MERGER = build_tools(sys.argv)
TOLERANCE = 1e-4  # on each example's summed completion log-prob, fp32

BASE = {k: v for k, v in LLAMA.items() if k not in ("architectures", "model_type", "rope_theta")}
FAMILIES = {
    "llama-rope-scaling": dict(BASE, architectures=["LlamaForCausalLM"], model_type="llama",
                               tie_word_embeddings=False, rope_theta=500000.0,
                               rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 64}),
    "llama-tied": dict(BASE, architectures=["LlamaForCausalLM"], model_type="llama",
                       tie_word_embeddings=True, rope_theta=10000.0),
    "qwen2": dict(BASE, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                  tie_word_embeddings=True, rope_theta=1000000.0, use_sliding_window=False),
    "mistral-sliding-window": dict(BASE, architectures=["MistralForCausalLM"],
                                   model_type="mistral", tie_word_embeddings=False,
                                   rope_theta=10000.0, sliding_window=8),
}
EXAMPLES = [
    {"prompt": "Question: what comes after five? Answer:", "completion": " six."},
    {"prompt": "Translate to French: the cat sleeps on the warm windowsill every afternoon.",
     "completion": " Le chat dort sur le rebord chaud de la fenêtre chaque après-midi."},
    {"prompt": "def add(a, b):\n", "completion": "    return a + b  # 😀 done\n"},
]


def compare(label, ours, examples, model_dir, failures):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    theirs = completion_log_probs(model, examples)
    worst = max(abs(o["log_prob"] - t) for o, t in zip(ours, theirs))
    tokens = sum(len(c) for _, c in examples)
    print(f"{label}: {len(examples)} examples, {tokens} completion tokens, log-probs "
          f"{[round(t, 4) for t in theirs]}: worst |paft - transformers| {worst:.2e}")
    if worst > TOLERANCE or any(o["tokens"] != len(c) for o, (_, c) in zip(ours, examples)):
        failures.append(f"{label}: {worst:.3g}")


def main():
    require_llama3_tokenizer(CACHE)
    torch.set_num_threads(1)
    failures = []
    with tempfile.TemporaryDirectory(prefix="paft-transformers-") as work:
        dataset = os.path.join(work, "data.jsonl")
        with open(dataset, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in EXAMPLES))
        for seed, (family, config) in enumerate(FAMILIES.items()):
            model = os.path.join(work, family)
            write_model(model, config, seed, CACHE)
            ours, examples = paft_eval(WORKER, model, dataset)
            compare(family, ours, examples, model, failures)
            # A merge paft writes of this family, loaded by transformers.
            write_model(os.path.join(work, f"{family}-other"), config, 50 + seed, CACHE)
            method = "ties" if family in ("qwen2", "mistral-sliding-window") else "task_arithmetic"
            density = ", density: 0.5" if method == "ties" else ""
            with open(os.path.join(work, f"{family}-merge.yaml"), "w") as f:
                f.write(f"merge_method: {method}\nbase_model: {family}\nmodels:\n"
                        f"  - model: {family}-other\n    parameters: {{weight: 0.5{density}}}\n"
                        f"dtype: float32\n")
            merged = os.path.join(work, f"{family}-merged")
            r = subprocess.run([MERGER, "merge", os.path.join(work, f"{family}-merge.yaml"), merged],
                               capture_output=True, text=True, cwd=work)
            if r.returncode != 0:
                failures.append(f"paft-merger merge of {family} failed: {r.stderr[-2000:]}")
                continue
            for name in glob.glob(os.path.join(CACHE, "llama3", "tokenizer*.json")):
                if not os.path.exists(os.path.join(merged, os.path.basename(name))):
                    failures.append(f"the merged {family} folder lacks {os.path.basename(name)}")
            ours, examples = paft_eval(WORKER, merged, dataset)
            compare(f"{family}: {method} merge written by paft-merger", ours, examples, merged,
                    failures)
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
