"""The summarization UDF's handler. This file is staged next to the model zip and imported by Snowflake,
so it depends only on the UDF's packages (pandas, torch, transformers, sentencepiece; onnx and onnxruntime
for `backend: onnx`), never on floe.

- The model is loaded once per process from the UDF's import directory
  (`sys._xoptions["snowflake_import_directory"]`). The loaded model lives in a synthetic module in
  `sys.modules`, not in this module's globals: the Snowpark local emulator re-imports this module on every
  query, and cloudpickle (by value) then never tries to pickle a loaded model or a lock.
- `summarize` takes what each runtime gives it: a pandas DataFrame (Snowflake's vectorized call of a
  staged handler; column 0 is the text), a pandas Series (a Snowpark pandas UDF), or one plain value
  (the local emulator calls vectorized handlers once per row).
- Generation runs in batches of similar length (sorted by token count, so little padding) under
  `torch.inference_mode`; settings come from `floe_udf.json` inside the model zip.
- `backend: onnx` (the default) decodes greedily on onnxruntime's CPU provider instead: the encoder (which
  also projects the cross-attention keys and values, once per batch) and a one-step decoder with a
  key/value cache are exported from the loaded model once per machine (int8 with `quantize: dynamic-int8`,
  by onnxruntime's dynamic quantization); the cache stays in onnxruntime's memory between steps (IO
  binding), and ended rows leave the batch. `numBeams` > 1 runs torch's beam search. The batching above
  stays the same.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

MODEL_ZIP = "floe_model.zip"
SETTINGS_FILE = "floe_udf.json"
BATCH_FILE = "floe_batch.json"  # staged by the deployer: {"maxBatchSize": n}, chosen from measured latency
MODEL_SUBDIR = "model"
_RUNTIME_MODULE = "_floe_udf_runtime"
ONNX_GRAPHS_VERSION = 2  # in the cached graphs' directory name: a handler never loads another's layout

# Generation defaults, chosen by bench/udf_bench.py (bench/results/udf_bench.md); floe_udf.json in the model zip
# may override each of them. fp32 by default: the function returns the model's own greedy outputs, the ones
# its evaluation measured (dynamic-int8 changes some of them).
DEFAULT_SETTINGS = {
    "prefix": "summarize: ",
    "batchSize": 32,
    "sourceMaxLength": 512,
    "maxNewTokens": 150,
    "numBeams": 1,
    "repetitionPenalty": 2.5,
    "lengthPenalty": 1.0,
    "quantize": "none",
    "backend": "onnx",  # greedy decoding on ONNX Runtime; numBeams > 1 decodes with torch's beam search
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


def _heads(x, d_kv):
    """[B, T, H*d_kv] -> [B, H, T, d_kv]"""
    return x.view(x.shape[0], x.shape[1], -1, d_kv).transpose(1, 2)


def _attend(q, keys_t, v, bias):
    """T5 attention (no 1/sqrt(d) scaling; the bias carries relative positions or the padding mask), with
    the keys stored transposed ([B, H, d_kv, T]) so that no step copies them to transpose them."""
    weights = torch.softmax(q @ keys_t + bias, dim=-1)
    out = weights @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


class EncoderWithCrossKV(torch.nn.Module):
    """The encoder, plus each decoder layer's cross-attention keys (transposed) and values, computed once
    per batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        d_kv = self.model.config.d_kv
        out = []
        for block in self.model.decoder.block:
            cross = block.layer[1].EncDecAttention
            out += [_heads(cross.k(hidden), d_kv).transpose(2, 3).contiguous(), _heads(cross.v(hidden), d_kv)]
        return tuple(out)


class DecoderStep(torch.nn.Module):
    """One decoding step with cached self-attention keys/values, written out with the model's own layers
    so that it exports to ONNX as a plain graph (the library's cache objects do not)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_mask, *cache):  # cache: per layer self k^T, self v, cross k^T, cross v
        config, decoder = self.model.config, self.model.decoder
        hidden = decoder.embed_tokens(input_ids)
        past = cache[1].shape[2]
        rel = decoder.block[0].layer[0].SelfAttention
        relative = torch.arange(past + 1) - past
        bucket = rel._relative_position_bucket(
            relative,
            bidirectional=False,
            num_buckets=rel.relative_attention_num_buckets,
            max_distance=rel.relative_attention_max_distance,
        )
        self_bias = rel.relative_attention_bias(bucket).transpose(0, 1)[None, :, None, :]
        cross_bias = (1.0 - encoder_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        new_cache = []
        for i, block in enumerate(decoder.block):
            self_layer, cross_layer, ff = block.layer
            past_k, past_v, cross_k, cross_v = cache[4 * i : 4 * i + 4]
            sa, ca = self_layer.SelfAttention, cross_layer.EncDecAttention
            x = self_layer.layer_norm(hidden)
            k = torch.cat([past_k, _heads(sa.k(x), config.d_kv).transpose(2, 3)], dim=3)
            v = torch.cat([past_v, _heads(sa.v(x), config.d_kv)], dim=2)
            hidden = hidden + sa.o(_attend(_heads(sa.q(x), config.d_kv), k, v, self_bias))
            x = cross_layer.layer_norm(hidden)
            hidden = hidden + ca.o(_attend(_heads(ca.q(x), config.d_kv), cross_k, cross_v, cross_bias))
            hidden = ff(hidden)
            new_cache += [k, v]
        hidden = decoder.final_layer_norm(hidden)
        if config.scale_decoder_outputs:
            hidden = hidden * (config.d_model**-0.5)
        return (self.model.lm_head(hidden)[:, 0], *new_cache)


def export_onnx(model, out_dir: Path) -> tuple[Path, Path]:
    """encoder.onnx and decoder_step.onnx for greedy decoding with a key/value cache."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    layers = config.num_decoder_layers
    ids = torch.ones(2, 7, dtype=torch.long)
    mask = torch.ones(2, 7, dtype=torch.long)
    cross_names = [f"cross_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    keys_axes, values_axes = {0: "batch", 3: "source"}, {0: "batch", 2: "source"}
    encoder_path, decoder_path = out_dir / "encoder.onnx", out_dir / "decoder_step.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            EncoderWithCrossKV(model).eval(),
            (ids, mask),
            encoder_path,
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=cross_names,
            dynamic_axes={
                "input_ids": {0: "batch", 1: "source"},
                "attention_mask": {0: "batch", 1: "source"},
                **{n: keys_axes if "_k_" in n else values_axes for n in cross_names},
            },
        )
        cross = EncoderWithCrossKV(model).eval()(ids, mask)
        past_k = torch.zeros(2, config.num_heads, config.d_kv, 3)
        past_v = torch.zeros(2, config.num_heads, 3, config.d_kv)
        cache, cache_names, new_names, axes = [], [], [], {}
        for i in range(layers):
            cache += [past_k, past_v, cross[2 * i], cross[2 * i + 1]]
            cache_names += [f"past_k_{i}", f"past_v_{i}", f"cross_k_{i}", f"cross_v_{i}"]
            new_names += [f"new_k_{i}", f"new_v_{i}"]
            axes.update(
                {
                    f"past_k_{i}": {0: "batch", 3: "past"},
                    f"past_v_{i}": {0: "batch", 2: "past"},
                    f"cross_k_{i}": keys_axes,
                    f"cross_v_{i}": values_axes,
                    f"new_k_{i}": {0: "batch", 3: "next"},
                    f"new_v_{i}": {0: "batch", 2: "next"},
                }
            )
        torch.onnx.export(
            DecoderStep(model).eval(),
            (ids[:, :1], mask, *cache),
            decoder_path,
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "encoder_mask", *cache_names],
            output_names=["logits", *new_names],
            dynamic_axes={
                "input_ids": {0: "batch"},
                "encoder_mask": {0: "batch", 1: "source"},
                "logits": {0: "batch"},
                **axes,
            },
        )
    return encoder_path, decoder_path


def quantize_onnx(paths: tuple[Path, Path], out_dir: Path) -> tuple[Path, Path]:
    """onnxruntime's dynamic int8 quantization of both graphs (int8 weights, activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    quantized = tuple(out_dir / p.name for p in paths)
    for src, dst in zip(paths, quantized, strict=True):
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return quantized


class OnnxT5:
    """Greedy generation with onnxruntime's CPU provider, with the library's `generate` arguments that
    Summarizer uses; outputs match the torch model's greedy decoding (same repetition penalty, padding
    after the end-of-sequence token).

    Every step reads the cache the previous step left in onnxruntime's memory (IO binding: no copies
    through numpy), and rows that have ended leave the batch once a quarter of it has ended (each exit
    copies the cache of the rows that stay, so it is not done for every row)."""

    def __init__(self, encoder_path: Path, decoder_path: Path, config):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder_path), options, providers=providers)
        self.config = config

    def generate(
        self, input_ids, attention_mask, max_new_tokens, repetition_penalty, num_beams=1, min_new_tokens=0, **_
    ):
        from onnxruntime import OrtValue

        if num_beams != 1:
            raise ValueError("the ONNX path decodes greedily (numBeams 1)")
        c, layers = self.config, self.config.num_decoder_layers
        mask = np.ascontiguousarray(attention_mask.numpy())
        encoding = self.encoder.io_binding()
        encoding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids.numpy()))
        encoding.bind_cpu_input("attention_mask", mask)
        for output in self.encoder.get_outputs():
            encoding.bind_output(output.name)
        self.encoder.run_with_iobinding(encoding)
        cross = encoding.get_outputs()  # per layer: keys transposed, values
        batch = mask.shape[0]
        past = []
        for _ in range(layers):
            past += [
                OrtValue.ortvalue_from_numpy(np.zeros((batch, c.num_heads, c.d_kv, 0), dtype=np.float32)),
                OrtValue.ortvalue_from_numpy(np.zeros((batch, c.num_heads, 0, c.d_kv), dtype=np.float32)),
            ]
        rows = np.arange(batch)  # the input row of each row still in the batch
        tokens = np.full((batch, 1), c.decoder_start_token_id, dtype=np.int64)
        ended = np.zeros(batch, dtype=bool)
        results: list[np.ndarray | None] = [None] * batch
        kept: list[np.ndarray] = []  # numpy arrays that OrtValues of a smaller batch point into
        step = self.decoder.io_binding()
        output_names = [output.name for output in self.decoder.get_outputs()]
        for generated in range(max_new_tokens):
            step.bind_cpu_input("input_ids", np.ascontiguousarray(tokens[:, -1:]))
            step.bind_cpu_input("encoder_mask", mask)
            for i in range(layers):
                step.bind_ortvalue_input(f"past_k_{i}", past[2 * i])
                step.bind_ortvalue_input(f"past_v_{i}", past[2 * i + 1])
                step.bind_ortvalue_input(f"cross_k_{i}", cross[2 * i])
                step.bind_ortvalue_input(f"cross_v_{i}", cross[2 * i + 1])
            step.clear_binding_outputs()
            for name in output_names:
                step.bind_output(name)
            self.decoder.run_with_iobinding(step)
            logits, *past = step.get_outputs()
            logits = logits.numpy()
            # the library's repetition penalty: every token generated so far, the start token included
            seen = np.take_along_axis(logits, tokens, axis=1)
            penalized = np.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
            np.put_along_axis(logits, tokens, penalized, axis=1)
            if generated < min_new_tokens:
                logits[:, c.eos_token_id] = -np.inf
            tokens = np.concatenate([tokens, logits.argmax(-1)[:, None]], axis=1)
            for j in np.flatnonzero(~ended & (tokens[:, -1] == c.eos_token_id)):
                results[rows[j]] = tokens[j]
            ended |= tokens[:, -1] == c.eos_token_id
            if ended.all():
                break
            if ended.sum() * 4 >= len(rows):  # early exit: the rows still decoding go on alone
                stay = np.flatnonzero(~ended)
                kept = [np.ascontiguousarray(value.numpy()[stay]) for value in [*past, *cross]]
                values = [OrtValue.ortvalue_from_numpy(array) for array in kept]
                past, cross = values[: 2 * layers], values[2 * layers :]
                rows, tokens, ended, mask = rows[stay], tokens[stay], ended[stay], np.ascontiguousarray(mask[stay])
        for j in np.flatnonzero(~ended):
            results[rows[j]] = tokens[j]
        longest = max(len(r) for r in results)
        padded = np.full((batch, longest), c.pad_token_id, dtype=np.int64)
        for i, result in enumerate(results):
            padded[i, : len(result)] = result
        return torch.from_numpy(padded)


def _onnx_graphs(model, model_dir: str, quantize: str | None) -> tuple[Path, Path]:
    """Exported (and quantized) once per machine next to the extracted model; the rename settles races."""
    target = Path(model_dir).parent / f"onnx-v{ONNX_GRAPHS_VERSION}-{quantize or 'fp32'}"
    if not target.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix="onnx_tmp_", dir=target.parent))
        paths = export_onnx(model, scratch / "fp32")
        if quantize == "dynamic-int8":
            paths = quantize_onnx(paths, scratch / "int8")
        for path in paths:
            path.rename(scratch / path.name)
        try:
            os.rename(scratch, target)
        except OSError:  # another process got there first
            shutil.rmtree(scratch, ignore_errors=True)
    return target / "encoder.onnx", target / "decoder_step.onnx"


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
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        with zipfile.ZipFile(zip_path) as archive:
            packaged = json.loads(archive.read(SETTINGS_FILE))
        self.settings = {**DEFAULT_SETTINGS, **packaged.get("generation", {})}
        if self.settings["quantize"] == "none":
            self.settings["quantize"] = None
        model_dir = os.path.join(_extract(zip_path, packaged["digest"]), MODEL_SUBDIR)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = T5ForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).eval()
        if self.settings["backend"] == "onnx" and self.settings["numBeams"] == 1:  # beam search stays on torch
            model = OnnxT5(*_onnx_graphs(model, model_dir, self.settings["quantize"]), model.config)
        elif self.settings["quantize"] == "dynamic-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model

    def summarize(self, texts: list[str], **generate) -> list[str]:
        s = self.settings
        sources = [s["prefix"] + " ".join(text.split()) for text in texts]
        lengths = [
            len(ids) for ids in self.tokenizer(sources, truncation=True, max_length=s["sourceMaxLength"])["input_ids"]
        ]
        order = sorted(range(len(sources)), key=lambda i: lengths[i], reverse=True)
        results: list[str] = [""] * len(sources)
        with torch.inference_mode():
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
                    **generate,
                )
                decoded = self.tokenizer.batch_decode(
                    generated, skip_special_tokens=True, clean_up_tokenization_spaces=True
                )
                for i, text in zip(chunk, decoded, strict=True):
                    results[i] = text
        return results

    def seconds_per_row(self, rows: int) -> float:
        """Latency per row in the worst case: `rows` rows of sourceMaxLength tokens, each decoded to
        maxNewTokens (no row ends early)."""
        longest = " ".join(["news"] * self.settings["sourceMaxLength"])
        start = time.perf_counter()
        self.summarize([longest] * rows, min_new_tokens=self.settings["maxNewTokens"])
        return (time.perf_counter() - start) / rows


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


def _registered_max_batch_size() -> int:
    """The largest batch Snowflake may send: the deployer's choice from latency measured on its pod, staged
    among the imports; the handler's batch size where there is none."""
    directory = sys._xoptions.get("snowflake_import_directory")
    path = os.path.join(directory, BATCH_FILE) if directory else ""
    if not os.path.isfile(path):
        return DEFAULT_SETTINGS["batchSize"]
    with open(path) as file:
        return int(json.load(file)["maxBatchSize"])


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
summarize._sf_max_batch_size = _registered_max_batch_size()
