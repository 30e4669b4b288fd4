#!/usr/bin/env python3
"""TRL itself judges paft's dataset tokenization and its training losses.

  1. Tokenization: for each real tokenizer (Llama 3, Qwen3, Gemma 3, Llama 2, with their own chat
     templates), the datasets TRL takes -- text and conversational prompt-completion, "messages"
     (given to TRL as the conversational prompt-completion paft makes of it), text and
     conversational preference, each preference form also with TRL's implicit prompt -- are
     prepared by TRL's SFTTrainer / DPOTrainer and by `paft-prepare`: the token ids and the
     completion masks must be equal.
  2. Losses: on a Llama-shaped model with random weights (Llama 3's tokenizer), the same data and
     settings (full fine-tuning, fp32, AdamW at a constant learning rate, gradient clipping at 1,
     the whole dataset in each step), every step's loss that TRL's trainer logs equals the loss
     `paft-worker train` reports: SFT (completion only), DPO with the sigmoid, ipo, hinge and
     robust losses, ORPO (trl.experimental.orpo) and SimPO (trl.experimental.cpo, cpo_alpha 0).
     The first step checks the loss itself; the later ones also the gradients and the update.
     ORPO and SimPO get the token ids TRL's legacy trainers made (their own tokenization is not
     TRL's main one), as pre-tokenized records.

  trl_test.py BUILD_DIR [CACHE]      exit 0: equal; 1: a difference; 77: TRL or the tokenizer
                                     files missing"""
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings

try:
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from ecosystem_common import (LLAMA, build_tools, read_paftds_segments,
                                  require_llama3_tokenizer, tokenizer_cache, write_model)
except ImportError as e:
    print(f"skipped: {e}; ./setup.sh deps installs requirements/test.txt into the venv")
    sys.exit(77)

CACHE = tokenizer_cache(sys.argv)
WORKER, _ = build_tools(sys.argv)
PREPARE = os.path.join(os.path.dirname(WORKER), "..", "tokenizer", "paft-prepare")
LOSS_TOLERANCE = 1e-5  # on each step's loss (fp32), relative to the loss where it exceeds 1
STEPS = 3
LEARNING_RATE = 1e-3
FAMILIES = ("llama3", "qwen3", "gemma3", "llama2")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# Text that exercises the boundary: spaces on either side, digits, code, non-Latin scripts, emoji.
TEXT_PAIRS = [
    ("Question: what is 2+2? Answer:", " 4"),
    ("The capital of France is ", "Paris."),
    ("def add(a, b):\n", "    return a + b\n"),
    ("Translate to Japanese: good morning ->", " おはようございます"),
    ("Rate it 1-10:", "10/10 🎉🎉"),
    ("Say hi", "!!! hi"),
    ("The year was 19", "84, a cold one."),  # digits merge across the boundary: they diverge early
]
CONVERSATIONS = [
    ([user("Hi!")], [assistant("Hello, friend.")]),
    ([{"role": "system", "content": "You answer briefly."}, user("What is 12*12?")],
     [assistant("144.")]),
    ([user("Name a colour."), assistant("Blue."), user("Another one?")], [assistant("Green, 🌿.")]),
]
TEXT_PREFERENCES = [
    ("Question: is the sky blue? Answer:", " Yes.", " No."),
    ("2+2=", "4", "5"),
    ("Write a greeting: ", "Hello there!", "go away"),
    ("Complete: 東京は", "日本の首都です。", "大阪です。"),
    ("The year was 19", "84.", "99."),  # merges across the boundary, differently for each answer
]
CHAT_PREFERENCES = [
    ([user("Is the sky blue?")], [assistant("Yes, on a clear day.")], [assistant("No.")]),
    ([user("Hi"), assistant("Hello!"), user("Tell me a number.")], [assistant("7")],
     [assistant("I refuse. 🙅")]),
]


def sft_rows(kind):
    if kind == "text":
        return [{"prompt": p, "completion": c} for p, c in TEXT_PAIRS]
    return [{"prompt": p, "completion": c} for p, c in CONVERSATIONS]


def preference_rows(kind, implicit):
    if kind == "text":
        rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in TEXT_PREFERENCES]
        if implicit:  # TRL's extract_prompt gives a trailing space of the prompt to the answers
            rows = [{"chosen": x["prompt"] + x["chosen"], "rejected": x["prompt"] + x["rejected"]}
                    for x in rows]
        return rows
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in CHAT_PREFERENCES]
    if implicit:
        rows = [{"chosen": x["prompt"] + x["chosen"], "rejected": x["prompt"] + x["rejected"]}
                for x in rows]
    return rows


def run(command, what):
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def paft_prepare(folder, rows, work, name):
    source, out = os.path.join(work, f"{name}.jsonl"), os.path.join(work, f"{name}.paftds")
    write_jsonl(source, rows)
    run([PREPARE, f"--tokenizer={folder}", f"--input={source}", f"--output={out}",
         "--max_length=4096"], f"paft-prepare {name}")
    return read_paftds_segments(out)


def common_args(config, work, **extra):
    return config(output_dir=os.path.join(work, "trl-out"), report_to=[], use_cpu=True, bf16=False,
                  save_strategy="no", logging_steps=1, **extra)


def tiny_config(vocab_size):
    """A one-layer model: TRL's trainers need one to prepare a dataset."""
    return dict(LLAMA, vocab_size=vocab_size, hidden_size=8, intermediate_size=8,
                num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1)


def compare_tokenization(family, work, failures):
    source = os.path.join(CACHE, family)
    folder = os.path.join(work, family)
    write_model(folder, tiny_config(len(AutoTokenizer.from_pretrained(source))), 0, CACHE, family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    kinds = ("text", "chat") if tokenizer.chat_template else ("text",)  # Llama 2's files: no template
    checked = 0
    for kind in kinds:
        rows = sft_rows(kind)
        trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                             args=common_args(SFTConfig, work, max_length=4096))
        # TRL 1.16 keeps the completion mask as labels: -100 where no loss is taken.
        theirs = [(x["input_ids"], [int(label != -100) for label in x["labels"]])
                  for x in trainer.train_dataset]
        paft_kind, ours = paft_prepare(folder, rows, work, f"{family}-sft-{kind}")
        # "messages" are TRL's conversational prompt-completion in paft: the same examples.
        if kind == "chat":
            _, from_messages = paft_prepare(folder, [{"messages": p + c} for p, c in CONVERSATIONS],
                                            work, f"{family}-messages")
            if from_messages != ours:
                failures.append(f"{family}: 'messages' prepared otherwise than prompt-completion")
        for i, ((ids, mask), (prompt, completion, _)) in enumerate(zip(theirs, ours)):
            if prompt + completion != ids or [0] * len(prompt) + [1] * len(completion) != mask:
                failures.append(f"{family} SFT {kind} example {i}: paft {prompt} | {completion}, "
                                f"TRL {ids} mask {mask}")
            checked += 1
        if paft_kind != "sft" or len(theirs) != len(ours):
            failures.append(f"{family} SFT {kind}: {len(ours)} examples ({paft_kind}), TRL {len(theirs)}")
    for kind in kinds:
        for implicit in (False, True):
            rows = preference_rows(kind, implicit)
            trainer = DPOTrainer(model=model, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list(rows),
                                 args=common_args(DPOConfig, work, max_length=4096))
            theirs = [(x["prompt_ids"], x["chosen_ids"], x["rejected_ids"]) for x in trainer.train_dataset]
            label = f"{kind}{' implicit prompt' if implicit else ''}"
            paft_kind, ours = paft_prepare(folder, rows, work, f"{family}-pref-{kind}-{implicit}")
            if paft_kind != "preference" or len(theirs) != len(ours):
                failures.append(f"{family} preference {label}: {len(ours)} examples ({paft_kind}), "
                                f"TRL {len(theirs)}")
            for i, (t, o) in enumerate(zip(theirs, ours)):
                if list(map(list, t)) != list(map(list, o)):
                    failures.append(f"{family} preference {label} example {i}: paft {o}, TRL {t}")
                checked += 1
    print(f"{family}: {checked} examples ({', '.join(kinds)}), TRL's and paft-prepare's token ids "
          f"and masks compared")


# --- losses -----------------------------------------------------------------------------------

SFT_DATA = [{"prompt": p, "completion": c} for p, c in TEXT_PAIRS]
PREFERENCE_DATA = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in TEXT_PREFERENCES]
JOB = """name: trl-check
base_model: {base}
output_dir: {out}
{branch}:
  pool: p
  world_size: 1
  dataset: {{path: {data}}}
  {objective}
  full: {{}}
  optimizer: {{learning_rate: {lr}, lr_schedule: constant, weight_decay: 0, max_grad_norm: 1.0}}
  batch: {{per_device_batch_size: {batch}, max_length: 4096}}
  max_steps: {steps}
  precision: fp32
{other}:
  pool: q
  world_size: 1
  dataset: {{path: {data}}}
  {other_objective}
"""


def paft_losses(work, name, base, rows, objective):
    data = os.path.join(work, f"{name}.jsonl")
    write_jsonl(data, rows)
    sft = objective.startswith("sft")
    job = os.path.join(work, f"{name}.yaml")
    with open(job, "w") as f:
        f.write(JOB.format(base=base, out=os.path.join(work, f"{name}-out"), data=data,
                           branch="sft" if sft else "alignment", other="alignment" if sft else "sft",
                           objective=objective, other_objective="dpo: {}" if sft else "sft: {}",
                           lr=LEARNING_RATE, batch=len(rows), steps=STEPS))
    r = run([WORKER, "train", job, f"--branch={'sft' if sft else 'alignment'}", "--threads=1"],
            f"paft-worker train {name}")
    losses = []
    for line in r.stdout.splitlines():
        if line.startswith("PAFT_EVENT "):
            event = json.loads(line[len("PAFT_EVENT "):])
            if event.get("type") == "progress":
                losses.append(event["loss"])
    return losses


def trl_losses(trainer):
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def train_args(config, work, rows, **extra):
    return common_args(config, work, per_device_train_batch_size=len(rows), max_steps=STEPS,
                       learning_rate=LEARNING_RATE, lr_scheduler_type="constant", weight_decay=0.0,
                       max_grad_norm=1.0, max_length=4096, seed=0, **extra)


def legacy_pairs(trainer):
    """prompt_ids / chosen_ids / rejected_ids of the pairs a legacy trainer (ORPO, CPO) tokenized."""
    rows = []
    for x in trainer.train_dataset:
        n = sum(1 for label in x["chosen_labels"] if label == -100)
        m = sum(1 for label in x["rejected_labels"] if label == -100)
        prompt = x["chosen_input_ids"][:n]
        assert prompt == x["rejected_input_ids"][:m], "the legacy trainer gave the answers two prompts"
        rows.append({"prompt_ids": prompt, "chosen_ids": x["chosen_input_ids"][n:],
                     "rejected_ids": x["rejected_input_ids"][m:]})
    return rows


def compare_losses(work, failures):
    base = os.path.join(work, "loss-base")
    write_model(base, dict(LLAMA, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                           num_key_value_heads=1), 0, CACHE)
    bare = os.path.join(work, "loss-base-ids")  # the same weights, no tokenizer: ids as given
    os.makedirs(bare)
    for name in ("config.json", "model.safetensors"):
        os.link(os.path.join(base, name), os.path.join(bare, name))
    tokenizer = AutoTokenizer.from_pretrained(base)

    def model():
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)

    def check(label, ours, theirs):
        if len(ours) != STEPS or len(theirs) != STEPS:
            failures.append(f"{label}: {len(ours)} paft steps, {len(theirs)} TRL steps")
            return
        worst = max(abs(o - t) / max(1.0, abs(t)) for o, t in zip(ours, theirs))
        print(f"{label}: losses paft {[f'{x:.6f}' for x in ours]}, TRL {[f'{x:.6f}' for x in theirs]}"
              f" -> worst difference {worst:.2e} (tolerance {LOSS_TOLERANCE:g})")
        if worst > LOSS_TOLERANCE:
            failures.append(f"{label}: {worst:.3g}")

    trainer = SFTTrainer(model=model(), processing_class=tokenizer, train_dataset=Dataset.from_list(SFT_DATA),
                         args=train_args(SFTConfig, work, SFT_DATA))
    check("SFT (completion only)", paft_losses(work, "sft", base, SFT_DATA, "sft: {l1_lambda: 0}"),
          trl_losses(trainer))

    for loss_type, smoothing in (("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.1)):
        trainer = DPOTrainer(model=model(), processing_class=tokenizer,
                             train_dataset=Dataset.from_list(PREFERENCE_DATA),
                             args=train_args(DPOConfig, work, PREFERENCE_DATA, beta=0.1,
                                             loss_type=[loss_type], label_smoothing=smoothing))
        objective = f"dpo: {{beta: 0.1, loss_type: {loss_type}, label_smoothing: {smoothing}}}"
        check(f"DPO {loss_type}" + (f" (label smoothing {smoothing})" if smoothing else ""),
              paft_losses(work, f"dpo-{loss_type}", base, PREFERENCE_DATA, objective),
              trl_losses(trainer))

    trainer = ORPOTrainer(model=model(), processing_class=tokenizer,
                          train_dataset=Dataset.from_list(PREFERENCE_DATA),
                          args=train_args(ORPOConfig, work, PREFERENCE_DATA, beta=0.1))
    ids = legacy_pairs(trainer)
    check("ORPO", paft_losses(work, "orpo", bare, ids, "orpo: {beta: 0.1}"), trl_losses(trainer))

    trainer = CPOTrainer(model=model(), processing_class=tokenizer,
                         train_dataset=Dataset.from_list(PREFERENCE_DATA),
                         args=train_args(CPOConfig, work, PREFERENCE_DATA, loss_type="simpo", beta=2.0,
                                         simpo_gamma=0.5, cpo_alpha=0.0))
    ids = legacy_pairs(trainer)
    check("SimPO", paft_losses(work, "simpo", bare, ids, "simpo: {beta: 2.0, gamma: 0.5}"),
          trl_losses(trainer))


def main():
    require_llama3_tokenizer(CACHE)
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    failures = []
    with tempfile.TemporaryDirectory(prefix="paft-trl-") as work:
        os.chdir(work)
        for family in FAMILIES:
            if not os.path.isfile(os.path.join(CACHE, family, "tokenizer.json")):
                print(f"{family}: no tokenizer files in {CACHE}, not compared")
                continue
            compare_tokenization(family, work, failures)
        compare_losses(work, failures)
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
