"""The summarization UDF's handler. This file is staged next to the model zip and imported by Snowflake,
so it depends only on the UDF's packages (pandas, torch, transformers, sentencepiece), never on floe.

- The model is loaded once per process from the UDF's import directory
  (`sys._xoptions["snowflake_import_directory"]`). The loaded model lives in a synthetic module in
  `sys.modules`, not in this module's globals: the Snowpark local emulator re-imports this module on every
  query, and cloudpickle (by value) then never tries to pickle a loaded model or a lock.
- `summarize` takes what each runtime gives it: a pandas DataFrame (Snowflake's vectorized call of a
  staged handler; column 0 is the text), a pandas Series (a Snowpark pandas UDF), or one plain value
  (the local emulator calls vectorized handlers once per row).
- Generation runs in batches of similar length (sorted by token count, so little padding) under
  `torch.inference_mode`; settings come from `floe_udf.json` inside the model zip.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import types
import zipfile

import pandas as pd

MODEL_ZIP = "floe_model.zip"
SETTINGS_FILE = "floe_udf.json"
MODEL_SUBDIR = "model"
_RUNTIME_MODULE = "_floe_udf_runtime"

# Generation defaults, chosen by bench/udf_bench.py (see bench/results/udf_*.md); floe_udf.json in the
# model zip may override each of them.
DEFAULT_SETTINGS = {
    "prefix": "summarize: ",
    "batchSize": 32,
    "sourceMaxLength": 512,
    "maxNewTokens": 150,
    "numBeams": 1,
    "repetitionPenalty": 2.5,
    "lengthPenalty": 1.0,
    "quantize": "dynamic-int8",
}


def _runtime() -> types.ModuleType:
    """The per-process home of loaded models; survives re-imports of this module."""
    runtime = sys.modules.get(_RUNTIME_MODULE)
    if runtime is None:
        runtime = sys.modules.setdefault(_RUNTIME_MODULE, types.ModuleType(_RUNTIME_MODULE))
    if not hasattr(runtime, "runners"):
        runtime.__dict__.setdefault("lock", threading.Lock())
        runtime.__dict__.setdefault("runners", {})
    return runtime


def _extract(zip_path: str, digest: str) -> str:
    """Unpack the model once per machine; the rename makes concurrent processes agree on one copy."""
    target = os.path.join(tempfile.gettempdir(), f"floe_model_{digest[:16]}")
    if os.path.isdir(target):
        return target
    scratch = tempfile.mkdtemp(prefix="floe_model_tmp_", dir=tempfile.gettempdir())
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(scratch)
    try:
        os.rename(scratch, target)
    except OSError:  # another process got there first
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class Summarizer:
    """A loaded model and tokenizer with the generation settings of one model zip."""

    def __init__(self, zip_path: str):
        import torch
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        with zipfile.ZipFile(zip_path) as archive:
            packaged = json.loads(archive.read(SETTINGS_FILE))
        self.settings = {**DEFAULT_SETTINGS, **packaged.get("generation", {})}
        if self.settings["quantize"] == "none":
            self.settings["quantize"] = None
        model_dir = os.path.join(_extract(zip_path, packaged["digest"]), MODEL_SUBDIR)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = T5ForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).eval()
        if self.settings["quantize"] == "dynamic-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self._torch = torch

    def summarize(self, texts: list[str]) -> list[str]:
        s = self.settings
        sources = [s["prefix"] + " ".join(text.split()) for text in texts]
        lengths = [
            len(ids) for ids in self.tokenizer(sources, truncation=True, max_length=s["sourceMaxLength"])["input_ids"]
        ]
        order = sorted(range(len(sources)), key=lambda i: lengths[i], reverse=True)
        results: list[str] = [""] * len(sources)
        with self._torch.inference_mode():
            for start in range(0, len(order), s["batchSize"]):
                chunk = order[start : start + s["batchSize"]]
                batch = self.tokenizer(
                    [sources[i] for i in chunk],
                    truncation=True,
                    max_length=s["sourceMaxLength"],
                    padding=True,
                    return_tensors="pt",
                )
                generated = self.model.generate(
                    **batch,
                    max_new_tokens=s["maxNewTokens"],
                    num_beams=s["numBeams"],
                    repetition_penalty=s["repetitionPenalty"],
                    length_penalty=s["lengthPenalty"],
                    early_stopping=s["numBeams"] > 1,
                    do_sample=False,
                )
                decoded = self.tokenizer.batch_decode(
                    generated, skip_special_tokens=True, clean_up_tokenization_spaces=True
                )
                for i, text in zip(chunk, decoded, strict=True):
                    results[i] = text
        return results


def _zip_digest(zip_path: str) -> str:
    with zipfile.ZipFile(zip_path) as archive:
        return json.loads(archive.read(SETTINGS_FILE))["digest"]


def summarizer_for(zip_path: str) -> Summarizer:
    """The process-wide Summarizer of a model zip, loaded on first use.

    Keyed by the model digest, not the path: the local emulator gives each query a new import directory.
    """
    runtime = _runtime()
    key = _zip_digest(zip_path)
    runner = runtime.runners.get(key)
    if runner is None:
        with runtime.lock:
            runner = runtime.runners.get(key)
            if runner is None:
                runner = Summarizer(zip_path)
                runtime.runners[key] = runner
    return runner


def _import_directory_zip() -> str:
    directory = sys._xoptions.get("snowflake_import_directory")
    if not directory:
        raise RuntimeError("snowflake_import_directory is not set: summarize runs inside a Snowflake UDF")
    return os.path.join(directory, MODEL_ZIP)


def summarize(texts):
    """UDF handler: summaries for a DataFrame (column 0), a Series, or one value; nulls stay null."""
    if isinstance(texts, pd.DataFrame):
        texts = texts.iloc[:, 0]
    if not isinstance(texts, pd.Series):  # the local emulator's per-row call
        return summarize(pd.Series([texts]))[0]
    present = [i for i, value in enumerate(texts) if isinstance(value, str)]
    summaries = summarizer_for(_import_directory_zip()).summarize([texts.iloc[i] for i in present]) if present else []
    out = [None] * len(texts)
    for i, summary in zip(present, summaries, strict=True):
        out[i] = summary
    return pd.Series(out, index=texts.index, dtype=object)


# Snowflake calls a staged handler with batches when it carries these attributes.
summarize._sf_vectorized_input = pd.DataFrame
summarize._sf_max_batch_size = DEFAULT_SETTINGS["batchSize"] * 4
