import sentencepiece as spm
from floe_trainer import data
from floe_trainer.config import parse_config
from floe_trainer.modeling import train_tokenizer
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
    long_ids, short_ids = (rows(r) for r in batching.encode([(texts, 96), (texts[:7], 8)], tokenizer))
    assert long_ids == tokenizer(texts, max_length=96, truncation=True)["input_ids"]
    assert len(long_ids) == 300 and max(map(len, long_ids)) == 96 and min(map(len, long_ids)) < 96
    assert short_ids == tokenizer(texts[:7], max_length=8, truncation=True)["input_ids"]


def rows(ragged) -> list[list[int]]:
    return [ragged.row(i).tolist() for i in range(len(ragged))]
