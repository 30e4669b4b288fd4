"""Shared by the ecosystem tests: Hugging Face model folders with random weights written as
transformers reads them (config.json, model.safetensors, Llama 3's tokenizer files), the token ids
of a .paftds file (common/token_dataset.h) read back, `paft-worker eval` run on a folder, and the
completion log-probs a transformers or PEFT model gives the same ids; where the tools are, and the
skip without Llama 3's tokenizer."""
import json
import os
import struct
import subprocess
import sys

import torch
from safetensors.torch import save_file

VOCAB = 128256  # Llama 3's tokenizer
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
         "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
         "max_position_embeddings": 256, "torch_dtype": "float32", "hidden_act": "silu",
         "tie_word_embeddings": False, "rope_theta": 10000.0}


def build_tools(argv):
    """paft-worker and paft-merger in the build folder argv[1]."""
    build = os.path.abspath(argv[1])
    return os.path.join(build, "worker", "paft-worker"), os.path.join(build, "merger", "paft-merger")


def require_llama3_tokenizer(cache):
    """Exits 77 (skipped) where the cache lacks Llama 3's tokenizer files."""
    if not os.path.isfile(os.path.join(cache, "llama3", "tokenizer.json")):
        print(f"skipped: no Llama 3 tokenizer in {cache} (tests/tokenizer/golden/fetch_tokenizers.sh)")
        sys.exit(77)


def tokenizer_cache(argv):
    """The tokenizer cache: argv[2], else $PAFT_TOKENIZER_CACHE, else fetch_tokenizers.sh's."""
    return argv[2] if len(argv) > 2 else os.environ.get(
        "PAFT_TOKENIZER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "paft", "tokenizers"))


def write_model(path, config, seed, cache, tokenizer="llama3"):
    """A model folder with random weights and the tokenizer files of `tokenizer` in `cache`."""
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
        with open(os.path.join(cache, tokenizer, name), "rb") as src, \
                open(os.path.join(path, name), "wb") as dst:
            dst.write(src.read())


def read_paftds_segments(path):
    """A prepared dataset (common/token_dataset.h): its kind ("sft" or "preference") and each
    example's three segments -- sft: prompt, completion, loss runs; preference: prompt, chosen,
    rejected."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"PAFTDS01", path
    (length,) = struct.unpack_from("<Q", data, 8)
    header = json.loads(data[16:16 + length])
    index, tokens = 16 + length, 16 + length + 24 * header["examples"]
    out = []
    for i in range(header["examples"]):
        first, a, b, c = struct.unpack_from("<QIII", data, index + 24 * i)
        ids = list(struct.unpack_from(f"<{a + b + c}I", data, tokens + 4 * first))
        out.append((ids[:a], ids[a:a + b], ids[a + b:]))
    return header["kind"], out


def read_paftds(path):
    """The examples of a prepared dataset: (prompt, completion) ids."""
    return [(prompt, completion) for prompt, completion, _ in read_paftds_segments(path)[1]]


def paft_eval(worker, model, dataset, adapter=None):
    """`paft-worker eval`'s per-example report and the (prompt, completion) ids it scored."""
    command = [worker, "eval", f"--base={model}", f"--dataset={dataset}", "--max_new_tokens=1",
               "--threads=1"] + ([f"--adapter={adapter}"] if adapter else [])
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"paft-worker eval on {model} failed:\n{r.stderr[-3000:]}")
    report = json.loads(r.stdout)
    return report["per_example"], read_paftds(report["dataset"])


def completion_log_probs(model, examples):
    """Each example's summed completion log-prob under a transformers (or PEFT) model, fp32."""
    out = []
    for prompt, completion in examples:
        ids = prompt + completion
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1))
        out.append(float(lp.squeeze(1)[len(prompt) - 1:].sum()))
    return out
