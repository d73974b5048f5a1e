"""Validation loss (teacher forced) and ROUGE-1/2/L of generated summaries.

Both run over length-sorted batches (`evaluation.batchSize` rows, padded to the longest row of the batch),
so a large validation split costs a few long batches rather than many short, padded ones. Generation stops
as soon as every sequence of a batch has ended. Sorting and batching change what runs together, not what
is computed: with greedy decoding the summaries equal those of one row at a time
(tests/trainer/test_evaluation.py).

Generation keeps its keys and values in a static cache (`generation_cache`): one buffer of the batch's final
length instead of a cache that grows by one position a step. With a growing cache every decode step has new
attention shapes, and on a GPU PyTorch's SDPA (the cuDNN backend) builds a new attention plan for each: measured
on an H200, about 130 ms a step, 20 s of the 23 s final evaluation of the default t5-small job
(bench/results/job.md, job_h200_f.jsonl). Attention reads only the positions filled so far (`FilledPrefixCache`:
SDPA's other backends need no plans). The summaries are those of the growing cache: masked positions add nothing
to attention (tests/trainer/test_evaluate_generation.py, greedy and beam search).

Beam search keeps each input's cross-attention keys and values once, not once per beam. Every beam of an input
attends over the same encoder output, so its keys and values are equal across the beams:
- Hugging Face reorders the whole cache after each step to follow the kept beams, but a beam is only ever replaced
  by a beam of the same input, so the cross-attention half would be moved onto equal values. That move was half
  of the GPU time of a beam-2 decode step (profiled on an H200, 2,048 rows of 512 source tokens: the gather of the
  cross-attention cache, 1.4 of 2.8 s over 30 steps). The cache moves only the decoder's own keys and values.
- Cross-attention then read every input's keys and values once per beam: 54% of the GPU time of the same decode
  steps, the memory-bound attention kernel (profiled again after the change above). The beams of an input now
  attend together, as the query rows of one attention over one copy (`evaluation_attention`).

Evaluation's attention leaves out the cuDNN backend (`modeling.without_cudnn_attention`), whose generations on an
H200 were not reproducible: 32 of 395 summaries changed between two identical runs, none with the other backends.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from transformers import AttentionInterface, EncoderDecoderCache, StaticCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from floe_trainer.batching import Tokenized, collate
from floe_trainer.modeling import without_cudnn_attention
from floe_trainer.rouge import rouge_scores


class PerInputCache(StaticCache):
    """Cross-attention keys and values, once per input: of the rows `generate` passes (each input's beams,
    adjacent), it keeps every `beams`-th."""

    def __init__(self, config, max_cache_len: int, beams: int):
        super().__init__(config=config, max_cache_len=max_cache_len)
        self.beams = beams

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return super().update(key_states[::self.beams], value_states[::self.beams], layer_idx, *args, **kwargs)


class FilledPrefixCache(StaticCache):
    """The decoder's own keys and values in static buffers, of which attention reads only the positions filled so
    far (counted here, not asked of the device): t positions at step t, not all `max_cache_len`."""

    def __init__(self, config, max_cache_len: int):
        super().__init__(config=config, max_cache_len=max_cache_len)
        self.filled = [0] * len(self.layers)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        self.filled[layer_idx] += key_states.shape[2]
        return keys[:, :, :self.filled[layer_idx]], values[:, :, :self.filled[layer_idx]]


class SharedCrossAttentionCache(EncoderDecoderCache):
    """An encoder-decoder cache whose cross-attention half is per input (`PerInputCache`) and whose beam
    reordering moves only the self-attention keys and values: beam search reorders among the beams of an input."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        # Not Hugging Face's layer reorder, which first asks the device whether the layer holds anything: a
        # synchronisation per layer and step, 6 of the 8 of a t5-small decode step.
        for layer in self.self_attention_cache.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys.index_select(0, beam_idx), layer.values.index_select(0, beam_idx)


def generation_cache(model, source_length: int, max_new_tokens: int, beams: int) -> SharedCrossAttentionCache:
    """Static buffers: the decoder's own positions (as many as `generate` would size them) and the sources'."""
    config = model.config.get_text_config(decoder=True)
    return SharedCrossAttentionCache(FilledPrefixCache(config, max_new_tokens),
                                     PerInputCache(config, source_length, beams))


EVALUATION_ATTENTION = "floe_evaluation"


def _evaluation_attention(module, query, key, value, attention_mask, *args, position_bias=None, **kwargs):
    """SDPA, with three differences that leave every number as it was:
    - T5's position bias in the queries' precision before it is combined with the mask. Under autocast SDPA would
      cast the combined (batch, head, query, key) bias anyway; cast first, the bias of each layer is materialised
      at half the size and not copied again (combining and copying were about half of the GPU time of an encoder
      pass over 2,048 rows of 512 tokens, profiled on an H200).
    - The mask cut to the keys there are (`FilledPrefixCache` passes the filled positions only).
    - Where the keys and values are per input and the queries per beam (cross-attention over a `PerInputCache`),
      the beams of an input are the query rows of one attention over that input's keys and values."""
    if position_bias is not None:
        position_bias = position_bias.to(query.dtype)
    if attention_mask is not None and attention_mask.shape[-1] > key.shape[-2]:
        attention_mask = attention_mask[..., :key.shape[-2]]
    inputs, beams = key.shape[0], query.shape[0] // key.shape[0]
    if beams == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, position_bias=position_bias,
                                      **kwargs)
    _, heads, query_length, dim = query.shape
    if query_length != 1:
        raise ValueError("beam-shared cross-attention decodes one position a step")
    grouped = query.reshape(inputs, beams, heads, dim).transpose(1, 2)  # (input, head, beam, dim)
    # The mask and bias of an input's beams are equal: the first beam's broadcast over all of them.
    mask = attention_mask[::beams] if attention_mask is not None else None
    bias = position_bias[::beams] if position_bias is not None and position_bias.shape[0] > 1 else position_bias
    out, _ = sdpa_attention_forward(module, grouped, key, value, mask, *args, position_bias=bias, **kwargs)
    return out.reshape(inputs * beams, 1, heads, dim), None  # (input, beam, head, dim) -> (row, position, head, dim)


AttentionInterface.register(EVALUATION_ATTENTION, _evaluation_attention)
AttentionMaskInterface.register(EVALUATION_ATTENTION, sdpa_mask)  # SDPA's masks


@contextlib.contextmanager
def evaluation_attention(model):
    """The model's attention through `_evaluation_attention` while it evaluates."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(EVALUATION_ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def length_sorted(data: Tokenized, n: int) -> list[int]:
    """The first `n` rows, longest source first (the longest batch runs first: an OOM shows at once)."""
    return np.argsort(-data.source_lengths()[:n], kind="stable").tolist()


@torch.no_grad()
@without_cudnn_attention()
def validation_loss(model, data: Tokenized, pad_id: int, batch_size: int, device, autocast,
                    pad_multiple: int = 8) -> float:
    """Mean token cross-entropy over the whole validation split (summed on the device, one sync at the end)."""
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    tokens = 0
    order = length_sorted(data, len(data))
    for start in range(0, len(order), batch_size):
        batch = collate(data, order[start:start + batch_size], pad_id, pad_multiple)
        tokens += int((batch["labels"] != -100).sum())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(), evaluation_attention(model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="sum")
    model.train()
    return total.item() / max(tokens, 1)


@torch.no_grad()
@without_cudnn_attention()
def generate(model, data: Tokenized, n: int, pad_id: int, batch_size: int, num_beams: int, max_new_tokens: int,
             device, autocast) -> list[list[int]]:
    """Generated token ids (special tokens included) for the first `n` rows, in row order."""
    model.eval()
    out: list[list[int]] = [[] for _ in range(n)]
    order = length_sorted(data, n)
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        batch = collate(data, rows, pad_id, pad_multiple=1)
        cache = generation_cache(model, batch["input_ids"].shape[1], max_new_tokens, num_beams)
        with autocast(), evaluation_attention(model):
            # disable_compile: Hugging Face would compile the greedy decode step over a static cache: 21.6 s of
            # compilation on an H200 (bench/results/job.md), more than the whole evaluation takes without it.
            ids = model.generate(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device),
                                 num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False,
                                 cache=cache, disable_compile=True)
        for row, sequence in zip(rows, ids.tolist(), strict=True):
            out[row] = sequence
    model.train()
    return out


def rouge(model, tokenizer, data: Tokenized, references: list[str], max_samples: int | None, num_beams: int,
          max_new_tokens: int, batch_size: int, device, autocast) -> dict:
    """ROUGE F1 of beam-searched summaries of the first `max_samples` validation rows (None: all of them)."""
    n = len(data) if max_samples is None else min(max_samples, len(data))
    ids = generate(model, data, n, tokenizer.pad_token_id, batch_size, num_beams, max_new_tokens, device, autocast)
    predictions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return {**rouge_scores(predictions, references[:n]), "rougeSamples": n}
