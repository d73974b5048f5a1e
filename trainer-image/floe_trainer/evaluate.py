"""Validation loss (teacher forced) and ROUGE-1/2/L of generated summaries."""

from __future__ import annotations

import torch

from floe_trainer.batching import Tokenized, collate


@torch.no_grad()
def validation_loss(model, data: Tokenized, pad_id: int, batch_size: int, device, autocast) -> float:
    """Mean token cross-entropy over the whole validation split."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = collate(data, list(range(start, min(start + batch_size, len(data)))), pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="sum").item()
        tokens += int((batch["labels"] != -100).sum())
    model.train()
    return total / max(tokens, 1)


@torch.no_grad()
def rouge(model, tokenizer, data: Tokenized, references: list[str], max_samples: int, num_beams: int,
          max_new_tokens: int, batch_size: int, device, autocast) -> dict:
    """ROUGE F1 (0..1) of beam-searched summaries of the first `max_samples` validation rows."""
    model.eval()
    n = min(max_samples, len(data))
    predictions = []
    for start in range(0, n, batch_size):
        batch = collate(data, list(range(start, min(start + batch_size, n))), tokenizer.pad_token_id)
        with autocast():
            out = model.generate(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device),
                                 num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        predictions += tokenizer.batch_decode(out, skip_special_tokens=True)
    model.train()
    from rouge_score import rouge_scorer  # only where ROUGE is asked for (keeps the step loop's imports lean)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references[:n], strict=True):
        for key, score in scorer.score(reference, prediction).items():
            sums[key] += score.fmeasure
    return {key: round(value / n, 4) for key, value in sums.items()}
