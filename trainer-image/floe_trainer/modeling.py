"""Model and tokenizer sources: a Hugging Face id, a local directory, or a T5 shape from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5Config, T5ForConditionalGeneration

from floe_trainer.config import ModelSource, ScratchShape

SHAPES = {
    ScratchShape.tiny: dict(d_model=64, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    ScratchShape.t5_small: dict(d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64),
    ScratchShape.t5_base: dict(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, d_kv=64),
}


class ModelSourceError(ValueError):
    """The model or tokenizer cannot be loaded; the message names the source."""


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
    if source.hub is not None:
        where, field, kwargs = source.hub.id, "model.hub.id", {"revision": source.hub.revision}
    else:
        where, field, kwargs = source.path, "model.path", {"local_files_only": True}
        if not Path(where).is_dir():
            raise ModelSourceError(f"{field}: {where} is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForSeq2SeqLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelSourceError(f"{field}: cannot load model/tokenizer from {where}: {err}") from None
    return model, tokenizer
