"""FLOPs per trained token of a Llama-family model, from its config.json, as the benches count
them (PaLM's count): 6N + 12 L h T for full fine-tuning, 4N + 12 L h T for LoRA (no gradient of
the frozen weights). N counts every matmul weight once: the head once when tied to the
embeddings, and the embedding table too when it is not."""
import json


def flops_per_token(config_path, mode, seq):
    c = json.load(open(config_path))
    h, i, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c["num_key_value_heads"] * c.get("head_dim", h // c["num_attention_heads"])
    n = V * h * (1 if c.get("tie_word_embeddings") else 2) + L * (2 * h * h + 2 * h * kv + 3 * h * i)
    return (6 if mode == "full" else 4) * n + 12 * L * h * seq
