"""FlexAttention for T5, the trainer benchmark's `+flex` variants. It has no backward pass on CPU, so here its
scores are checked in the forward pass against SDPA's; the GPU benchmark compares loss curves."""

import copy

import pytest
import torch
from floe_trainer.modeling import use_flex_attention
from transformers import T5Config, T5ForConditionalGeneration


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = T5Config(vocab_size=96, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=8,
                      decoder_start_token_id=0, pad_token_id=0)
    reference = T5ForConditionalGeneration(config).eval()
    flex = copy.deepcopy(reference)
    use_flex_attention(flex)
    return reference, flex


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 96, (3, 20), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 14:] = 0  # rows of different lengths: the bias is shared, the padding is not
    attention_mask[2, 6:] = 0
    labels = torch.randint(3, 96, (3, 12), generator=generator)
    decoder_input_ids = torch.cat([torch.zeros(3, 1, dtype=torch.long), labels[:, :-1]], dim=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids}


def test_flex_scores_equal_sdpa_with_padding_bias_and_causality(models):
    reference, flex = models
    with torch.no_grad():
        expected, actual = reference(**batch()).logits, flex(**batch()).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_flex_turns_off_only_the_attention_dropout(models):
    _, flex = models
    attention = [m for m in flex.modules() if hasattr(m, "relative_attention_num_buckets")]
    assert attention and all(m.dropout == 0.0 for m in attention)
    assert flex.encoder.block[0].layer[1].dropout.p == flex.config.dropout_rate  # feed-forward dropout stays
