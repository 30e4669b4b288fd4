#!/usr/bin/env python3
"""PEFT itself judges the LoRA adapters paft trains and merges. On a Llama-shaped base with
random weights (Llama 3's tokenizer), `paft-worker train` trains two adapters for a few steps
(r 4, alpha 8 on q/v/down_proj; the second with rsLoRA), then:
  1. PeftModel.from_pretrained loads each, and its completion log-probs equal
     `paft-worker eval --adapter`'s on the same ids;
  2. PEFT's merge_and_unload() equals the model `paft-worker merge` writes from the adapter alone
     (task_arithmetic, weight 1) tensor for tensor;
  3. the adapters merged in adapter space by paft-merger (`merge_space: adapter`, ties at density
     0.5, and linear) equal PEFT's own add_weighted_adapter of the same two adapters (the
     effective deltas scaling · B · A of every module), and PEFT loads the folder paft wrote with
     the log-probs `paft-worker eval` gives it;
  4. `merge_space: adapter_svd` (linear, and ties at density 0.5) equals PEFT's `svd` and
     `ties_svd` combinations, on copies of the two adapters rescaled to scaling 1 (PEFT's SVD
     path applies each adapter's scaling twice; with scaling 1 both read the same deltas).

  peft_test.py BUILD_DIR [CACHE]     exit 0: equal; 1: a difference; 77: PEFT or the tokenizer
                                     files missing"""
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from ecosystem_common import (LLAMA, build_tools, completion_log_probs, paft_eval,
                                  require_llama3_tokenizer, tokenizer_cache, write_model)
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

CACHE = tokenizer_cache(sys.argv)
WORKER, MERGER = build_tools(sys.argv)
LOG_PROB_TOLERANCE = 1e-4  # nats, on each example's summed completion log-prob (fp32)
TENSOR_TOLERANCE = 1e-6
SVD_TOLERANCE = 1e-5  # relative to the largest entry: PEFT's SVD runs in fp32, paft's in fp64
EXAMPLES = [
    {"prompt": "Question: what comes after five? Answer:", "completion": " six."},
    {"prompt": "Name a colour of the sky:", "completion": " blue, or grey when it rains."},
    {"prompt": "def add(a, b):\n", "completion": "    return a + b\n"},
    {"prompt": "The capital of France is", "completion": " Paris."},
]
JOB = """name: peft-check
base_model: base
output_dir: {out}
sft:
  pool: sft
  world_size: 1
  dataset: {{path: data.jsonl}}
  sft: {{}}
  lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj], use_rslora: {rslora}}}
  optimizer: {{learning_rate: 0.05}}
  batch: {{per_device_batch_size: 2}}
  max_steps: 4
  seed: {seed}
  precision: fp32
alignment:
  pool: align
  world_size: 1
  dataset: {{path: data.jsonl}}
  dpo: {{}}
merge:
  method: ties
"""


def run(command, what):
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def train(work, name, rslora, seed):
    job = os.path.join(work, f"{name}.yaml")
    with open(job, "w") as f:
        f.write(JOB.format(out=name, rslora="true" if rslora else "false", seed=seed))
    run([WORKER, "train", job, "--branch=sft", "--threads=1"], f"paft-worker train {name}")
    checkpoints = os.path.join(work, name, "sft", "checkpoints")
    return os.path.join(checkpoints, sorted(os.listdir(checkpoints))[-1])


def merge(work, name, config):
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config)
    out = os.path.join(work, name)
    run([MERGER, "merge", path, out], f"paft-merger merge {name}")
    return out


def base_model(work):
    return AutoModelForCausalLM.from_pretrained(os.path.join(work, "base"), dtype=torch.float32).eval()


def effective_deltas(peft_model, adapter):
    """scaling · B · A of every LoRA module of `adapter`, by module path."""
    out = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and adapter in module.lora_A:
            a = module.lora_A[adapter].weight.detach().double()
            b = module.lora_B[adapter].weight.detach().double()
            out[name.split("base_model.model.")[-1]] = module.scaling[adapter] * (b @ a)
    return out


def unit_scaling_copy(adapter, out):
    """A copy of a PEFT adapter folder with scaling 1 (lora_alpha = r, no rsLoRA) and the same
    effective deltas: every lora_B scaled by the adapter's scaling."""
    config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r = config["r"]
    scaling = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    tensors = {k: (v * scaling if "lora_B" in k else v).contiguous() for k, v in tensors.items()}
    config.update(lora_alpha=r, use_rslora=False)
    os.makedirs(out)
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return out


def main():
    require_llama3_tokenizer(CACHE)
    torch.set_num_threads(1)
    failures = []

    def check(label, worst, tolerance):
        print(f"{label}: worst difference {worst:.2e} (tolerance {tolerance:g})")
        if worst > tolerance:
            failures.append(f"{label}: {worst:.3g}")

    with tempfile.TemporaryDirectory(prefix="paft-peft-") as work:
        os.chdir(work)
        write_model(os.path.join(work, "base"), LLAMA, 0, CACHE)
        dataset = os.path.join(work, "data.jsonl")
        with open(dataset, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in EXAMPLES))
        adapters = {"plain": train(work, "plain", False, 1), "rslora": train(work, "rslora", True, 2)}

        for name, adapter in adapters.items():
            config = json.load(open(os.path.join(adapter, "adapter_config.json")))
            ours, examples = paft_eval(WORKER, os.path.join(work, "base"), dataset, adapter)
            model = PeftModel.from_pretrained(base_model(work), adapter).eval()
            theirs = completion_log_probs(model, examples)
            check(f"{name} adapter (use_rslora {config.get('use_rslora')}): PeftModel log-probs "
                  f"vs paft-worker eval", max(abs(o["log_prob"] - t) for o, t in zip(ours, theirs)),
                  LOG_PROB_TOLERANCE)
            unloaded = model.merge_and_unload().state_dict()
            merged = merge(work, f"{name}-merged", f"merge_method: task_arithmetic\nbase_model: base\n"
                           f"models:\n  - model: {adapter}\n    parameters: {{weight: 1.0}}\n"
                           f"dtype: float32\n")
            written = load_file(os.path.join(merged, "model.safetensors"))
            check(f"{name} adapter: merge_and_unload() vs paft-merger's merged model",
                  max((unloaded[k].double() - written[k].double()).abs().max().item() for k in written),
                  TENSOR_TOLERANCE)

        def merged_both_ways(inputs, space, method, combination):
            """paft-merger's and PEFT's merge of the two adapters `inputs` (weights 1 and 0.7,
            ties at density 0.5): the merged folder paft wrote and both sides' s·B·A by module."""
            extra = "density: 0.5, " if method == "ties" else ""
            merged = merge(work, f"{space}-{method}",
                           f"merge_method: {method}\nbase_model: base\nmerge_space: {space}\n"
                           f"output: adapter\nmodels:\n"
                           f"  - model: {inputs['plain']}\n    parameters: {{{extra}weight: 1.0}}\n"
                           f"  - model: {inputs['rslora']}\n    parameters: {{{extra}weight: 0.7}}\n")
            model = PeftModel.from_pretrained(base_model(work), inputs["plain"], adapter_name="plain")
            model.load_adapter(inputs["rslora"], adapter_name="rslora")
            kwargs = {"density": 0.5} if method == "ties" else {}
            model.add_weighted_adapter(["plain", "rslora"], [1.0, 0.7], "peft",
                                       combination_type=combination, **kwargs)
            model.load_adapter(merged, adapter_name="paft")
            theirs, ours = effective_deltas(model, "peft"), effective_deltas(model, "paft")
            if sorted(theirs) != sorted(ours):
                failures.append(f"{method} in {space} space: modules differ")
                return merged, None
            largest = max(d.abs().max().item() for d in theirs.values())
            if largest < 1e-4:
                failures.append(f"{method} in {space} space: the merged deltas are all but zero")
            return merged, (max((theirs[k] - ours[k]).abs().max().item() for k in theirs), largest)

        for method, combination in (("ties", "ties"), ("linear", "linear")):
            merged, worst = merged_both_ways(adapters, "adapter", method, combination)
            if worst is None:
                continue
            check(f"{method} in adapter space: paft-merger vs PEFT add_weighted_adapter "
                  f"(scaling B A)", worst[0], TENSOR_TOLERANCE)
            loaded = PeftModel.from_pretrained(base_model(work), merged).eval()
            ours_eval, examples = paft_eval(WORKER, os.path.join(work, "base"), dataset, merged)
            theirs_lp = completion_log_probs(loaded, examples)
            check(f"{method} adapter written by paft-merger: PeftModel log-probs vs paft-worker eval",
                  max(abs(o["log_prob"] - t) for o, t in zip(ours_eval, theirs_lp)),
                  LOG_PROB_TOLERANCE)

        # adapter_svd against PEFT's svd / ties_svd, on scaling-1 copies.
        unit = {name: unit_scaling_copy(path, os.path.join(work, f"{name}-unit"))
                for name, path in adapters.items()}
        for method, combination in (("linear", "svd"), ("ties", "ties_svd")):
            _, worst = merged_both_ways(unit, "adapter_svd", method, combination)
            if worst is not None:
                check(f"{method} in adapter_svd space: paft-merger vs PEFT {combination} (scaling "
                      f"B A, relative to the largest entry {worst[1]:.3g})", worst[0] / worst[1],
                      SVD_TOLERANCE)
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
