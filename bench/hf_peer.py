#!/usr/bin/env python3
"""The peer in trainer_bench.py: Hugging Face's Seq2SeqTrainer on the same rows, tokenizer and T5 shape.

What a user would otherwise run, and what a generic training operator runs as user code: bf16, batches grouped
by length, fused AdamW, lr 1e-4, dynamic padding (DataCollatorForSeq2Seq), teacher forcing through `labels`.

  hf_peer.py --data news_summary.csv --tokenizer DIR --shape t5-base --batch 128 [--seconds 10] [--warmup 12]

Prints one JSON line: samples_per_s and tokens_per_s (samples x the rows' mean of non-pad source + target
tokens) of the steps after the warm-up, timed between the GPU syncs of a callback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5ForConditionalGeneration,
    TrainerCallback,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer-image"))

from floe_trainer.modeling import SHAPES  # noqa: E402  (the shapes floe trains, so the peer trains the same)


class Rows(torch.utils.data.Dataset):
    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer(TrainerCallback):
    """Times the steps after `warmup` (their count and wall time; main turns them into samples and tokens)."""

    def __init__(self, warmup: int, seconds: float):
        self.warmup, self.seconds = warmup, seconds
        self.start = None
        self.timed_steps = 0
        self.elapsed = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            sync()
            self.start = time.perf_counter()
        elif self.start is not None:
            self.timed_steps += 1
            if time.perf_counter() - self.start >= self.seconds:
                sync()
                self.elapsed = time.perf_counter() - self.start
                control.should_training_stop = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="t5-base")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--workdir", default="hf-peer")
    a = ap.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(a.tokenizer, local_files_only=True)
    frame = pd.read_csv(a.data).dropna(subset=["ctext", "text"])
    sources = tokenizer(("summarize: " + frame["ctext"]).tolist(), max_length=512, truncation=True)["input_ids"]
    targets = tokenizer(frame["text"].tolist(), max_length=150, truncation=True)["input_ids"]
    features = [{"input_ids": s, "attention_mask": [1] * len(s), "labels": t}
                for s, t in zip(sources, targets, strict=True)]
    # enough repeats of the rows that the trainer never ends an epoch while it is timed
    features = features * 50
    tokens_per_sample = sum(len(s) + len(t) for s, t in zip(sources, targets, strict=True)) / len(sources)

    torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      **SHAPES[a.shape])
    model = T5ForConditionalGeneration(config)
    args = Seq2SeqTrainingArguments(
        output_dir=a.workdir, per_device_train_batch_size=a.batch, learning_rate=1e-4, bf16=torch.cuda.is_available(),
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        train_sampling_strategy="group_by_length", max_steps=100_000, save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=2, seed=0)
    timer = Timer(a.warmup, a.seconds)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=Rows(features), processing_class=tokenizer,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=16),
                             callbacks=[timer])
    trainer.train()
    samples = timer.timed_steps * a.batch
    print(json.dumps({"peer": "transformers.Seq2SeqTrainer", "batch": a.batch,
                      "precision": "bf16" if torch.cuda.is_available() else "fp32",
                      "steps": timer.timed_steps, "samples_per_s": round(samples / timer.elapsed, 3),
                      "tokens_per_s": round(samples * tokens_per_sample / timer.elapsed, 1)}))


if __name__ == "__main__":
    main()
