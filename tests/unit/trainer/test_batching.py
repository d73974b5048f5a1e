import os

import numpy as np
import torch
from floe_trainer.batching import (
    IGNORE_INDEX,
    Tokenized,
    collate,
    count_target_tokens,
    epoch_step_batches,
    micro_batch,
)


def lengths(n=103, seed=0):
    return np.random.default_rng(seed).integers(5, 500, size=n)


def test_step_batches_cover_the_epoch_once_and_drop_only_the_tail():
    batches = epoch_step_batches(lengths(), 8, seed=1, epoch=0)
    flat = [i for b in batches for i in b]
    assert len(batches) == 103 // 8 and all(len(b) == 8 for b in batches)
    assert len(set(flat)) == len(flat) == 96


def test_step_batches_are_seeded_and_change_with_epoch():
    assert epoch_step_batches(lengths(), 8, seed=1, epoch=0) == epoch_step_batches(lengths(), 8, seed=1, epoch=0)
    assert epoch_step_batches(lengths(), 8, seed=1, epoch=0) != epoch_step_batches(lengths(), 8, seed=1, epoch=1)
    assert epoch_step_batches(lengths(), 8, seed=1, epoch=0) != epoch_step_batches(lengths(), 8, seed=2, epoch=0)


def test_length_grouping_cuts_padding():
    n, size = 2048, 16
    lens = lengths(n)
    grouped = epoch_step_batches(lens, size, seed=3, epoch=0)
    random_batches = np.random.default_rng(3).permutation(n).reshape(-1, size)

    def padded(batches):
        return sum(len(b) * lens[list(b)].max() for b in batches)

    assert padded(grouped) < 0.75 * padded(random_batches)


def test_micro_batches_partition_the_step_batch_whatever_the_split():
    step = list(range(24))
    for world, accumulation, size in ((1, 1, 24), (2, 1, 12), (2, 3, 4), (4, 2, 3)):
        parts = [micro_batch(step, m, r, world, size) for m in range(accumulation) for r in range(world)]
        assert sorted(i for p in parts for i in p) == step


def test_collate_pads_dynamically_and_shifts_labels_for_teacher_forcing():
    data = Tokenized.from_lists(sources=[[5, 6, 1], [7, 1]], targets=[[8, 9, 10, 1], [11, 1]])
    batch = collate(data, [0, 1], pad_id=0, pad_multiple=4)
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0], [7, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 9, 10, 1], [11, 1, IGNORE_INDEX, IGNORE_INDEX]]
    # decoder input: start token (pad) then the labels shifted right, pad where labels are ignored
    assert batch["decoder_input_ids"].tolist() == [[0, 8, 9, 10], [0, 11, 1, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_collate_takes_the_rows_asked_for_in_their_order():
    data = Tokenized.from_lists(sources=[[5, 1], [6, 7, 8, 1], [9, 1]], targets=[[2, 1], [3, 4, 1], [1]])
    batch = collate(data, [2, 0, 1], pad_id=0, pad_multiple=1)
    assert batch["input_ids"].tolist() == [[9, 1, 0, 0], [5, 1, 0, 0], [6, 7, 8, 1]]
    assert batch["labels"].tolist() == [[1, IGNORE_INDEX, IGNORE_INDEX], [2, 1, IGNORE_INDEX], [3, 4, 1]]
    assert count_target_tokens(data, [2, 1]) == 4


def test_tokenizing_turns_parallelism_on_and_restores_the_setting(monkeypatch):
    from floe_trainer.batching import every_core_tokenizing

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    with every_core_tokenizing():
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    with every_core_tokenizing():
        pass
    assert "TOKENIZERS_PARALLELISM" not in os.environ
