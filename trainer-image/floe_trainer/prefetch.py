"""The job's data, read and tokenized in a process forked before the trainer imports torch and the model code.

A GPU job's start-up is mostly imports on one core: `import floe_trainer.trainer` took 7.7 s of the 8.9 s start-up
on an H200 host (`python -X importtime`: torch, transformers' T5 and what it pulls in). Reading and tokenizing the
data needs neither the model code nor the GPU (7.5 s for 40,000 news rows on the host's 16 cores), so it runs beside
them, and the trainer waits only for what is left of it.

Only where the tokenizer is known before the data and the data is read from files: a scratch model trains its
tokenizer on the data, and a Snowflake read needs the session the trainer opens.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from floe_trainer.batching import Tokenized
    from floe_trainer.config import TrainerConfig
    from floe_trainer.data import PreparedData


@dataclass(frozen=True)
class Prepared:
    """What training needs of the data: the tokens, and of the texts only the validation summaries (ROUGE's
    references). The documents stay behind: they are most of the bytes the prefetch would send back (about 120 MB
    for 40,000 news rows), and the 40,000-row job on an H200 host had its data 18 s after it started, of which the
    prefetch's own steps took 11 s. The tokens travel as flat arrays (`batching.Ragged`): as lists of Python ints
    they took 2.2 s from the end of the steps to the trainer on a 2-core machine, as arrays 0.4 s."""

    train: Tokenized
    validation: Tokenized
    references: list[str]
    rows_read: int
    rows_dropped: int
    seconds: dict[str, float] = field(default_factory=dict)  # the prefetch's own steps, for its report
    steps_ended: float = 0.0  # time.monotonic() when they ended


def tokenize_splits(data: PreparedData, tokenizer, cfg: TrainerConfig) -> Prepared:
    from floe_trainer.batching import PREFIX, tokenize

    tc = cfg.training
    return Prepared(tokenize(data.train, tokenizer, PREFIX, tc.source_max_length, tc.target_max_length),
                    tokenize(data.validation, tokenizer, PREFIX, tc.source_max_length, tc.target_max_length),
                    data.validation.summaries, data.rows_read, data.rows_dropped)


class Prefetch:
    """A forked process preparing the data; `result()` waits for it and raises what it raised."""

    def __init__(self, cfg: TrainerConfig):
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        # not a daemon: it forks its own tokenizing processes
        self._forked = time.monotonic()  # the clock of every process of the machine
        self._process = context.Process(target=_prepare, args=(cfg, send, self._forked), name="floe-prefetch")
        self._process.start()
        send.close()

    def result(self) -> Prepared:
        asked = time.monotonic()
        try:
            outcome = self._receive.recv()
        except EOFError:  # it died without a word (e.g. killed for memory)
            outcome = RuntimeError(f"the data prefetch process ended with exit code {self._process.exitcode}")
        finally:
            received = time.monotonic()
            self._process.join()
        if isinstance(outcome, BaseException):
            raise outcome
        # and the rest of its time: from the end of its steps to the data here, then its exit; and when the
        # trainer, busy beside it, asked for the data
        return dataclasses.replace(outcome, seconds={**outcome.seconds,
                                                     "send": round(received - outcome.steps_ended, 2),
                                                     "exit": round(time.monotonic() - received, 2),
                                                     "asked": round(asked - self._forked, 2)})


def start(cfg: TrainerConfig) -> Prefetch | None:
    """Prefetch the data where that can be done before the model is loaded (see the module's docstring)."""
    if cfg.model.scratch is not None or cfg.dataset.snowflake is not None:
        return None
    return Prefetch(cfg)


def _prepare(cfg: TrainerConfig, send, forked: float) -> None:
    seconds = {}

    def lap(step: str) -> None:
        seconds[step] = round(time.monotonic() - forked - sum(seconds.values()), 2)

    lap("fork")

    try:
        from floe_trainer import data
        from floe_trainer.pretrained import load_tokenizer

        prepared = data.load(cfg.dataset)
        lap("read")
        tokenizer = load_tokenizer(cfg.model)
        lap("tokenizer")
        ready = tokenize_splits(prepared, tokenizer, cfg)
        lap("tokenize")
        outcome = dataclasses.replace(ready, seconds=seconds, steps_ended=time.monotonic())
    except Exception as error:  # the trainer raises it as its own, with the same message
        outcome = error
    send.send(outcome)
    send.close()
