"""Tokenized examples, length-grouped step batches and dynamic-padding collation.

A *step batch* is every sample of one optimizer step across all processes and accumulation
micro-steps. Its composition depends only on (seed, epoch, step batch size), never on the number
of processes, so N processes with batch b compute the same update as one process with batch N*b,
and a resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from floe_trainer.data import Pairs
from floe_trainer.text_encoder import TextEncoder

IGNORE_INDEX = -100
# Length grouping sorts within windows of this many step batches: enough to cut padding, small
# enough that batches stay a random mix of the data.
GROUP_WINDOW = 32


@dataclass(frozen=True)
class Ragged:
    """Rows of token ids of different lengths: every row's ids end to end in one flat array, and where each row
    starts (`offsets`, one more than the rows: row i is ids[offsets[i]:offsets[i + 1]]).

    The ids cross two process boundaries, tokenizing process to data prefetch to trainer (`prefetch.py`), and
    arrays pickle as a few buffers. As lists of Python ints, the 18.7 M ids of the 40,000-row news job reached the
    trainer about 6 s after the prefetch's steps ended on an H200 host, 2.2 s on a 2-core machine (0.4 s as arrays).
    """

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64

    @classmethod
    def concatenate(cls, parts: list[tuple[np.ndarray, np.ndarray]]) -> Ragged:
        """The rows of `flat` parts, in order."""
        lengths = np.concatenate([lengths for _, lengths in parts])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.concatenate([ids for ids, _ in parts]), offsets)

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> Ragged:
        return cls.concatenate([flat(rows)])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Each row's length, or only those of `rows`."""
        if rows is None:
            return np.diff(self.offsets)
        rows = np.asarray(rows)
        return self.offsets[rows + 1] - self.offsets[rows]

    def padded(self, indices: list[int], fill: int, multiple: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows `indices` as one int64 array padded with `fill` to the longest row (rounded up to `multiple`), and
        the mask of the rows' own ids in it. One gather, not a copy per row: collate runs on the host every step
        (a batch of 512 rows took 3 ms, 71 ms as a tensor per row from lists)."""
        starts, lengths = self.offsets[np.asarray(indices)], self.lengths(indices)
        columns = np.arange(_round_up(int(lengths.max()), multiple))
        inside = columns < lengths[:, None]
        out = np.full(inside.shape, fill, dtype=np.int64)
        out[inside] = self.ids[(starts[:, None] + columns)[inside]]
        return out, inside


def flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(every row's ids end to end, each row's length): rows as a tokenizing process sends them back."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())), lengths


@dataclass(frozen=True)
class Tokenized:
    """Each row's source and target token ids."""

    sources: Ragged
    targets: Ragged

    @classmethod
    def from_lists(cls, sources: list[list[int]], targets: list[list[int]]) -> Tokenized:
        return cls(Ragged.from_lists(sources), Ragged.from_lists(targets))

    def __len__(self) -> int:
        return len(self.sources)

    def source(self, i: int) -> np.ndarray:
        return self.sources.row(i)

    def target(self, i: int) -> np.ndarray:
        return self.targets.row(i)

    def source_lengths(self) -> np.ndarray:
        return self.sources.lengths()

    def target_lengths(self) -> np.ndarray:
        return self.targets.lengths()


PREFIX = "summarize: "  # the seed's task framing


def tokenize(pairs: Pairs, encoder: TextEncoder, prefix: str, source_max_length: int,
             target_max_length: int) -> Tokenized:
    """Seed framing: `prefix + document` -> summary, each truncated (EOS kept) to its maximum length."""
    sources, targets = encode([([prefix + d for d in pairs.documents], source_max_length),
                               (list(pairs.summaries), target_max_length)], encoder)
    return Tokenized(sources, targets)


# Texts a forked process must have to pay for itself (a few ms to fork a process that holds torch, about 1.5 ms
# to tokenize an article on one core); fewer go to Hugging Face's own threads.
TEXTS_PER_PROCESS = 1024
_WORK: list[tuple[list[str], int]] = []  # what the forked processes encode slices of (they inherit it)
_ENCODER: TextEncoder | None = None


def encode(work: list[tuple[list[str], int]], encoder: TextEncoder) -> list[Ragged]:
    """Token ids of each (texts, max_length) of `work`, truncated to max_length.

    Many texts are tokenized in forked processes of one thread each. Hugging Face's own threads share the
    tokenizer's cache behind one lock: on a 16-core GPU host they took 7.9 s for 35,550 news articles (96
    CPU-seconds), 16 processes 5.6 s. The texts reach the processes by fork (no copy), the ids come back as flat
    arrays (`flat`).
    """
    global _WORK, _ENCODER
    texts = sum(len(t) for t, _ in work)
    processes = min(usable_cpus(), texts // TEXTS_PER_PROCESS)
    if processes <= 1:
        with every_core_tokenizing():
            return [Ragged.from_lists(encoder.ids(t, m)) for t, m in work]
    slices = [(i, len(t) * k // processes, len(t) * (k + 1) // processes)
              for i, (t, _) in enumerate(work) for k in range(processes)]
    _WORK, _ENCODER = work, encoder
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_thread) as pool:
            parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in work]
            for (i, _, _), part in zip(slices, pool.map(_encode_slice, slices), strict=True):
                parts[i].append(part)
            return [Ragged.concatenate(p) for p in parts]
    finally:
        _WORK, _ENCODER = [], None


def _one_thread() -> None:
    """Tokenizers' own threads off in a forked process: it is one of the cores already."""
    os.environ[TOKENIZERS_PARALLELISM] = "false"


def _encode_slice(piece: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    i, start, stop = piece
    texts, max_length = _WORK[i]
    return flat(_ENCODER.ids(texts[start:stop], max_length))


@contextlib.contextmanager
def every_core_tokenizing():
    """Hugging Face tokenizers use every core only while TOKENIZERS_PARALLELISM allows it. The image turns it off
    (forked workers would warn); texts too few for `encode`'s processes still take every core this way."""
    previous = os.environ.get(TOKENIZERS_PARALLELISM)
    os.environ[TOKENIZERS_PARALLELISM] = "true"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[TOKENIZERS_PARALLELISM]
        else:
            os.environ[TOKENIZERS_PARALLELISM] = previous


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's CPU limit), shared among
    the processes of a multi-GPU job on this node."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def epoch_step_batches(source_lengths: np.ndarray, step_batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's step batches: shuffled, grouped by source length within windows, in random order.

    The tail that does not fill a whole step batch is left out of this epoch (a different tail each epoch).
    """
    n = len(source_lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)[: n - n % step_batch_size]
    window = step_batch_size * GROUP_WINDOW
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-source_lengths[chunk], kind="stable")]
        batches += [chunk[i:i + step_batch_size].tolist() for i in range(0, len(chunk), step_batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batch(step_batch: list[int], micro_step: int, rank: int, world_size: int, batch_size: int) -> list[int]:
    """This process's samples of one accumulation micro-step.

    A step batch is sorted by length, so ranks take every world_size-th sample of the micro-step's slice
    rather than a contiguous run: each gets a like mix of lengths and none waits for a longest-half peer.
    """
    start = micro_step * world_size * batch_size
    return step_batch[start + rank:start + world_size * batch_size:world_size]


def count_target_tokens(data: Tokenized, indices: list[int]) -> int:
    return int(data.targets.lengths(indices).sum())


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate(data: Tokenized, indices: list[int], pad_id: int, pad_multiple: int = 8) -> dict[str, torch.Tensor]:
    """Pad to the longest sample (rounded up to `pad_multiple` for tensor cores); pad labels are -100.

    decoder_input_ids are the labels shifted right behind the start token (T5 starts with pad): teacher forcing.
    """
    input_ids, attention_mask = data.sources.padded(indices, pad_id, pad_multiple)
    labels, _ = data.targets.padded(indices, IGNORE_INDEX, pad_multiple)
    input_ids, attention_mask, labels = (torch.from_numpy(input_ids), torch.from_numpy(attention_mask).long(),
                                         torch.from_numpy(labels))
    decoder_input_ids = torch.full_like(labels, pad_id)
    decoder_input_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
            "labels": labels}
