#!/usr/bin/python3
"""Goldens for merging LoRA adapters the way PEFT's LoraModel.add_weighted_adapter does.

Run with Debian's python3-torch (1.13): /usr/bin/python3 make_peft_merge_goldens.py
Writes peft_merge/: a base model, three PEFT adapters and cases.json (each case's inputs and the
merged lora_A / lora_B of every module).

The reference follows PEFT's source (huggingface/peft, src/peft/utils/merge_utils.py and
LoraModel._generalized_task_arithmetic_weighted_adapter / _svd_generalized_..., main as of
2026-08), written here with torch ops:
  - adapter space: per module, A-stack weights sign(w*s)*sqrt(|w*s|), B-stack weights sqrt(|w*s|),
    each stack combined on its own by merge_utils' task_arithmetic / ties / magnitude_prune;
  - svd space: deltas s*B@A combined with weights w (paft applies s once; PEFT's code multiplies
    by w*s a second time -- equal when s = 1), then torch.linalg.svd truncated to the rank,
    U@diag(S) -> B, Vh -> A, signs fixed so each row of A has its largest-|x| entry positive,
    optional clamp at the torch.quantile of all entries of both.
DARE's random pruning cannot be reproduced bit for bit (another random stream); its cases here
use density 1 (no pruning), and the C++ tests check its statistics.
"""
import json
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peft_merge")


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# --- merge_utils, as PEFT defines them
def prune_magnitude(t, density):
    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def combine(kind, tensors, weights, density):
    w = torch.tensor(weights, dtype=torch.float64)
    if kind in ("ties", "magnitude_prune"):
        tensors = [prune_magnitude(t, density) for t in tensors]
    stacked = torch.stack(tensors, dim=0)
    weighted = stacked * w.view((-1,) + (1,) * (stacked.dim() - 1))
    if kind in ("linear", "task_arithmetic", "magnitude_prune", "dare_linear"):  # dare: density 1
        return weighted.sum(dim=0)
    if kind == "ties":
        sign = stacked.sign()
        majority = torch.where(stacked.sum(dim=0) >= 0, 1.0, -1.0).to(stacked.dtype)
        mask = sign == majority
        return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)
    raise ValueError(kind)


def scale(config):
    return config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])


def merge_adapter_space(kind, adapters, weights, density, modules):
    if len(adapters) == 1:
        kind = "linear"
    out = {}
    for m in modules:
        present = [(a, w) for a, w in zip(adapters, weights) if m in a["A"]]
        wa, wb, As, Bs = [], [], [], []
        for a, w in present:
            ws = w * scale(a["config"])
            root = abs(ws) ** 0.5
            wa.append(root if ws >= 0 else -root)
            wb.append(root)
            As.append(a["A"][m])
            Bs.append(a["B"][m])
        out[m] = (combine(kind, As, wa, density), combine(kind, Bs, wb, density))
    return out


def merge_svd_space(kind, adapters, weights, density, modules, rank, clamp):
    if len(adapters) == 1:
        kind = "linear"
    out = {}
    for m in modules:
        present = [(a, w) for a, w in zip(adapters, weights) if m in a["A"]]
        deltas = [scale(a["config"]) * (a["B"][m] @ a["A"][m]) for a, _ in present]
        d = combine(kind, deltas, [w for _, w in present], density)
        U, S, Vh = torch.linalg.svd(d, full_matrices=False)
        U = U[:, :rank] @ torch.diag(S[:rank])
        Vh = Vh[:rank, :]
        for j in range(rank):
            i = int(torch.argmax(Vh[j].abs()))
            if Vh[j, i] < 0:
                Vh[j] = -Vh[j]
                U[:, j] = -U[:, j]
        if clamp is not None:
            hi = torch.quantile(torch.cat([U.flatten(), Vh.flatten()]), clamp)
            U = U.clamp(-hi, hi)
            Vh = Vh.clamp(-hi, hi)
        out[m] = (Vh, U)
    return out


def main():
    torch.manual_seed(20261201)
    os.makedirs(os.path.join(OUT, "base"), exist_ok=True)
    shapes = {
        "model.layers.0.self_attn.q_proj": (8, 8),
        "model.layers.0.self_attn.v_proj": (4, 8),
        "model.layers.1.mlp.down_proj": (8, 12),
    }
    base = {"model.embed_tokens.weight": torch.randn(16, 8, dtype=torch.float64)}
    for m, (o, i) in shapes.items():
        base[m + ".weight"] = torch.randn(o, i, dtype=torch.float64)
    write_safetensors(os.path.join(OUT, "base", "model.safetensors"), base)
    with open(os.path.join(OUT, "base", "config.json"), "w") as f:
        json.dump({"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
                   "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                   "eos_token_id": 0}, f, indent=2)

    specs = {  # name: (r, alpha, use_rslora, modules)
        "a1": (3, 6.0, False, list(shapes)),
        "a2": (3, 4.0, True, ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]),
        "a3": (2, 2.0, False, ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]),
    }
    adapters = {}
    for name, (r, alpha, rslora, modules) in specs.items():
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
                  "use_rslora": rslora, "target_modules": sorted({m.split(".")[-1] for m in modules}),
                  "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False}
        A = {m: torch.randn(r, shapes[m][1], dtype=torch.float64).to(torch.float32).to(torch.float64) for m in modules}
        B = {m: torch.randn(shapes[m][0], r, dtype=torch.float64).to(torch.float32).to(torch.float64) for m in modules}
        tensors = {}
        for m in modules:
            tensors[f"base_model.model.{m}.lora_A.weight"] = A[m]
            tensors[f"base_model.model.{m}.lora_B.weight"] = B[m]
        write_safetensors(os.path.join(folder, "adapter_model.safetensors"), tensors)
        with open(os.path.join(folder, "adapter_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        adapters[name] = {"config": config, "A": A, "B": B}

    cases = [  # name, space, method, inputs, weights, density, svd_rank, clamp
        ("adapter_linear", "adapter", "linear", ["a1", "a2"], [0.7, -0.4], 1.0, 0, None),
        ("adapter_ties", "adapter", "ties", ["a1", "a2"], [1.0, 1.0], 0.5, 0, None),
        ("adapter_magnitude_prune", "adapter", "magnitude_prune", ["a1", "a2"], [0.7, 0.5], 0.6, 0, None),
        ("adapter_dare_linear_density_1", "adapter", "dare_linear", ["a1", "a2"], [0.5, 0.5], 1.0, 0, None),
        ("adapter_single_input_is_linear", "adapter", "ties", ["a1"], [0.8], 0.5, 0, None),
        ("svd_linear_mixed_ranks", "adapter_svd", "task_arithmetic", ["a1", "a3"], [1.0, 1.0], 1.0, 0, None),
        ("svd_ties_rank2_clamp", "adapter_svd", "ties", ["a1", "a2"], [1.0, 0.6], 0.5, 2, 0.9),
        ("svd_magnitude_prune", "adapter_svd", "magnitude_prune", ["a1", "a3"], [0.9, -0.5], 0.5, 0, None),
    ]
    out = []
    for name, space, method, inputs, weights, density, svd_rank, clamp in cases:
        chosen = [adapters[i] for i in inputs]
        modules = sorted({m for a in chosen for m in a["A"]})
        if space == "adapter":
            merged = merge_adapter_space(method, chosen, weights, density, modules)
            rank = chosen[0]["config"]["r"]
        else:
            rank = svd_rank or max(a["config"]["r"] for a in chosen)
            merged = merge_svd_space(method, chosen, weights, density, modules, rank, clamp)
        out.append({
            "name": name, "merge_space": space, "method": method, "inputs": inputs, "weights": weights,
            "density": density, "svd_rank": svd_rank, "svd_clamp": clamp, "rank": rank,
            "modules": {m: {"A": merged[m][0].reshape(-1).tolist(), "B": merged[m][1].reshape(-1).tolist(),
                            "A_shape": list(merged[m][0].shape), "B_shape": list(merged[m][1].shape)}
                        for m in modules},
        })
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "make_peft_merge_goldens.py, torch " + torch.__version__, "cases": out}, f, indent=1)


if __name__ == "__main__":
    main()
