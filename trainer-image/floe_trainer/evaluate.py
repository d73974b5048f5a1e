"""Validation loss (teacher forced) and ROUGE-1/2/L of generated summaries.

Both run over length-sorted batches (`evaluation.batchSize` rows, padded to the longest row of the batch),
so a large validation split costs a few long batches rather than many short, padded ones. Generation stops
as soon as every sequence of a batch has ended. Sorting and batching change what runs together, not what
is computed: with greedy decoding the summaries equal those of one row at a time
(tests/trainer/test_evaluation.py).

Generation keeps its keys and values in a static cache (`GENERATION_CACHE`): one buffer of the batch's final
length instead of a cache that grows by one position a step. With a growing cache every decode step has new
attention shapes, and on a GPU PyTorch's SDPA (the cuDNN backend) builds a new attention plan for each: measured
on an H200, about 130 ms a step, 20 s of the 23 s final evaluation of the default t5-small job
(bench/results/job.md, job_h200_f.jsonl). The summaries are those of the growing cache: masked positions add
nothing to attention (tests/trainer/test_evaluate_generation.py, greedy and beam search).

Evaluation's attention leaves out the cuDNN backend (`modeling.without_cudnn_attention`), whose generations on an
H200 were not reproducible: 32 of 395 summaries changed between two identical runs, none with the other backends.

ROUGE-L's longest common subsequence is counted on bit vectors (`lcs_length`) instead of rouge_score's Python
table: the same number, about 100 times faster for 60 and 150 tokens; the table took most of the 2.3 s of
scoring 395 summaries on an H200 machine.
"""

from __future__ import annotations

import torch

from floe_trainer.batching import Tokenized, collate
from floe_trainer.modeling import without_cudnn_attention

# Hugging Face compiles the decode step of greedy search over a static cache unless told not to: 21.6 s of
# compilation on an H200 (bench/results/job.md), more than the whole evaluation takes without it.
GENERATION_CACHE = {"cache_implementation": "static", "disable_compile": True}


def length_sorted(data: Tokenized, n: int) -> list[int]:
    """The first `n` rows, longest source first (the longest batch runs first: an OOM shows at once)."""
    return sorted(range(n), key=lambda i: -len(data.sources[i]))


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
        with autocast():
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
        with autocast():
            ids = model.generate(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device),
                                 num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False,
                                 **GENERATION_CACHE)
        for row, sequence in zip(rows, ids.tolist(), strict=True):
            out[row] = sequence
    model.train()
    return out


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel: one bit per token of `a`)."""
    positions: dict[str, int] = {}
    for i, token in enumerate(a):
        positions[token] = positions.get(token, 0) | 1 << i
    all_bits = (1 << len(a)) - 1
    v = all_bits  # zero bits: the LCS so far
    for token in b:
        u = v & positions.get(token, 0)
        v = ((v + u) | (v - u)) & all_bits
    return len(a) - v.bit_count()


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L F1 (0..1) of predictions against references, as rouge_score's RougeScorer computes them."""
    from rouge_score import rouge_scorer, scoring, tokenizers  # only where ROUGE is asked for (lean step loop)

    ngram_scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        for key, score in ngram_scorer.score(reference, prediction).items():
            sums[key] += score.fmeasure
        target, predicted = tokenizer.tokenize(reference), tokenizer.tokenize(prediction)
        if target and predicted:
            common = lcs_length(target, predicted)
            sums["rougeL"] += scoring.fmeasure(common / len(predicted), common / len(target))
    return {key: round(value / max(len(predictions), 1), 4) for key, value in sums.items()}


def rouge(model, tokenizer, data: Tokenized, references: list[str], max_samples: int | None, num_beams: int,
          max_new_tokens: int, batch_size: int, device, autocast) -> dict:
    """ROUGE F1 of beam-searched summaries of the first `max_samples` validation rows (None: all of them)."""
    n = len(data) if max_samples is None else min(max_samples, len(data))
    ids = generate(model, data, n, tokenizer.pad_token_id, batch_size, num_beams, max_new_tokens, device, autocast)
    predictions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return {**rouge_scores(predictions, references[:n]), "rougeSamples": n}
