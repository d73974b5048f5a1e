"""Model and tokenizer sources: a Hugging Face id, a local directory, or a T5 shape from scratch."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import sentencepiece as spm
import torch
from floe_contract.training import ModelSource, ScratchShape
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5Config, T5ForConditionalGeneration

from floe_trainer.pretrained import ModelSourceError, load_tokenizer, location

SHAPES = {
    ScratchShape.tiny: dict(d_model=64, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    ScratchShape.t5_small: dict(d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64),
    ScratchShape.t5_base: dict(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, d_kv=64),
}


def without_cudnn_attention():
    """SDPA without its cuDNN backend (a context manager and decorator). cuDNN builds a plan for every new attention
    shape, about 0.15 s each on an H200 (forward and backward): work that pays only for shapes that recur, which
    the batch-size probe's and evaluation's shapes do not."""
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


# An experiment of bench/trainer_bench.py (variants `...+flex`), not a training setting: T5 adds a learned
# relative-position bias to the attention scores, which keeps SDPA on its unfused math path; FlexAttention applies
# it inside a fused kernel as a score_mod. With torch 2.11 it does not compile inside the compiled blocks and is
# slower than SDPA outside them (bench/results/trainer.md), and it drops dropout on attention weights.
FLEX_ATTENTION = "floe_flex"


def _flex_t5_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None,
                       **kwargs):
    """T5 attention through FlexAttention: scores + position bias, masked where attention_mask is False.

    FlexAttention has no dropout on attention weights, so the caller turns that dropout off. (Transformers' own
    flex path indexes T5's batch-broadcast bias by the batch index, reading past it for every row after the first.)
    """
    from torch.nn.attention.flex_attention import flex_attention

    if dropout:
        raise ValueError("FlexAttention has no dropout on attention weights: use_flex_attention turns it off")
    batch, _, query_length, _ = query.shape
    bias = None if position_bias is None else position_bias.expand(batch, -1, -1, -1)
    mask = None if attention_mask is None else attention_mask.expand(batch, 1, query_length, -1)
    # SDPA's is_causal: the mask was left out for it (queries are the last query_length positions)
    causal_offset = key.shape[2] - query_length if mask is None and module.is_causal and query_length > 1 else None

    def score_mod(score, b, h, q, k):
        if bias is not None:
            score = score + bias[b, h, q, k]
        if mask is not None:
            score = torch.where(mask[b, 0, q, k], score, -float("inf"))
        if causal_offset is not None:
            score = torch.where(q + causal_offset >= k, score, -float("inf"))
        return score

    attend = _compiled_flex() if query.is_cuda else flex_attention  # CPU: the reference path, for tests
    out = attend(query, key, value, score_mod=score_mod, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _compiled_flex():
    """flex_attention compiled once: uncompiled, it materialises the scores."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def use_flex_attention(model: T5ForConditionalGeneration) -> None:
    """Route the model's attention through FlexAttention and turn off dropout on attention weights (the other
    dropouts of the recipe stay)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
    from transformers.models.t5.modeling_t5 import T5Attention

    AttentionInterface.register(FLEX_ATTENTION, _flex_t5_attention)
    if FLEX_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        # SDPA's boolean masks; where SDPA would be told is_causal instead, _flex_t5_attention applies it
        AttentionMaskInterface.register(FLEX_ATTENTION, sdpa_mask)
    model.set_attn_implementation(FLEX_ATTENTION)
    for module in model.modules():
        if isinstance(module, T5Attention):
            module.dropout = 0.0


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """Train a T5-style SentencePiece (unigram; pad 0, eos 1, unk 2) and load it back with from_pretrained.

    The vocabulary is capped at what the corpus supports. `T5Tokenizer(vocab_file=...)` would silently
    give a 4-token vocabulary with recent transformers, so the model goes into a directory as
    spiece.model and is loaded from there.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(out_dir / "spiece"), vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    (out_dir / "spiece.vocab").unlink(missing_ok=True)
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    pieces = spm.SentencePieceProcessor(model_file=str(out_dir / "spiece.model")).get_piece_size()
    if len(tokenizer) != pieces:
        raise ModelSourceError(f"tokenizer in {out_dir} has {len(tokenizer)} tokens, SentencePiece has {pieces}")
    return tokenizer


def scratch_model(shape: ScratchShape, tokenizer, seed: int) -> T5ForConditionalGeneration:
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      **SHAPES[shape])
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def load(source: ModelSource, corpus: list[str], tokenizer_dir: Path, seed: int):
    """(model, tokenizer) for the configured source.

    For `scratch`, the tokenizer is trained on `corpus` into `tokenizer_dir` once and reused from there
    afterwards, so a resumed run tokenizes exactly as the interrupted one did.
    """
    if source.scratch is not None:
        if (tokenizer_dir / "spiece.model").exists():
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        else:
            tokenizer = train_tokenizer(corpus, source.scratch.vocab_size, tokenizer_dir)
        return scratch_model(source.scratch.shape, tokenizer, seed), tokenizer
    tokenizer = load_tokenizer(source)
    where, field, kwargs = location(source)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelSourceError(f"{field}: cannot load model/tokenizer from {where}: {err}") from None
    return model, tokenizer
