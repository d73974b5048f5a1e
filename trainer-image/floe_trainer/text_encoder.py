"""Token ids as a Hugging Face tokenizer computes them, from its `tokenizers` pipeline alone.

The pipeline (a `tokenizers.Tokenizer`) pickles without transformers: the data prefetch (`prefetch.py`) gets it
from a process that loads the tokenizer beside the reading, and tokenizes without importing transformers, whose
imports took 2.2-3.1 s of the prefetch on an H200 host. A tokenizer without such a pipeline (ByT5's, in Python) is
called as it is.

A text is tokenized only up to its `max_length`-th word where the pipeline allows it (`cuts_at_words`), so a
document costs what truncation keeps of it, not its whole length: a 10,000-word report as much as a 512-word
article. (In the news sample, a fifth of the articles are longer than 512 words, and the cut leaves out 15% of the
characters.) The ids are those of the whole text:
- the pipeline splits the text into words at whitespace before anything else, and its normalizers change each
  character by itself, so the words of the text's first part are the first words of the whole text and are
  tokenized alike;
- each word gives at least one token, so the first `max_length` words give at least `max_length` tokens, and
  truncation keeps the same first tokens of both;
- a word can give none (one a normalizer removes, such as a zero-width space): a part that comes out shorter than
  `max_length` is tokenized again whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

# Normalizers that change each character (or each character with its combining marks) by itself.
_LOCAL_NORMALIZERS = {"Precompiled", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip"}


@dataclass(frozen=True)
class TextEncoder:
    pipeline: Tokenizer | None
    truncation_side: str  # the tokenizer's: "right" keeps the first tokens
    cuts_at_words: bool  # a text's first words give the first tokens of the whole text
    tokenizer: Any = None  # only where there is no pipeline

    @classmethod
    def of(cls, tokenizer) -> TextEncoder:
        """The encoder of a Hugging Face tokenizer: its pipeline, truncating on its side."""
        pipeline = getattr(tokenizer, "backend_tokenizer", None)
        if pipeline is None:
            return cls(None, tokenizer.truncation_side, False, tokenizer)
        return cls(pipeline, tokenizer.truncation_side,
                   tokenizer.truncation_side == "right" and _words_are_tokenized_apart(json.loads(pipeline.to_str())))

    def ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Each text's ids with special tokens, truncated to `max_length`: the tokenizer's
        `tokenizer(texts, max_length=max_length, truncation=True)["input_ids"]`."""
        if self.pipeline is None:
            return self.tokenizer(texts, max_length=max_length, truncation=True)["input_ids"]
        self.pipeline.enable_truncation(max_length, direction=self.truncation_side)
        self.pipeline.no_padding()
        if not self.cuts_at_words:
            return [encoding.ids for encoding in self.pipeline.encode_batch(texts)]
        parts = [first_words(text, max_length) for text in texts]
        ids = [encoding.ids for encoding in self.pipeline.encode_batch(parts)]
        short = [i for i, (text, part) in enumerate(zip(texts, parts, strict=True))
                 if len(part) < len(text) and len(ids[i]) < max_length]
        if short:
            for i, encoding in zip(short, self.pipeline.encode_batch([texts[i] for i in short]), strict=True):
                ids[i] = encoding.ids
        return ids


def first_words(text: str, words: int) -> str:
    """`text` up to (not including) its `words`-th space, or all of it."""
    if text.count(" ") < words:
        return text
    rest = text.split(" ", words)[-1]
    return text[:len(text) - len(rest) - 1]


def _words_are_tokenized_apart(spec: dict) -> bool:
    """Whether a pipeline (tokenizer.json's fields) splits at whitespace before anything else, after normalizers
    that change each character by itself, and has no added token with whitespace in it."""
    normalizer = spec.get("normalizer")
    normalizers = [] if normalizer is None else normalizer.get("normalizers", [normalizer])
    pre_tokenizer = spec.get("pre_tokenizer") or {}
    first = (pre_tokenizer.get("pretokenizers") or [pre_tokenizer])[0]  # a Sequence's first, or the one
    splits_first = first.get("type") == "WhitespaceSplit" or (first.get("type") == "Metaspace" and first.get("split"))
    return (all(n.get("type") in _LOCAL_NORMALIZERS for n in normalizers) and bool(splits_first)
            and not any(any(c.isspace() for c in token["content"]) for token in spec.get("added_tokens") or ()))
