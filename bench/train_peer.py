#!/usr/bin/env python3
"""The PyTorch-Python peer of paft-train-bench: the same model shapes (read from the model
folder's config.json), the same step (SFT token-mean loss on completion tokens, AdamW), written
as a PyTorch user would: a Hugging Face-style Llama with SDPA attention (transformers' default;
--attn_implementation=eager for the explicit path), PEFT-style LoRA on a frozen base held in the
checkpoint dtype (bf16 with --precision=bf16), torch.autocast for bf16.

  train_peer.py --model=DIR --mode=full|lora --precision=fp32|bf16 [--seq=128] [--batch=4]
                [--steps=6] [--threads=0] [--lora_r=16] [--attn_implementation=sdpa|eager]

Prints one JSON line like paft-train-bench. Run with the project venv's Python (.venv/bin/python:
the torch release paft's LibTorch comes from).
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoraLinear(nn.Module):
    """nn.Linear plus PEFT's LoRA: base(x) + lora_B(lora_A(x)) * scaling."""

    def __init__(self, inp, out, bias, dtype, r):
        super().__init__()
        self.base = nn.Linear(inp, out, bias=bias, dtype=dtype)
        self.r = r
        if r:
            self.base.weight.requires_grad_(False)
            if bias:
                self.base.bias.requires_grad_(False)
            self.lora_A = nn.Linear(inp, r, bias=False)
            self.lora_B = nn.Linear(r, out, bias=False)
            nn.init.zeros_(self.lora_B.weight)
            self.scaling = 2.0

    def forward(self, x):
        y = self.base(x)
        if self.r:
            y = y + self.lora_B(self.lora_A(x)) * self.scaling
        return y


class RMSNorm(nn.Module):
    def __init__(self, size, eps, dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Layer(nn.Module):
    def __init__(self, c, dtype, r):
        super().__init__()
        h, heads, kv = c["hidden_size"], c["num_attention_heads"], c.get("num_key_value_heads")
        kv = kv or heads
        self.heads, self.kv, self.hd = heads, kv, c.get("head_dim") or h // heads
        inter = c["intermediate_size"]
        self.q = LoraLinear(h, heads * self.hd, False, dtype, r)
        self.k = LoraLinear(h, kv * self.hd, False, dtype, r)
        self.v = LoraLinear(h, kv * self.hd, False, dtype, r)
        self.o = LoraLinear(heads * self.hd, h, False, dtype, r)
        self.gate = LoraLinear(h, inter, False, dtype, r)
        self.up = LoraLinear(h, inter, False, dtype, r)
        self.down = LoraLinear(inter, h, False, dtype, r)
        eps = c.get("rms_norm_eps", 1e-6)
        self.ln1, self.ln2 = RMSNorm(h, eps, dtype), RMSNorm(h, eps, dtype)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        n = self.ln1(x)
        q = self.q(n).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k(n).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(n).view(b, t, self.kv, self.hd).transpose(1, 2)
        cos, sin = cos.unsqueeze(1).to(q.dtype), sin.unsqueeze(1).to(q.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               enable_gqa=self.kv != self.heads)
        else:
            if self.kv != self.heads:
                k = k.repeat_interleave(self.heads // self.kv, 1)
                v = v.repeat_interleave(self.heads // self.kv, 1)
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.hd)
            probs = torch.softmax(scores.float() + mask, -1).to(q.dtype)
            a = torch.matmul(probs, v)
        a = a.transpose(1, 2).reshape(b, t, -1)
        x = x + self.o(a)
        n = self.ln2(x)
        return x + self.down(F.silu(self.gate(n)) * self.up(n))


class Llama(nn.Module):
    def __init__(self, c, dtype, r, eager):
        super().__init__()
        self.c = c
        self.eager = eager
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"], dtype=dtype)
        self.layers = nn.ModuleList(Layer(c, dtype, r) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c.get("rms_norm_eps", 1e-6), dtype)
        self.head = None
        if not c.get("tie_word_embeddings", False):
            self.head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False, dtype=dtype)

    def forward(self, ids):
        b, t = ids.shape
        hd = self.layers[0].hd
        inv = 1.0 / (self.c.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.arange(t).float()[:, None] * inv
        emb = torch.cat((freqs, freqs), -1)[None]
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((t, t), -1e9).triu(1)[None, None] if self.eager else None
        x = self.embed(ids)
        if torch.is_autocast_enabled("cpu"):
            x = x.float()
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        return F.linear(x, self.embed.weight) if self.head is None else self.head(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--mode", default="lora", choices=["full", "lora"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--attn_implementation", default="sdpa", choices=["sdpa", "eager"])
    a = p.parse_args()
    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(0)
    with open(os.path.join(a.model, "config.json")) as f:
        config = json.load(f)
    lora = a.mode == "lora"
    # Full fine-tuning keeps fp32 master weights; LoRA freezes a base held as loaded.
    dtype = torch.bfloat16 if lora and a.precision == "bf16" else torch.float32
    model = Llama(config, dtype, a.lora_r if lora else 0, a.attn_implementation == "eager")
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(7)
    times = []
    for step in range(a.steps + 1):
        ids = torch.randint(0, config["vocab_size"], (a.batch, a.seq), generator=g)
        start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model(ids)
        # Completion tokens: every token after the one-token prompt; token-mean NLL.
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "mode": a.mode, "precision": a.precision, "world": 1,
                      "attn": a.attn_implementation, "seq": a.seq,
                      "step_s": median, "tokens_per_s": a.batch * a.seq / median,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
