#!/usr/bin/env python3
"""Batch scoring on CPU: the straightforward scalar UDF against floe's vectorized UDF handler.

Both sides use the same trained model and the same rows, in the same run:
- baseline: model loaded once, then per row tokenize + generate with the seed's evaluation settings
  (num_beams=2, max_length=150, repetition_penalty=2.5, length_penalty=1.0, early_stopping=True);
- floe: `udf_handler.summarize` on a pandas Series (what Snowflake calls), from the packaged model zip,
  with the handler's defaults; plus variants (fp32 / dynamic int8, greedy / beams) to show each effect;
- pure batching gain: greedy decoding, fp32, scalar vs batched; the outputs must match exactly.

The model: a T5 of the given shape with a SentencePiece tokenizer trained on the data, trained from
scratch for --train-seconds with a plain torch loop (AdamW, "summarize: " prefix). Quality is that of a
model trained for minutes on CPU; ROUGE is reported to compare the decoding paths, not the model.

Usage: bench/udf_bench.py --data news_summary.csv [--rows 24] [--train-seconds 240] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from floe_trainer import udf_handler
from floe_trainer.deploy import deployment_digest, package_model
from floe_trainer.modeling import train_tokenizer
from rouge_score import rouge_scorer
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

SHAPES = {
    "tiny": dict(d_model=64, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    "mini": dict(d_model=128, d_ff=512, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=32),
}
SEED_EVAL = dict(num_beams=2, max_length=150, repetition_penalty=2.5, length_penalty=1.0, early_stopping=True)


def train(model, tokenizer, frame: pd.DataFrame, seconds: float, batch: int = 16) -> dict:
    """A plain teacher-forcing loop; returns steps and the last loss."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sources = ["summarize: " + " ".join(t.split()) for t in frame["ctext"]]
    targets = [" ".join(t.split()) for t in frame["text"]]
    model.train()
    steps, start, loss = 0, time.perf_counter(), torch.tensor(0.0)
    while time.perf_counter() - start < seconds:
        for i in torch.randperm(len(sources)).split(batch):
            enc = tokenizer([sources[j] for j in i], max_length=256, truncation=True, padding=True, return_tensors="pt")
            lab = tokenizer([targets[j] for j in i], max_length=80, truncation=True, padding=True, return_tensors="pt")
            labels = lab.input_ids.masked_fill(lab.input_ids == tokenizer.pad_token_id, -100)
            loss = model(**enc, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    model.eval()
    return {"steps": steps, "last_loss": round(loss.item(), 3), "seconds": seconds}


def scalar_udf(model, tokenizer, texts: list[str], **generate) -> list[str]:
    """The straightforward UDF body: one row at a time."""
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(
                "summarize: " + " ".join(text.split()), max_length=512, truncation=True, return_tensors="pt"
            )
            ids = model.generate(**enc, **generate)
            out.append(tokenizer.decode(ids[0], skip_special_tokens=True, clean_up_tokenization_spaces=True))
    return out


def rouge(predictions: list[str], references: list[str]) -> dict:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]
    return {k: round(sum(s[k].fmeasure for s in scores) / len(scores), 4) for k in ("rouge1", "rouge2", "rougeL")}


def timed(fn, texts):
    start = time.perf_counter()
    outputs = fn(texts)
    seconds = time.perf_counter() - start
    return outputs, {"seconds": round(seconds, 2), "summaries_per_s": round(len(texts) / seconds, 3)}


def handler_variant(model_dir: Path, work: Path, name: str, generation: dict):
    """Package the model with these generation settings and return a Series -> Series scorer."""
    digest = deployment_digest(model_dir, generation)
    import_dir = work / name
    import_dir.mkdir()
    package_model(model_dir, digest, generation, import_dir)

    udf_handler.summarizer_for(str(import_dir / udf_handler.MODEL_ZIP))  # loaded, as in a warm UDF process

    def score(texts):
        sys._xoptions["snowflake_import_directory"] = str(import_dir)
        return list(udf_handler.summarize(pd.Series(texts)))

    return score


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    ap.add_argument("--train-seconds", type=float, default=240)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()

    frame = pd.read_csv(a.data).dropna(subset=["ctext", "text"]).reset_index(drop=True)
    held_out = frame.iloc[: a.rows]
    training = frame.iloc[a.rows :]
    work = Path(tempfile.mkdtemp(prefix="udf-bench-"))
    tokenizer = train_tokenizer([*training["ctext"], *training["text"]], 2000, work / "tokenizer")
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **SHAPES[a.shape],
    )
    model = T5ForConditionalGeneration(config)
    training_run = train(model, tokenizer, training, a.train_seconds)
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts, references = list(held_out["ctext"]), list(held_out["text"])

    results: dict[str, dict] = {}
    outputs: dict[str, list[str]] = {}

    def record(name, fn):
        out, timing = timed(fn, texts)
        outputs[name] = out
        results[name] = {**timing, **rouge(out, references)}
        print(json.dumps({name: results[name]}), flush=True)

    record("baseline_scalar_beam2", lambda t: scalar_udf(model, tokenizer, t, **SEED_EVAL))
    record("floe_default", handler_variant(model_dir, work, "default", {}))
    record("floe_beam2_fp32", handler_variant(model_dir, work, "beam2", {"numBeams": 2, "quantize": "none"}))
    record("floe_greedy_fp32", handler_variant(model_dir, work, "greedy", {"quantize": "none"}))
    record("floe_beam2_int8", handler_variant(model_dir, work, "beam2i8", {"numBeams": 2}))
    greedy = dict(num_beams=1, max_new_tokens=150, repetition_penalty=2.5, do_sample=False)
    record("scalar_greedy_fp32", lambda t: scalar_udf(model, tokenizer, t, **greedy))

    matches = sum(a == b for a, b in zip(outputs["scalar_greedy_fp32"], outputs["floe_greedy_fp32"], strict=True))
    base = results["baseline_scalar_beam2"]["summaries_per_s"]
    summary = {
        "command": " ".join(["bench/udf_bench.py", *sys.argv[1:]]),
        "machine": machine(),
        "model": {
            "shape": a.shape,
            **SHAPES[a.shape],
            "vocab": len(tokenizer),
            "training": training_run,
            "trained_on_rows": len(training),
            "note": "trained from scratch on CPU for minutes",
        },
        "rows": len(texts),
        "handler_defaults": udf_handler.DEFAULT_SETTINGS,
        "results": results,
        "speedup_vs_baseline": {k: round(v["summaries_per_s"] / base, 2) for k, v in results.items()},
        "batching_gain_greedy_fp32": {
            "speedup": round(
                results["floe_greedy_fp32"]["summaries_per_s"] / results["scalar_greedy_fp32"]["summaries_per_s"], 2
            ),
            "identical_outputs": f"{matches}/{len(texts)}",
        },
        "examples": [
            {"reference": references[i], **{k: outputs[k][i] for k in ("baseline_scalar_beam2", "floe_default")}}
            for i in range(2)
        ],
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "udf_bench.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
