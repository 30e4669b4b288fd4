#!/usr/bin/env python3
"""Makes the tokenizer goldens: corpus.json encoded (and decoded back) by Hugging Face's own
tokenizers (the pinned PyPI package in the project's venv, requirements/test.txt), with the real
tokenizer files of each model. The goldens let the C++ tests (hf_golden_test.cc) check paft's
tokenizer without Python; tests/ecosystem/tokenizers_test.py checks it against tokenizers itself
on a much larger generated corpus.

  .venv/bin/python make_goldens.py CACHE     (CACHE as fetch_tokenizers.sh fills it)

Writes <name>.golden.json beside this script: [{"text", "ids", "decoded"}...]."""
import json
import os
import sys

from tokenizers import Tokenizer

cache = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "corpus.json")) as f:
    corpus = json.load(f)
for name in ("llama3", "qwen3", "gemma3", "llama2"):
    tokenizer = Tokenizer.from_file(os.path.join(cache, name, "tokenizer.json"))
    goldens = []
    for text in corpus:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        decoded = tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
        goldens.append({"text": text, "ids": ids, "decoded": decoded})
    with open(os.path.join(here, f"{name}.golden.json"), "w") as f:
        f.write(json.dumps(goldens, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{name}: {len(goldens)} texts, {sum(len(g['ids']) for g in goldens)} ids")
