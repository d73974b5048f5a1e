#!/usr/bin/env python3
"""The peer in trainer_bench.py: Hugging Face's Seq2SeqTrainer on the same rows, tokenizer and T5 shape.

What a user would otherwise run, and what a generic training operator runs as user code: bf16, batches grouped
by length, fused AdamW, lr 1e-4, dynamic padding (DataCollatorForSeq2Seq), teacher forcing through `labels`.

  hf_peer.py --data news_summary.csv --tokenizer DIR --shape t5-base --batch 128 [--seconds 10] [--warmup 12]

Prints one JSON line: samples_per_s and tokens_per_s (samples x the rows' mean of non-pad source + target
tokens) of the steps after the warm-up, timed between the GPU syncs of a callback.

  hf_peer.py --job JOB.json --batch 104 --eval-batch 416

The whole job instead (`job_bench.py run --peer-batch N` runs it): the FineTuneJob's config as floe-train reads it, the
same training and validation rows (floe's own split), epochs, learning rate, warm-up, clipping and seed, then the
validation split's loss and beam-searched summaries with the same beams and new-token limit, scored with
rouge_score, and the model saved. It prints floe-train's `start`, `phases` and `done` lines, so job_bench reads
both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
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
from floe_trainer.trainer import PREFIX  # noqa: E402  (the seed's task framing, as floe frames it)


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


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def job(a) -> None:
    """The FineTuneJob of `a.job` through Seq2SeqTrainer, phases timed as floe-train times them."""
    from floe_trainer import data
    from floe_trainer.config import parse_config
    from rouge_score import rouge_scorer
    from transformers import AutoModelForSeq2SeqLM

    started = time.perf_counter()
    spec = parse_config(json.loads(Path(a.job).read_text()))
    tc, ec = spec.training, spec.evaluation
    prepared = data.load(spec.dataset)
    tokenizer = AutoTokenizer.from_pretrained(spec.model.path, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(spec.model.path, local_files_only=True)
    seconds = {"startup": time.perf_counter() - started}

    def features(pairs) -> Rows:
        sources = tokenizer([PREFIX + d for d in pairs.documents], max_length=tc.source_max_length,
                            truncation=True)["input_ids"]
        targets = tokenizer(pairs.summaries, max_length=tc.target_max_length, truncation=True)["input_ids"]
        return Rows([{"input_ids": s, "attention_mask": [1] * len(s), "labels": t}
                     for s, t in zip(sources, targets, strict=True)])

    clock = time.perf_counter()
    train_rows, validation_rows = features(prepared.train), features(prepared.validation)
    seconds["tokenize"] = time.perf_counter() - clock
    torch.set_float32_matmul_precision("high")
    cuda = torch.cuda.is_available()
    args = Seq2SeqTrainingArguments(
        output_dir=a.workdir, per_device_train_batch_size=a.batch, per_device_eval_batch_size=a.eval_batch,
        num_train_epochs=tc.epochs, learning_rate=tc.learning_rate, warmup_steps=tc.warmup_ratio,  # a share
        max_grad_norm=tc.max_grad_norm, bf16=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
        train_sampling_strategy="group_by_length", save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, dataloader_num_workers=2, seed=tc.seed, predict_with_generate=True)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=16))
    emit("start", trainRows=len(train_rows), validationRows=len(validation_rows), stepBatchSize=a.batch)
    clock = time.perf_counter()
    trained = trainer.train()
    seconds["train"] = time.perf_counter() - clock
    clock = time.perf_counter()
    predicted = trainer.predict(validation_rows, num_beams=ec.num_beams, max_new_tokens=ec.max_new_tokens)
    ids = np.where(predicted.predictions < 0, tokenizer.pad_token_id, predicted.predictions)
    summaries = tokenizer.batch_decode(ids, skip_special_tokens=True)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, summary) for reference, summary in
              zip(prepared.validation.summaries, summaries, strict=True)]
    rouge = {key: round(sum(s[key].fmeasure for s in scores) / len(scores), 4)
             for key in ("rouge1", "rouge2", "rougeL")}
    seconds["evaluate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    trainer.save_model(str(Path(a.workdir) / "model"))
    seconds["export"] = time.perf_counter() - clock
    samples = trained.global_step * a.batch
    emit("phases", seconds={**dict.fromkeys(("compile", "checkpoint"), 0.0), **seconds},
         loopSamplesPerSecond=round(samples / seconds["train"], 2))
    emit("done", steps=trained.global_step, validationLoss=round(predicted.metrics["test_loss"], 5), **rouge,
         rougeSamples=len(summaries))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", help="a floe-train config: run the whole job (see the docstring)")
    ap.add_argument("--eval-batch", type=int, default=512, help="--job: validation rows per generation")
    ap.add_argument("--data")
    ap.add_argument("--tokenizer")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="t5-base")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--workdir", default="hf-peer")
    a = ap.parse_args()
    if a.job:
        return job(a)
    if not (a.data and a.tokenizer):
        ap.error("--data and --tokenizer are needed for the step loop (or --job for the whole job)")

    tokenizer = AutoTokenizer.from_pretrained(a.tokenizer, local_files_only=True)
    frame = pd.read_csv(a.data).dropna(subset=["ctext", "text"])
    sources = tokenizer((PREFIX + frame["ctext"]).tolist(), max_length=512, truncation=True)["input_ids"]
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
