"""The fast evaluation path (length-sorted, padded batches) computes what one row at a time computes.

The model runs in float64 here: batching changes the order of float additions, and a random model's top two
tokens can lie within float32 rounding of each other; in float64 only a real difference shows.
"""

import contextlib

import pytest
import torch
from floe_trainer import data, evaluate
from floe_trainer.batching import collate, tokenize
from floe_trainer.config import ScratchShape, parse_config
from floe_trainer.modeling import SHAPES, train_tokenizer
from floe_trainer.text_encoder import TextEncoder
from floe_trainer.trainer import PREFIX, autocast_factory
from transformers import T5Config, T5ForConditionalGeneration

from .conftest import NEWS_CSV

ROWS = 24
CPU = torch.device("cpu")
FP32 = autocast_factory(CPU, None)  # what the trainer runs on CPU: no autocast


@pytest.fixture(scope="module")
def model_and_rows(tmp_path_factory):
    """A random tiny T5 in float64 and validation rows of many lengths. Its output layer is its own and its
    weights 5x T5's initial scale: as initialised, a random T5 generates the same tokens whatever the input."""
    spec = parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}},
                         "dataset": {"file": {"path": str(NEWS_CSV)}}})
    prepared = data.load(spec.dataset)
    tokenizer = train_tokenizer([PREFIX + d for d in prepared.train.documents] + prepared.train.summaries, 2000,
                                tmp_path_factory.mktemp("tokenizer"))
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False, initializer_factor=5.0, **SHAPES[ScratchShape.tiny])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).double().eval()
    rows = tokenize(prepared.validation.subset(range(ROWS)), TextEncoder.of(tokenizer), PREFIX, 512, 150)
    return model, tokenizer, rows


def test_batched_greedy_generations_equal_one_row_at_a_time(model_and_rows):
    model, tokenizer, rows = model_and_rows
    assert len(set(rows.source_lengths().tolist())) > 1  # rows of different lengths share padded batches
    fast = evaluate.generate(model, rows, ROWS, tokenizer.pad_token_id, batch_size=8, num_beams=1, max_new_tokens=20,
                             device=CPU, autocast=FP32)
    reference = []
    model.eval()  # evaluate.generate hands the model back in training mode, for the step loop
    with torch.no_grad():
        for i in range(ROWS):  # the reference path: each row alone, unpadded
            ids = torch.tensor([rows.source(i).tolist()])
            reference.append(model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=1,
                                            max_new_tokens=20, do_sample=False)[0].tolist())
    strip = [[t for t in seq if t != tokenizer.pad_token_id] for seq in fast]
    assert strip == [[t for t in seq if t != tokenizer.pad_token_id] for seq in reference]
    assert len({tuple(s) for s in strip}) > 1  # the rows' summaries differ: the comparison means something


def test_batched_validation_loss_equals_the_row_by_row_mean(model_and_rows):
    model, tokenizer, rows = model_and_rows
    fast = evaluate.validation_loss(model, rows, tokenizer.pad_token_id, batch_size=7, device=CPU, autocast=FP32)
    total = tokens = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(ROWS):
            batch = collate(rows, [i], tokenizer.pad_token_id, pad_multiple=1)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                       reduction="sum").item()
            tokens += len(rows.target(i))
    assert fast == pytest.approx(total / tokens, rel=1e-5)


def test_validation_loss_under_bf16_autocast_hands_sdpa_a_bf16_bias_and_keeps_the_loss(model_and_rows, monkeypatch):
    """The evaluation's attention casts T5's position bias to the queries' precision before combining it with the
    mask: SDPA gets bfloat16 where Hugging Face's SDPA path hands it float32 (which autocast then copies to
    bfloat16), and the loss is that path's bit for bit."""
    float64_model, tokenizer, rows = model_and_rows
    model = T5ForConditionalGeneration(float64_model.config)
    model.load_state_dict(float64_model.state_dict())
    model.set_attn_implementation("sdpa")
    bf16 = autocast_factory(CPU, torch.bfloat16)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    mask_dtypes = []

    def recording_sdpa(*args, attn_mask=None, **kwargs):
        mask_dtypes.append(attn_mask.dtype)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    with monkeypatch.context() as hugging_face_path:
        hugging_face_path.setattr(evaluate, "evaluation_attention", lambda model: contextlib.nullcontext())
        reference = evaluate.validation_loss(model, rows, tokenizer.pad_token_id, 7, CPU, bf16)
    assert torch.float32 in mask_dtypes  # the learned biases (cross-attention's zero bias is in bfloat16 already)
    mask_dtypes.clear()
    fast = evaluate.validation_loss(model, rows, tokenizer.pad_token_id, 7, CPU, bf16)
    assert set(mask_dtypes) == {torch.bfloat16}
    assert fast == reference
