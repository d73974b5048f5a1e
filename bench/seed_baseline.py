#!/usr/bin/env python3
"""The seed's T5 fine-tuning loop, the baseline `trainer_bench.py --baseline` runs in the same call.

Written from the seed recipe (the blog post floe re-creates): a Dataset that prefixes "summarize: " and pads
every article to 512 and every summary to 150 tokens; batch size 2; Adam, lr 1e-4, fp32; teacher forcing
with decoder_input_ids = y[:, :-1] and labels = y[:, 1:] (pad -> -100).

  seed_baseline.py --data news_summary.csv --tokenizer DIR --shape t5-base [--batch 2] [--seconds 30]
                   [--precision bf16]

`--precision bf16` (bf16 autocast, TF32 matmuls) with a larger `--batch` is the control row of trainer_bench.py:
the seed's loop at floe's batch and precision, so a reader sees which gain comes from what.

Prints one JSON line: samples_per_s, tokens_per_s (non-pad source + target tokens), steps, last_loss. Both
sides of a comparison must use the same tokenizer, data and model shape.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

SHAPES = {
    "tiny": dict(d_model=64, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    "t5-small": dict(d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64),
    "t5-base": dict(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, d_kv=64),
}
WARMUP_STEPS = 3


class SeedDataset(Dataset):
    def __init__(self, frame: pd.DataFrame, tokenizer, source_len: int = 512, summary_len: int = 150):
        self.tokenizer, self.source_len, self.summary_len = tokenizer, source_len, summary_len
        self.text = ("summarize: " + frame["ctext"]).tolist()
        self.summary = frame["text"].tolist()

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, i):
        source = self.tokenizer([" ".join(self.text[i].split())], max_length=self.source_len, padding="max_length",
                                truncation=True, return_tensors="pt")
        target = self.tokenizer([" ".join(self.summary[i].split())], max_length=self.summary_len,
                                padding="max_length", truncation=True, return_tensors="pt")
        return source.input_ids[0], source.attention_mask[0], target.input_ids[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="t5-base")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    bf16 = a.precision == "bf16"
    if bf16:
        torch.set_float32_matmul_precision("high")

    tokenizer = AutoTokenizer.from_pretrained(a.tokenizer, local_files_only=True)
    frame = pd.read_csv(a.data).dropna(subset=["ctext", "text"])
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id, **SHAPES[a.shape])
    model = T5ForConditionalGeneration(config).to(a.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(SeedDataset(frame, tokenizer), batch_size=a.batch, shuffle=True, num_workers=0)
    pad = tokenizer.pad_token_id

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    steps = samples = tokens = 0
    start = None
    while True:
        for ids, mask, y in loader:
            ids, mask, y = ids.to(a.device), mask.to(a.device), y.to(a.device)
            decoder_input_ids = y[:, :-1].contiguous()
            labels = y[:, 1:].clone()
            labels[y[:, 1:] == pad] = -100
            with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                             labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == WARMUP_STEPS:
                sync()
                start = time.perf_counter()
            elif start is not None:
                samples += ids.shape[0]
                tokens += int(mask.sum()) + int((y != pad).sum())
                if time.perf_counter() - start >= a.seconds:
                    sync()
                    elapsed = time.perf_counter() - start
                    print(json.dumps({"baseline": "seed", "device": a.device, "batch": a.batch,
                                      "precision": a.precision,
                                      "steps": steps - WARMUP_STEPS, "samples_per_s": round(samples / elapsed, 3),
                                      "tokens_per_s": round(tokens / elapsed, 1), "last_loss": round(loss.item(), 4)}))
                    return


if __name__ == "__main__":
    main()
