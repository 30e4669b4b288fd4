#!/usr/bin/env python3
"""paft-merger merge against mergekit itself: the same YAML config, run by `mergekit-yaml` (the
pinned PyPI mergekit, requirements/test.txt) and by `paft-merger merge`, must give the same
tensors, for every method both implement and the config forms users write (per-model and
top-level parameters, normalize, int8_mask, lambda, rescale, out_dtype).

  mergekit_test.py BUILD_DIR     exit 0: all equal; 1: a difference; 77: mergekit not installed

Inputs: a Llama-shaped base with random weights, an "SFT" model (a dense delta) and a "DPO"
model (a sparse delta whose signs often disagree with the SFT's), fp32 safetensors written here.
DARE's masks are random and the two tools draw them from different generators: at density 1
(nothing dropped) they must be equal; below it the kept fraction and the rescaled magnitude are
compared instead (docs/merger.md#checked-against-mergekit). `paft-merger inspect --density`'s
interference report is checked against mergekit's own sparsify and get_mask on the same inputs."""
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import mergekit  # noqa: F401  (the mergekit-yaml next to this interpreter is run)
    from safetensors.torch import load_file, save_file
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1])
MERGER = os.path.join(BUILD, "merger", "paft-merger")
MERGEKIT = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
CONFIG = """{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96,
  "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "max_position_embeddings": 128,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32"}"""


def llama_shapes(h=32, mlp=64, layers=2, vocab=96, kv=16):
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,),
              "lm_head.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (mlp, h), p + "mlp.up_proj.weight": (mlp, h),
                       p + "mlp.down_proj.weight": (h, mlp), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    return shapes


def write_model(path, tensors):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(CONFIG)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})


def make_models(root):
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) * 0.02 + (1.0 if k.endswith("norm.weight") else 0.0)
            for k, s in llama_shapes().items()}
    sft = {k: v + torch.randn(v.shape, generator=g) * 0.01 for k, v in base.items()}
    dpo = {}
    for k, v in base.items():
        keep = torch.rand(v.shape, generator=g) < 0.2
        # A sparse delta, partly opposed to the SFT's: TIES' sign election has work to do.
        opposed = -(sft[k] - v) * 1.5 + torch.randn(v.shape, generator=g) * 0.005
        dpo[k] = v + torch.where(keep, opposed, torch.zeros_like(v))
    for name, tensors in (("base", base), ("sft", sft), ("dpo", dpo)):
        write_model(os.path.join(root, name), tensors)


# (name, YAML, tolerance on the largest absolute difference, or "bf16": see that case); the paths
# are the config folder's.
MODELS = "base_model: base\nmodels:\n"
CASES = [
    ("linear without a base_model (a weighted average; normalize by default)", """models:
  - model: sft
    parameters: {weight: 0.3}
  - model: dpo
    parameters: {weight: 0.9}
merge_method: linear
dtype: float32
""", 1e-6),
    ("linear, the base listed among the models, normalize off", MODELS + """  - model: base
    parameters: {weight: 0.5}
  - model: sft
    parameters: {weight: 0.3}
  - model: dpo
    parameters: {weight: 0.4}
merge_method: linear
parameters: {normalize: false}
dtype: float32
""", 1e-6),
    ("task_arithmetic", MODELS + """  - model: sft
    parameters: {weight: 0.7}
  - model: dpo
    parameters: {weight: 0.5}
merge_method: task_arithmetic
parameters: {lambda: 0.9}
dtype: float32
""", 1e-6),
    ("ties, top-level density", MODELS + """  - model: sft
    parameters: {weight: 1.0}
  - model: dpo
    parameters: {weight: 0.6}
  - model: base
merge_method: ties
parameters: {density: 0.5}
dtype: float32
""", 1e-6),
    ("ties, per-model densities, normalize off, int8_mask", MODELS + """  - model: sft
    parameters: {weight: 0.8, density: 0.3}
  - model: dpo
    parameters: {weight: 0.4, density: 0.7}
merge_method: ties
parameters: {normalize: false, int8_mask: true}
dtype: float32
""", 1e-6),
    ("ties, a top-level weight", MODELS + """  - model: sft
  - model: dpo
    parameters: {weight: 0.3}
merge_method: ties
parameters: {weight: 0.9, density: 0.6}
dtype: float32
""", 1e-6),
    ("breadcrumbs", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.8, gamma: 0.05}
  - model: dpo
    parameters: {weight: 0.5, density: 0.9}
merge_method: breadcrumbs
dtype: float32
""", 1e-6),
    ("breadcrumbs_ties, top-level gamma", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.7}
  - model: dpo
    parameters: {weight: 1.0, density: 0.7}
merge_method: breadcrumbs_ties
parameters: {gamma: 0.02}
dtype: float32
""", 1e-6),
    ("ties and breadcrumbs at a density below 1 / n of the norms", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.02}
  - model: dpo
    parameters: {weight: 1.0, density: 0.3}
merge_method: ties
dtype: float32
""", 1e-6),
    ("breadcrumbs below 1 / n", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.02, gamma: 0.01}
merge_method: breadcrumbs
dtype: float32
""", 1e-6),
    ("ties computed in fp32, written in bf16 (out_dtype)", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.5}
  - model: dpo
    parameters: {weight: 1.0, density: 0.5}
merge_method: ties
dtype: float32
out_dtype: bfloat16
""", 0.0),
    # `dtype: bfloat16` alone: mergekit computes in bf16 (its deltas, magnitude ranking and
    # sums), paft in fp32, rounding once when it writes bf16. So paft's output is mergekit's with
    # `dtype: float32, out_dtype: bfloat16` (checked here), and differs from mergekit's bf16
    # arithmetic where bf16 rounding ties magnitudes or moves the density cut (reported).
    ("ties, dtype bfloat16", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.5}
  - model: dpo
    parameters: {weight: 1.0, density: 0.5}
merge_method: ties
dtype: bfloat16
""", "bf16"),
    ("dare_ties at density 1", MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 1.0}
  - model: dpo
    parameters: {weight: 0.5, density: 1.0}
merge_method: dare_ties
dtype: float32
""", 1e-6),
    ("dare_linear at density 1, rescale off", MODELS + """  - model: sft
    parameters: {weight: 0.5, density: 1.0}
  - model: dpo
    parameters: {weight: 0.5, density: 1.0}
merge_method: dare_linear
parameters: {rescale: false}
dtype: float32
""", 1e-6),
]

# DARE below density 1: the fraction of entries the merge changes, and its L1 norm.
DARE = MODELS + """  - model: sft
    parameters: {weight: 1.0, density: 0.4}
merge_method: dare_linear
dtype: float32
"""


def run_both(work, name, config, mergekit_config=None):
    cfg, mk_cfg = os.path.join(work, f"{name}.yaml"), os.path.join(work, f"{name}-mergekit.yaml")
    for path, text in ((cfg, config), (mk_cfg, mergekit_config or config)):
        with open(path, "w") as f:
            f.write(text)
    out = {}
    for tool, command in (("mergekit", [MERGEKIT, mk_cfg, os.path.join(work, f"{name}-mergekit"),
                                        "--no-copy-tokenizer", "--no-write-model-card"]),
                          ("paft", [MERGER, "merge", cfg, os.path.join(work, f"{name}-paft")])):
        r = subprocess.run(command, cwd=work, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed on '{name}':\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        folder = os.path.join(work, f"{name}-{tool}")
        out[tool] = {}
        for file in sorted(os.listdir(folder)):
            if file.endswith(".safetensors"):
                out[tool].update(load_file(os.path.join(folder, file)))
    return out["mergekit"], out["paft"]


def inspect_against_mergekit(work, failures, density=0.3, weights=(1.0, 0.7, 0.5)):
    """paft-merger inspect's interference (trim, elect, conflicts) against mergekit's own ties
    steps: sparsify(..., magnitude) per delta, then get_mask(weighted deltas, "sum"). Inputs: the
    SFT and DPO models (opposed wherever both moved) and a third whose delta's signs are random."""
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import SparsificationMethod, sparsify
    before = len(failures)
    names = ("sft", "dpo", "other")
    g = torch.Generator().manual_seed(1)
    base = load_file(os.path.join(work, "base", "model.safetensors"))
    write_model(os.path.join(work, "other"),
                {k: v + torch.randn(v.shape, generator=g) * 0.01 for k, v in base.items()})
    r = subprocess.run([MERGER, "inspect", f"--base={work}/base"] + [f"{work}/{m}" for m in names]
                       + [f"--density={density}", "--weights=" + ",".join(map(str, weights)),
                          "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"inspect failed: {r.stderr[-2000:]}")
        return
    import json
    report = json.loads(r.stdout)
    inputs = [load_file(os.path.join(work, m, "model.safetensors")) for m in names]
    w = torch.tensor(weights, dtype=torch.float32).unsqueeze(-1)

    def expected(name):
        deltas = [m[name].float() - base[name].float() for m in inputs]
        trimmed = torch.stack([sparsify(d.flatten(), density, SparsificationMethod.magnitude)
                               for d in deltas]) * w
        mask = get_mask(trimmed, method="sum")  # kept sign == elected sign (zeros never)
        kept = trimmed != 0
        shared = kept.sum(0) >= 2
        conflict = shared & (trimmed > 0).any(0) & (trimmed < 0).any(0)
        mass = torch.stack([d.flatten().abs().double() for d in deltas])
        return {"shared": int(shared.sum()), "conflicts": int(conflict.sum()),
                "mass": mass.sum(1), "kept_mass": (mass * kept).sum(1),
                "elected_mass": (mass * (kept & mask)).sum(1),
                "conflicts_won": (conflict & kept & mask).sum(1)}

    def compare(scope, got, want):
        x = got["interference"]
        if (x["shared"], x["conflicts"]) != (want["shared"], want["conflicts"]):
            failures.append(f"inspect {scope}: shared/conflicts {x['shared']}/{x['conflicts']}, "
                            f"mergekit's {want['shared']}/{want['conflicts']}")
        for i, row in enumerate(x["inputs"]):
            if row["conflicts_won"] != int(want["conflicts_won"][i]):
                failures.append(f"inspect {scope} input {i}: {row['conflicts_won']} conflicts won, "
                                f"mergekit's {int(want['conflicts_won'][i])}")
            for key in ("mass", "kept_mass", "elected_mass"):
                a, b = row[key], float(want[key][i])
                if abs(a - b) > 1e-9 + 1e-6 * abs(b):
                    failures.append(f"inspect {scope} input {i} {key}: {a}, mergekit's {b}")

    def summed(parts):
        out = dict(parts[0])
        for p in parts[1:]:
            out = {k: out[k] + p[k] for k in out}
        return out

    per_tensor = {t["name"]: expected(t["name"]) for t in report["tensors"]}
    for t in report["tensors"]:
        compare(t["name"], t, per_tensor[t["name"]])
    layer0 = [v for k, v in per_tensor.items() if k.startswith("model.layers.0.")]
    compare("layer 0", next(l for l in report["layers"] if l["name"] == "layer 0"), summed(layer0))
    compare("total", report["total"], summed(list(per_tensor.values())))
    x = report["total"]["interference"]
    print(f"inspect --density={density} --weights={weights}: {len(report['tensors'])} tensors, "
          f"{x['shared']} shared entries, conflict rate {x['conflict_rate']:.4f}, elected share "
          + ", ".join(f"{i['elected_share']:.4f}" for i in x["inputs"]) + ": "
          + ("as mergekit's sparsify and get_mask" if len(failures) == before else "DIFFERENT"))


def main():
    failures = []
    with tempfile.TemporaryDirectory(prefix="paft-mergekit-") as work:
        make_models(work)
        for i, (name, config, tolerance) in enumerate(CASES):
            theirs, ours = run_both(work, f"case{i}", config)
            if sorted(theirs) != sorted(ours):
                failures.append(f"{name}: tensor names differ: {sorted(set(theirs) ^ set(ours))}")
                continue
            worst, where, apart, total = 0.0, "", 0, 0
            for k in theirs:
                if theirs[k].dtype != ours[k].dtype:
                    failures.append(f"{name}: {k} is {ours[k].dtype}, mergekit's {theirs[k].dtype}")
                a, b = theirs[k].double(), ours[k].double()
                d = (a - b).abs()
                apart += int((d > 2 ** -7 * torch.maximum(a.abs(), b.abs()) + 1e-6).sum())
                total += d.numel()
                if d.max().item() > worst:
                    worst, where = d.max().item(), k
            base = load_file(os.path.join(work, "base", "model.safetensors"))
            if all(torch.equal(ours[k], base[k]) for k in base):
                failures.append(f"{name}: the merge left the base unchanged")
            if tolerance == "bf16":
                print(f"{name}: against mergekit's bf16 arithmetic, {apart / total:.2%} of entries "
                      f"more than two bf16 steps apart (worst {worst:.3g}); not a failure")
                fp32 = config.replace("dtype: bfloat16", "dtype: float32\nout_dtype: bfloat16")
                theirs, _ = run_both(work, f"case{i}-fp32", config, fp32)
                worst = max((theirs[k].double() - ours[k].double()).abs().max().item() for k in theirs)
                where, tolerance = "", 0.0
                name += ", against mergekit's dtype float32 + out_dtype bfloat16"
            verdict = "ok" if worst <= tolerance else "DIFFERENT"
            print(f"{name}: worst |mergekit - paft| {worst:.3g} ({where or 'all equal'}) {verdict}")
            if worst > tolerance:
                failures.append(f"{name}: {worst:.3g} at {where} (tolerance {tolerance})")
        inspect_against_mergekit(work, failures)
        theirs, ours = run_both(work, "dare", DARE)
        base = load_file(os.path.join(work, "base", "model.safetensors"))
        for tool, merged in (("mergekit", theirs), ("paft", ours)):
            changed = sum(int((merged[k] != base[k]).sum()) for k in base)
            total = sum(base[k].numel() for k in base)
            l1 = sum(float((merged[k] - base[k]).abs().sum()) for k in base)
            sft = load_file(os.path.join(work, "sft", "model.safetensors"))
            l1_full = sum(float((sft[k] - base[k]).abs().sum()) for k in base)
            print(f"dare_linear density 0.4, {tool}: {changed / total:.4f} of entries kept, "
                  f"L1 of the delta {l1 / l1_full:.4f} of the unsparsified one")
            if abs(changed / total - 0.4) > 0.02 or abs(l1 / l1_full - 1.0) > 0.05:
                failures.append(f"dare_linear density 0.4, {tool}: kept {changed / total:.4f}, "
                                f"L1 ratio {l1 / l1_full:.4f}")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
