"""The evaluation's generation (static cache, `evaluate.generation_cache`: cross-attention keys and values once per
input, left in place by beam reordering, attended by the input's beams together) produces the summaries of Hugging
Face's default path (a cache that grows a position a step, per-beam keys and values), for greedy decoding and for
beam search.

Float64, as in test_evaluation.py: only a real difference between the two paths can change a token.
"""

import pytest
import torch
from floe_trainer import evaluate
from floe_trainer.batching import Tokenized, collate
from floe_trainer.config import ScratchShape
from floe_trainer.modeling import SHAPES
from floe_trainer.trainer import autocast_factory
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import StaticLayer

CPU = torch.device("cpu")
ROWS, BATCH, NEW_TOKENS, VOCAB, PAD, EOS = 12, 5, 24, 64, 0, 1


@pytest.fixture(scope="module")
def model_and_rows():
    """A random tiny T5 (own output layer, 5x T5's initial scale, so its summaries depend on the input; EOS's
    output weights 6x, so some summaries end early) and random sources of many lengths, each ending in EOS."""
    config = T5Config(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
                      tie_word_embeddings=False, initializer_factor=5.0, **SHAPES[ScratchShape.tiny])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).double()
    with torch.no_grad():
        model.lm_head.weight[EOS] *= 6
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, VOCAB, (int(n),), generator=generator).tolist() + [EOS]
               for n in torch.randint(3, 40, (ROWS,), generator=generator)]
    return model, Tokenized.from_lists(sources, [[EOS]] * ROWS)


def reference(model, rows: Tokenized, num_beams: int) -> list[list[int]]:
    """The same length-sorted batches through generate() with its default, growing cache."""
    out = [[] for _ in range(ROWS)]
    order = evaluate.length_sorted(rows, ROWS)
    model.eval()
    with torch.no_grad():
        for start in range(0, ROWS, BATCH):
            batch = collate(rows, order[start:start + BATCH], PAD, pad_multiple=1)
            ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 num_beams=num_beams, max_new_tokens=NEW_TOKENS, do_sample=False)
            for row, sequence in zip(order[start:start + BATCH], ids.tolist(), strict=True):
                out[row] = sequence
    return out


@pytest.mark.parametrize("num_beams", [1, 2])
def test_static_cache_generations_equal_the_growing_cache_ones(model_and_rows, num_beams):
    model, rows = model_and_rows
    fast = evaluate.generate(model, rows, ROWS, PAD, BATCH, num_beams, NEW_TOKENS, CPU, autocast_factory(CPU, None))
    assert fast == reference(model, rows, num_beams)
    assert len({tuple(s) for s in fast}) > ROWS // 2  # the rows' summaries differ: the comparison means something
    assert any(EOS in s[1:] for s in fast) and any(EOS not in s for s in fast)  # some end early, some run out


def test_beam_search_keeps_cross_attention_once_per_input(model_and_rows):
    """The beams of an input attend over one copy of its cross-attention keys and values."""
    model, rows = model_and_rows
    batch = collate(rows, list(range(BATCH)), PAD, pad_multiple=1)
    cache = evaluate.generation_cache(model, batch["input_ids"].shape[1], NEW_TOKENS, beams=2)
    with torch.no_grad(), evaluate.evaluation_attention(model):
        model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=2,
                       max_new_tokens=NEW_TOKENS, do_sample=False, cache=cache)
    layers = model.config.num_decoder_layers
    assert [layer.keys.shape[0] for layer in cache.cross_attention_cache.layers] == [BATCH] * layers
    assert [layer.keys.shape[0] for layer in cache.self_attention_cache.layers] == [2 * BATCH] * layers


def test_beam_reordering_moves_the_self_attention_cache_and_leaves_the_cross_attention_one(model_and_rows):
    """Beam search reorders among the beams of one input, whose cross-attention keys and values are equal: the
    cache moves only the decoder's own (the generations above show the outputs are unchanged)."""
    model, _ = model_and_rows
    cache = evaluate.generation_cache(model, source_length=3, max_new_tokens=2, beams=1)
    heads, dim = model.config.num_heads, model.config.d_kv
    for layer in range(model.config.num_decoder_layers):
        for part, length in ((cache.self_attention_cache, 2), (cache.cross_attention_cache, 3)):
            states = torch.arange(4 * heads * length * dim, dtype=torch.float64).reshape(4, heads, length, dim)
            part.update(states, states + 1, layer, {"cache_position": torch.arange(length)})
    cross_before = [layer.keys.clone() for layer in cache.cross_attention_cache.layers]
    self_before = [layer.keys.clone() for layer in cache.self_attention_cache.layers]
    beam_idx = torch.tensor([1, 1, 2, 2])  # input 0 keeps its second beam twice, input 1 its first
    cache.reorder_cache(beam_idx)
    for layer, before in zip(cache.self_attention_cache.layers, self_before, strict=True):
        assert torch.equal(layer.keys, before[beam_idx])
    for layer, before in zip(cache.cross_attention_cache.layers, cross_before, strict=True):
        assert torch.equal(layer.keys, before)


def test_self_attention_reads_only_the_filled_positions(model_and_rows):
    """The static cache hands attention the positions written so far, not its whole buffer."""
    model, _ = model_and_rows
    cache = evaluate.generation_cache(model, source_length=3, max_new_tokens=NEW_TOKENS, beams=1)
    heads, dim = model.config.num_heads, model.config.d_kv
    for step in range(3):
        states = torch.full((2, heads, 1, dim), float(step), dtype=torch.float64)
        keys, values = cache.self_attention_cache.update(states, states, 0, {"cache_position": torch.tensor([step])})
        assert keys.shape[2] == values.shape[2] == step + 1
        assert keys[0, 0, :, 0].tolist() == list(range(step + 1))


def test_beam_reordering_does_not_ask_the_device_what_the_cache_holds(model_and_rows, monkeypatch):
    """Hugging Face's reorder asks each layer's length, a device tensor on a GPU: one synchronisation per layer and
    decode step. The evaluation's cache knows which layers hold keys without asking."""
    model, _ = model_and_rows
    cache = evaluate.generation_cache(model, source_length=3, max_new_tokens=2, beams=1)
    heads, dim = model.config.num_heads, model.config.d_kv
    states = torch.arange(2 * heads * dim, dtype=torch.float64).reshape(2, heads, 1, dim)
    cache.self_attention_cache.update(states, states, 0, {"cache_position": torch.tensor([0])})

    def device_question(self):
        raise AssertionError("reorder asked a layer for its length")

    monkeypatch.setattr(StaticLayer, "get_seq_length", device_question)
    cache.reorder_cache(torch.tensor([1, 1]))
    assert torch.equal(cache.self_attention_cache.layers[0].keys[:, :, 0], states[[1, 1], :, 0])
    assert not cache.self_attention_cache.layers[1].is_initialized
