import pickle

import sentencepiece as spm
from floe_trainer import data
from floe_trainer.config import parse_config
from floe_trainer.modeling import train_tokenizer
from floe_trainer.text_encoder import TextEncoder, _words_are_tokenized_apart, first_words
from transformers import AutoTokenizer

from .conftest import NEWS_CSV


def corpus():
    spec = parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}},
                         "dataset": {"file": {"path": str(NEWS_CSV)}}}).dataset
    prepared = data.load(spec)
    return prepared.train.documents + prepared.train.summaries


def test_trained_tokenizer_loads_with_from_pretrained_and_has_the_full_vocabulary(tmp_path):
    tokenizer = train_tokenizer(corpus(), 1000, tmp_path / "tok")
    pieces = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spiece.model"))
    assert len(tokenizer) == pieces.get_piece_size() == 1000
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("summarize: The minister said on Monday").input_ids
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "summarize: The minister said on Monday"
    # what save_pretrained writes loads back the same (the deployer ships this)
    tokenizer.save_pretrained(tmp_path / "saved")
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert len(again) == 1000 and again("The minister").input_ids == tokenizer("The minister").input_ids


def test_vocabulary_is_capped_by_what_the_corpus_supports(tmp_path):
    tokenizer = train_tokenizer(corpus()[:50], 30000, tmp_path / "tok")
    assert 100 < len(tokenizer) < 30000


def test_tokenizing_in_forked_processes_gives_the_ids_of_one_call(tmp_path, monkeypatch):
    """Rows split over processes come back whole, in order, truncated as one tokenizer call truncates them."""
    from floe_trainer import batching

    texts = corpus()[:150] + corpus()[-150:]  # articles, then summaries: some truncated, some not
    tokenizer = train_tokenizer(texts, 1000, tmp_path / "tok")
    monkeypatch.setattr(batching, "TEXTS_PER_PROCESS", 50)
    monkeypatch.setattr(batching, "usable_cpus", lambda: 4)
    encoder = TextEncoder.of(tokenizer)
    long_ids, short_ids = (rows(r) for r in batching.encode([(texts, 96), (texts[:7], 8)], encoder))
    assert long_ids == tokenizer(texts, max_length=96, truncation=True)["input_ids"]
    assert len(long_ids) == 300 and max(map(len, long_ids)) == 96 and min(map(len, long_ids)) < 96
    assert short_ids == tokenizer(texts[:7], max_length=8, truncation=True)["input_ids"]


def rows(ragged) -> list[list[int]]:
    return [ragged.row(i).tolist() for i in range(len(ragged))]


# Words of T5's normalizer's characters that give no token: a zero-width space (normalized to a space) and DEL
# (removed). A text's first words then give fewer tokens than words.
NO_TOKEN_WORDS = " ".join(["\u200b", "\x7f"] * 60)


def test_encoder_gives_the_tokenizers_ids_from_each_texts_first_words(tmp_path):
    """The encoder tokenizes a long text only up to as many words as tokens fit, with the ids of the whole text:
    truncated texts, texts shorter than the limit, and texts whose first words give no token."""
    articles = corpus()[:300]
    tokenizer = train_tokenizer(articles, 1000, tmp_path / "tok")
    encoder = TextEncoder.of(tokenizer)
    assert encoder.cuts_at_words
    texts = articles + [f"summarize: {NO_TOKEN_WORDS} {article}" for article in articles[:20]] + ["a b", "word"]
    for max_length in (8, 96, 512):
        assert encoder.ids(texts, max_length) == tokenizer(texts, max_length=max_length, truncation=True)["input_ids"]
        assert any(first_words(text, max_length) != text for text in texts)  # some were cut


def test_encoder_of_a_tokenizer_without_a_pipeline_calls_it(tmp_path):
    """ByT5's tokenizer is Python alone: the encoder calls it (and it crosses to the prefetch by pickle)."""
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "ByT5Tokenizer"}')
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    encoder = pickle.loads(pickle.dumps(TextEncoder.of(tokenizer)))
    assert encoder.pipeline is None and not encoder.cuts_at_words
    texts = corpus()[:5]
    assert encoder.ids(texts, 64) == tokenizer(texts, max_length=64, truncation=True)["input_ids"]


def test_first_words():
    assert first_words("a b c d", 2) == "a b"
    assert first_words("a b c", 3) == first_words("a b c", 5) == "a b c"
    assert first_words("a  b c", 2) == "a "  # an empty word counts: it gives no token, and is encoded whole


def test_only_pipelines_that_split_words_apart_first_are_cut():
    """A text's first words give its first tokens only where the pipeline splits at whitespace first, after
    normalizers of one character at a time, with no added token spanning a space."""
    apart = _words_are_tokenized_apart
    t5 = {"normalizer": {"type": "Precompiled"}, "added_tokens": [{"content": "</s>"}],
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "WhitespaceSplit"}, {"type": "Metaspace", "split": True}]}}
    assert apart(t5)
    assert apart({**t5, "normalizer": None, "pre_tokenizer": {"type": "Metaspace", "split": True}})
    assert not apart({**t5, "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Precompiled"}, {"type": "Replace", "pattern": {"String": "a b"}, "content": "c"}]}})
    assert not apart({**t5, "pre_tokenizer": {"type": "Metaspace", "split": False}})
    assert not apart({**t5, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Metaspace", "split": False}, {"type": "WhitespaceSplit"}]}})  # no whitespace left to split at
    assert not apart({**t5, "pre_tokenizer": {"type": "ByteLevel"}})
    assert not apart({**t5, "added_tokens": [{"content": "new york"}]})
