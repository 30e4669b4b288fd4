#!/usr/bin/env python3
"""paft-prepare --encode against Hugging Face's tokenizers itself (the pinned PyPI package,
requirements/test.txt): the same ids, add_special_tokens=False, for the four real tokenizer files
(Llama 3, Qwen3, Gemma 3, Llama 2) on a large varied corpus: the hand-written golden corpus, then
generated strings mixing scripts, combining marks, emoji sequences, whitespace runs, digits, code,
control characters, random code points and every added or special token of the file.

  tokenizers_test.py BUILD_DIR [CACHE]   exit 0: equal; 1: a difference; 77: tokenizers or the
                                         tokenizer files missing (CACHE: fetch_tokenizers.sh's)

One known difference, reported and not a failure: paft's split regexes run on PCRE2 10.42, whose
Unicode properties are Unicode 14.0's, while tokenizers' regex engine has Unicode 16.0's; a code
point assigned after 14.0 (CJK Extensions H and I, Kawi, Garay, ...) is a letter to tokenizers and
unassigned to paft, so a text holding one may split differently. Python 3.11's unicodedata is
Unicode 14.0 too: exactly the texts with a code point it calls unassigned are excused."""
import json
import os
import random
import subprocess
import sys
import unicodedata

try:
    from tokenizers import Tokenizer
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1])
CACHE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
    "PAFT_TOKENIZER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "paft", "tokenizers"))
PREPARE = os.path.join(BUILD, "tokenizer", "paft-prepare")
HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = 10000  # strings per tokenizer, besides the golden corpus

POOLS = {
    "latin": ["the", "quick", "brown", "fox", "Ünïcödé", "naïve", "café", "straße", "ÆØÅ", "ﬁ"],
    "cjk": ["你好", "世界", "日本語", "テキスト", "한국어", "漢字かな交じり", "ｶﾀｶﾅ", "㍿"],
    "rtl": ["مرحبا", "بالعالم", "שלום", "עולם", "\u200f"],
    "indic": ["नमस्ते", "दुनिया", "தமிழ்", "ভাষা", "ไทย", "ພາສາລາວ"],
    "cyrillic_greek": ["Привет", "мир", "Ελληνικά", "ΣΊΣΥΦΟΣ"],
    "marks": ["e\u0301", "a\u0308\u0304", "\u0915\u094d\u0937", "Z\u0351\u036b\u0343"],
    "emoji": ["😀", "👍🏽", "👩‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "❤️", "🧑🏿‍🚀", "1️⃣", "🫠"],
    "space": [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2009",
              "\u200b", "    \t  \n"],
    "digits": ["0", "7", "42", "1234567", "3.14159", "-2e10", "1,000,000", "٣٤٥", "१२३", "０１２"],
    "code": ["def f(x):\n    return x**2", "int main() { return 0; }", "<div class=\"a\">",
             "SELECT * FROM t WHERE id = 1;", "a->b", "x += 1", "#include <vector>", "`ls -la`",
             "{\"k\": [1, 2]}", "https://example.com/a?b=c&d=e#f", "C:\\Users\\me", "$HOME/.cache"],
    "punct": ["!", "?", "...", "—", "–", "«", "»", "“", "”", "'s", "'re", "'LL", "¿", "¡", "…"],
    "control": ["\x00", "\x01", "\x7f", "\x1b[31m", "\ufeff", "\ufffd"],
}


def random_code_point(rng):
    while True:
        cp = rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0x3000),
                         rng.randrange(0x3000, 0xa000), rng.randrange(0xac00, 0xd7a4),
                         rng.randrange(0x10000, 0x2ffff)])
        if not 0xd800 <= cp < 0xe000:
            return chr(cp)


def corpus(tokenizer_json, seed):
    with open(os.path.join(HERE, "..", "tokenizer", "golden", "corpus.json")) as f:
        texts = list(json.load(f))
    with open(tokenizer_json) as f:
        added = [t["content"] for t in json.load(f).get("added_tokens", [])]
    rng = random.Random(seed)
    pools = dict(POOLS, added=added[:200] + rng.sample(added, min(200, len(added))))
    names = sorted(pools)
    for _ in range(GENERATED):
        parts = []
        for _ in range(rng.randrange(1, 14)):
            pick = rng.random()
            if pick < 0.1:
                parts.append("".join(random_code_point(rng) for _ in range(rng.randrange(1, 6))))
            else:
                pool = pools[rng.choice(names)] or POOLS["latin"]
                parts.append(rng.choice(pool))
            if rng.random() < 0.5:
                parts.append(rng.choice(POOLS["space"]))
        texts.append("".join(parts))
    return texts


def main():
    if unicodedata.unidata_version != "14.0.0":
        print(f"Python's unicodedata is Unicode {unicodedata.unidata_version}, not PCRE2 10.42's "
              "14.0.0: no difference is excused")
    names = [n for n in ("llama3", "qwen3", "gemma3", "llama2")
             if os.path.isfile(os.path.join(CACHE, n, "tokenizer.json"))]
    if not names:
        print(f"skipped: no tokenizer files in {CACHE} (tests/tokenizer/golden/fetch_tokenizers.sh)")
        return 77
    failures = 0
    for seed, name in enumerate(names):
        path = os.path.join(CACHE, name, "tokenizer.json")
        texts = corpus(path, seed)
        reference = Tokenizer.from_file(path)
        expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
        run = subprocess.run([PREPARE, f"--tokenizer={path}", "--encode"], text=True,
                             input="".join(json.dumps({"text": t}) + "\n" for t in texts),
                             capture_output=True)
        if run.returncode != 0:
            print(f"{name}: paft-prepare --encode failed: {run.stderr[-2000:]}")
            failures += 1
            continue
        got = [json.loads(line)["ids"] for line in run.stdout.splitlines()]
        differ = [i for i in range(len(texts)) if i >= len(got) or got[i] != expected[i]]
        newer = [i for i in differ if unicodedata.unidata_version == "14.0.0" and
                 any(unicodedata.category(c) == "Cn" for c in texts[i])]
        wrong = [i for i in differ if i not in newer]
        tokens = sum(len(e) for e in expected)
        print(f"{name}: {len(texts)} texts, {tokens} tokens: {len(wrong)} differ "
              f"(and {len(newer)} with a code point newer than Unicode 14.0, known)")
        for i in wrong[:5]:
            print(f"  {texts[i]!r}\n    tokenizers: {expected[i]}\n    paft:       "
                  f"{got[i] if i < len(got) else 'missing'}")
        failures += bool(wrong)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
