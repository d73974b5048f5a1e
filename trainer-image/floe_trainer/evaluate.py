"""Validation loss (teacher forced) and ROUGE-1/2/L of generated summaries.

Both run over length-sorted batches (`evaluation.batchSize` rows, padded to the longest row of the batch),
so a large validation split costs a few long batches rather than many short, padded ones. Generation stops
as soon as every sequence of a batch has ended. Sorting and batching change what runs together, not what
is computed: with greedy decoding the summaries equal those of one row at a time
(tests/trainer/test_evaluation.py).
"""

from __future__ import annotations

import torch

from floe_trainer.batching import Tokenized, collate


def length_sorted(data: Tokenized, n: int) -> list[int]:
    """The first `n` rows, longest source first (the longest batch runs first: an OOM shows at once)."""
    return sorted(range(n), key=lambda i: -len(data.sources[i]))


@torch.no_grad()
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
                                 num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        for row, sequence in zip(rows, ids.tolist(), strict=True):
            out[row] = sequence
    model.train()
    return out


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L F1 (0..1) of predictions against references."""
    from rouge_score import rouge_scorer  # only where ROUGE is asked for (keeps the step loop's imports lean)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        for key, score in scorer.score(reference, prediction).items():
            sums[key] += score.fmeasure
    return {key: round(value / max(len(predictions), 1), 4) for key, value in sums.items()}


def rouge(model, tokenizer, data: Tokenized, references: list[str], max_samples: int | None, num_beams: int,
          max_new_tokens: int, batch_size: int, device, autocast) -> dict:
    """ROUGE F1 of beam-searched summaries of the first `max_samples` validation rows (None: all of them)."""
    n = len(data) if max_samples is None else min(max_samples, len(data))
    ids = generate(model, data, n, tokenizer.pad_token_id, batch_size, num_beams, max_new_tokens, device, autocast)
    predictions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return {**rouge_scores(predictions, references[:n]), "rougeSamples": n}
