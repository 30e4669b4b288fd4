#!/usr/bin/env python3
"""The TRL peer of paft's training: TRL's SFTTrainer or DPOTrainer on a model folder and a JSONL
dataset, with the settings bench/trl_bench.sh gives paft the same way (AdamW at a constant
learning rate, one batch per step, LoRA through PEFT or full fine-tuning, fp32 or bf16 mixed
precision, activation checkpointing on or off). Prints one JSON line: the median step time over
the steps after the first two, the tokens of a step (attention-mask tokens, TRL's `num_tokens`:
what paft counts too), tokens/s and this process's peak RSS.

  trl_peer.py --model=DIR --data=FILE.jsonl --trainer=sft|dpo --mode=full|lora
              --precision=fp32|bf16 --batch=4 --steps=8 [--checkpointing] [--threads=0]

Run with the project venv's Python (requirements/test.txt pins TRL and PEFT)."""
import argparse
import json
import logging
import os
import resource
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback, ProgressCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.started = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--trainer", choices=("sft", "dpo"), required=True)
    p.add_argument("--mode", choices=("full", "lora"), required=True)
    p.add_argument("--precision", choices=("fp32", "bf16"), required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    bf16 = a.precision == "bf16"
    # As users load a model for LoRA in bf16 (the frozen base in bf16); full fine-tuning keeps
    # fp32 weights under bf16 autocast (mixed precision), as paft does.
    dtype = torch.bfloat16 if bf16 and a.mode == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    data = load_dataset("json", data_files=a.data, split="train")
    peft_config = None
    if a.mode == "lora":
        peft_config = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                 task_type="CAUSAL_LM")
    config, trainer_class = (SFTConfig, SFTTrainer) if a.trainer == "sft" else (DPOConfig, DPOTrainer)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="paft-trl-peer-") as out:
        args = config(output_dir=out, report_to=[], use_cpu=True, bf16=bf16, save_strategy="no",
                      logging_steps=1, per_device_train_batch_size=a.batch, max_steps=a.steps,
                      learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0,
                      max_grad_norm=1.0, max_length=4096, gradient_checkpointing=a.checkpointing,
                      dataloader_drop_last=True, seed=0)
        trainer = trainer_class(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                peft_config=peft_config, callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # the one JSON line is this script's output
        trainer.remove_callback(ProgressCallback)
        trainer.train()
    counts = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    per_step = [b - a_ for a_, b in zip([0.0] + counts[:-1], counts)]
    steady = timer.times[2:] or timer.times
    step_s = statistics.median(steady)
    tokens = statistics.median(per_step[2:] or per_step)
    print(json.dumps({"impl": "trl", "trainer": a.trainer, "mode": a.mode, "precision": a.precision,
                      "checkpointing": a.checkpointing, "step_s": step_s, "tokens_per_step": tokens,
                      "tokens_per_s": tokens / step_s,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
