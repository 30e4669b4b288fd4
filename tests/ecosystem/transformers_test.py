#!/usr/bin/env python3
"""transformers itself judges paft's model code and the folders paft writes: for Llama (untied,
with Llama 3's rope scaling), Llama with tied embeddings, Qwen2 (q/k/v biases, tied) and Mistral
(a sliding window shorter than the sequences), models with random weights written here as
Hugging Face folders (config.json, model.safetensors, Llama 3's tokenizer files), then
  1. `paft-worker eval` on a prompt/completion dataset: each example's completion log-prob must
     equal transformers' (AutoModelForCausalLM, fp32) on the very token ids paft trained on, read
     back from the prepared .paftds;
  2. a task_arithmetic merge of two such models by `paft-merger merge`: transformers loads the
     folder paft wrote, and its log-probs equal `paft-worker eval`'s on it.

  transformers_test.py BUILD_DIR [CACHE]    exit 0: equal; 1: a difference; 77: transformers or
                                            the tokenizer files missing"""
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1])
CACHE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
    "PAFT_TOKENIZER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "paft", "tokenizers"))
WORKER = os.path.join(BUILD, "worker", "paft-worker")
MERGER = os.path.join(BUILD, "merger", "paft-merger")
TOLERANCE = 1e-4  # on each example's summed completion log-prob, fp32
VOCAB = 128256    # Llama 3's tokenizer

BASE = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256, "torch_dtype": "float32", "hidden_act": "silu"}
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


def write_model(path, config, seed):
    g = torch.Generator().manual_seed(seed)
    h, mlp, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    t = {"model.embed_tokens.weight": rnd(v, h), "model.norm.weight": 1 + rnd(h) * 0.3}
    if not config["tie_word_embeddings"]:
        t["lm_head.weight"] = rnd(v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.k_proj.weight": rnd(kv, h),
                  p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.o_proj.weight": rnd(h, h),
                  p + "mlp.gate_proj.weight": rnd(mlp, h), p + "mlp.up_proj.weight": rnd(mlp, h),
                  p + "mlp.down_proj.weight": rnd(h, mlp),
                  p + "input_layernorm.weight": 1 + rnd(h) * 0.3,
                  p + "post_attention_layernorm.weight": 1 + rnd(h) * 0.3})
        if config["model_type"] == "qwen2":
            t.update({p + "self_attn.q_proj.bias": rnd(h), p + "self_attn.k_proj.bias": rnd(kv),
                      p + "self_attn.v_proj.bias": rnd(kv)})
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file(t, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(CACHE, "llama3", name), "rb") as src, \
                open(os.path.join(path, name), "wb") as dst:
            dst.write(src.read())


def read_paftds(path):
    """The examples of a prepared dataset (common/token_dataset.h): (prompt, completion) ids."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"PAFTDS01", path
    (length,) = struct.unpack_from("<Q", data, 8)
    header = json.loads(data[16:16 + length])
    index, tokens = 16 + length, 16 + length + 24 * header["examples"]
    out = []
    for i in range(header["examples"]):
        first, a, b, c = struct.unpack_from("<QIII", data, index + 24 * i)
        ids = struct.unpack_from(f"<{a + b + c}I", data, tokens + 4 * first)
        out.append((list(ids[:a]), list(ids[a:a + b])))
    return out


def paft_eval(model, dataset, work):
    r = subprocess.run([WORKER, "eval", f"--base={model}", f"--dataset={dataset}",
                        "--max_new_tokens=1", "--threads=1"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"paft-worker eval on {model} failed:\n{r.stderr[-3000:]}")
    report = json.loads(r.stdout)
    return report["per_example"], read_paftds(report["dataset"])


def transformers_log_probs(model_dir, examples):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for prompt, completion in examples:
        ids = prompt + completion
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1))
        out.append(float(lp.squeeze(1)[len(prompt) - 1:].sum()))
    return out


def compare(label, ours, examples, model_dir, failures):
    theirs = transformers_log_probs(model_dir, examples)
    worst = max(abs(o["log_prob"] - t) for o, t in zip(ours, theirs))
    tokens = sum(len(c) for _, c in examples)
    print(f"{label}: {len(examples)} examples, {tokens} completion tokens, log-probs "
          f"{[round(t, 4) for t in theirs]}: worst |paft - transformers| {worst:.2e}")
    if worst > TOLERANCE or any(o["tokens"] != len(c) for o, (_, c) in zip(ours, examples)):
        failures.append(f"{label}: {worst:.3g}")


def main():
    if not os.path.isfile(os.path.join(CACHE, "llama3", "tokenizer.json")):
        print(f"skipped: no Llama 3 tokenizer in {CACHE} (tests/tokenizer/golden/fetch_tokenizers.sh)")
        return 77
    torch.set_num_threads(1)
    failures = []
    with tempfile.TemporaryDirectory(prefix="paft-transformers-") as work:
        dataset = os.path.join(work, "data.jsonl")
        with open(dataset, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in EXAMPLES))
        for seed, (family, config) in enumerate(FAMILIES.items()):
            model = os.path.join(work, family)
            write_model(model, config, seed)
            ours, examples = paft_eval(model, dataset, work)
            compare(family, ours, examples, model, failures)
        # A merge paft writes, loaded by transformers.
        write_model(os.path.join(work, "other"), FAMILIES["llama-rope-scaling"], 99)
        with open(os.path.join(work, "merge.yaml"), "w") as f:
            f.write("merge_method: task_arithmetic\nbase_model: llama-rope-scaling\nmodels:\n"
                    "  - model: other\n    parameters: {weight: 0.5}\ndtype: float32\n")
        merged = os.path.join(work, "merged")
        r = subprocess.run([MERGER, "merge", os.path.join(work, "merge.yaml"), merged],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"paft-merger merge failed: {r.stderr[-2000:]}")
        else:
            for name in glob.glob(os.path.join(CACHE, "llama3", "tokenizer*.json")):
                if not os.path.exists(os.path.join(merged, os.path.basename(name))):
                    failures.append(f"the merged folder lacks {os.path.basename(name)}")
            ours, examples = paft_eval(merged, dataset, work)
            compare("task_arithmetic merge written by paft-merger", ours, examples, merged, failures)
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
