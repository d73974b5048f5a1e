#!/usr/bin/env python3
"""Batch scoring on CPU: the straightforward scalar UDF against floe's vectorized UDF handler.

Both sides use the same trained model and the same rows, in the same run:
- baseline: model loaded once, then per row tokenize + generate with the seed's evaluation settings
  (num_beams=2, max_length=150, repetition_penalty=2.5, length_penalty=1.0, early_stopping=True);
- floe: `udf_handler.summarize` on a pandas Series (what Snowflake calls), from the packaged model zip,
  with the handler's defaults; plus variants (fp32 / dynamic int8, greedy / beams) to show each effect;
- ONNX Runtime: the same handler with `backend: onnx` (greedy generation on onnxruntime's CPU provider:
  the encoder and a one-step decoder with a key/value cache exported with torch.onnx), in fp32 and after
  onnxruntime's dynamic int8 quantization;
- pure batching gain: greedy decoding, fp32, scalar vs batched; the outputs must match exactly.

The model: a T5 of the given shape with a SentencePiece tokenizer trained on the data, trained from
scratch for --train-seconds with a plain torch loop (AdamW, "summarize: " prefix). Quality is that of a
model trained for minutes on CPU; ROUGE is reported to compare the decoding paths, not the model.

Usage: bench/udf_bench.py --data news_summary.csv [--rows 24] [--train-seconds 240] [--repeats 3] [--out bench/results]
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

import numpy as np
import onnxruntime as ort
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
    "small": dict(d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64),  # t5-small's
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


def rouge_rows(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]
    return {k: [s[k].fmeasure for s in scores] for k in ("rouge1", "rouge2", "rougeL")}


def paired_change(rows: list[float], reference_rows: list[float]) -> dict:
    """Mean per-row change against a reference path, with a 95% interval (normal approximation)."""
    diffs = np.array(rows) - np.array(reference_rows)
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(len(diffs))
    return {
        "mean": round(float(diffs.mean()), 4),
        "ci95": [round(float(diffs.mean() - half), 4), round(float(diffs.mean() + half), 4)],
    }


def timed(fn, texts):
    start = time.perf_counter()
    outputs = fn(texts)
    seconds = time.perf_counter() - start
    return outputs, {"seconds": round(seconds, 2), "summaries_per_s": round(len(texts) / seconds, 3)}


# The floe_* and torch_* variants run the handler's torch backend; floe_default runs whatever it defaults to.
TORCH = {"backend": "torch"}
DEFAULTS = f"{udf_handler.DEFAULT_SETTINGS['backend']} {udf_handler.DEFAULT_SETTINGS['quantize']}"


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


def onnx_variant(model_dir: Path, work: Path, name: str, quantized: bool, generation: dict | None = None):
    """The handler with `backend: onnx` (greedy decoding on onnxruntime), fp32 or dynamic int8."""
    quantize = "dynamic-int8" if quantized else "none"
    return handler_variant(model_dir, work, name, {**(generation or {}), "backend": "onnx", "quantize": quantize})


def speed_workload(shape: str, tokenizer, work: Path, texts: list[str], new_tokens: int, repeats: int) -> dict:
    """Random weights and no end-of-sequence token: every path generates exactly `new_tokens` per row."""
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
        decoder_start_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    model_dir = work / f"random-{shape}"
    T5ForConditionalGeneration(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    fixed = {"maxNewTokens": new_tokens}
    paths = {
        "torch_fp32": handler_variant(model_dir, work, f"{shape}-fp32", {**fixed, **TORCH, "quantize": "none"}),
        "torch_int8": handler_variant(model_dir, work, f"{shape}-int8", {**fixed, **TORCH}),
        "onnx_fp32": onnx_variant(model_dir, work, f"{shape}-onnx", False, fixed),
        "onnx_int8": onnx_variant(model_dir, work, f"{shape}-onnxi8", True, fixed),
    }
    results = {}
    for name, fn in paths.items():
        runs = [timed(fn, texts)[1] for _ in range(repeats)]
        results[name] = {**min(runs, key=lambda run: run["seconds"]), "runs_s": [run["seconds"] for run in runs]}
        print(json.dumps({f"speed_{shape}_{name}": results[name]}), flush=True)
    base = results["torch_fp32"]["summaries_per_s"]
    return {
        "shape": {"name": shape, **SHAPES[shape], "vocab": len(tokenizer)},
        "new_tokens_per_row": new_tokens,
        "results": results,
        "speedup_vs_torch_fp32": {k: round(v["summaries_per_s"] / base, 2) for k, v in results.items()},
    }


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    ap.add_argument("--train-seconds", type=float, default=240)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the best is kept)")
    ap.add_argument(
        "--speed-shapes",
        type=lambda v: v.split(","),
        default=["mini", "small"],
        help="random-weight models timed with a fixed number of new tokens",
    )
    ap.add_argument("--speed-new-tokens", type=int, default=64)
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
    per_row: dict[str, dict[str, list[float]]] = {}

    def record(name, fn, repeats=1):
        runs = [timed(fn, texts) for _ in range(repeats)]
        out, timing = min(runs, key=lambda run: run[1]["seconds"])
        outputs[name] = out
        per_row[name] = rouge_rows(out, references)
        lengths = [len(ids) for ids in tokenizer(out)["input_ids"]]
        results[name] = {
            **timing,
            "runs_s": [r[1]["seconds"] for r in runs],
            **{k: round(float(np.mean(v)), 4) for k, v in per_row[name].items()},
            "mean_summary_tokens": round(sum(lengths) / len(lengths), 1),
        }
        print(json.dumps({name: results[name]}), flush=True)

    r = a.repeats
    record("baseline_scalar_beam2", lambda t: scalar_udf(model, tokenizer, t, **SEED_EVAL), r)
    record("floe_default", handler_variant(model_dir, work, "default", {}), r)
    record("floe_greedy_fp32", handler_variant(model_dir, work, "greedy", {**TORCH, "quantize": "none"}), r)
    record("onnx_greedy_fp32", onnx_variant(model_dir, work, "onnx", quantized=False), r)
    record("onnx_greedy_int8", onnx_variant(model_dir, work, "onnxi8", quantized=True), r)
    beam2 = {**TORCH, "numBeams": 2}
    record("floe_beam2_fp32", handler_variant(model_dir, work, "beam2", {**beam2, "quantize": "none"}), r)
    record("floe_beam2_int8", handler_variant(model_dir, work, "beam2i8", beam2), r)
    greedy = dict(num_beams=1, max_new_tokens=150, repetition_penalty=2.5, do_sample=False)
    record("scalar_greedy_fp32", lambda t: scalar_udf(model, tokenizer, t, **greedy), r)

    def same(x, y):
        return f"{sum(p == q for p, q in zip(outputs[x], outputs[y], strict=True))}/{len(texts)}"

    speed = [speed_workload(shape, tokenizer, work, texts, a.speed_new_tokens, r) for shape in a.speed_shapes]
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
        "identical_outputs": {
            "onnx_greedy_fp32 vs floe_greedy_fp32": same("onnx_greedy_fp32", "floe_greedy_fp32"),
            "onnx_greedy_int8 vs floe_greedy_fp32": same("onnx_greedy_int8", "floe_greedy_fp32"),
            f"floe_default ({DEFAULTS}) vs floe_greedy_fp32": same("floe_default", "floe_greedy_fp32"),
        },
        "rouge_change_vs_floe_greedy_fp32": {
            name: {k: paired_change(per_row[name][k], per_row["floe_greedy_fp32"][k]) for k in per_row[name]}
            for name in ("floe_default", "onnx_greedy_fp32", "onnx_greedy_int8")
        },
        "speed_random_weights": speed,
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
