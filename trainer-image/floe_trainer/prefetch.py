"""The job's data, read and tokenized in a process forked before the trainer imports torch and the model code.

A GPU job's start-up is mostly imports on one core: `import floe_trainer.trainer` took 7.7 s of the 8.9 s start-up
on an H200 host (`python -X importtime`: torch, transformers' T5 and what it pulls in). Reading and tokenizing the
data needs neither the model code nor the GPU (7.5 s for 40,000 news rows on the host's 16 cores), so it runs beside
them, and the trainer waits only for what is left of it.

Inside it, the tokenizer loads in a process of its own while the data is read: loading it is mostly transformers'
imports (2.2-3.1 s on an H200 host), reading 2.8-3.1 s. What comes back is only its `tokenizers` pipeline
(`text_encoder.TextEncoder`), which needs no transformers to tokenize with.

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
    from floe_contract.training import ModelSource

    from floe_trainer.batching import Tokenized
    from floe_trainer.config import TrainerConfig
    from floe_trainer.data import PreparedData
    from floe_trainer.text_encoder import TextEncoder


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


def tokenize_splits(data: PreparedData, encoder: TextEncoder, cfg: TrainerConfig) -> Prepared:
    from floe_trainer.batching import PREFIX, tokenize

    tc = cfg.training
    return Prepared(tokenize(data.train, encoder, PREFIX, tc.source_max_length, tc.target_max_length),
                    tokenize(data.validation, encoder, PREFIX, tc.source_max_length, tc.target_max_length),
                    data.validation.summaries, data.rows_read, data.rows_dropped)


class Forked:
    """`target(*args)` in a forked process: `result()` waits for what it returned and raises what it raised."""

    def __init__(self, target, *args, name: str, daemon: bool):
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_send_outcome, args=(target, args, send), name=name, daemon=daemon)
        self._process.start()
        send.close()
        self.received = 0.0  # time.monotonic() when the outcome arrived

    def result(self):
        try:
            outcome = self._receive.recv()
        except EOFError:  # it died without a word (e.g. killed for memory)
            outcome = RuntimeError(f"the {self._process.name} process ended with exit code {self._process.exitcode}")
        finally:
            self.received = time.monotonic()
            self._process.join()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _send_outcome(target, args, send) -> None:
    try:
        outcome = target(*args)
    except Exception as error:  # the waiting process raises it as its own, with the same message
        outcome = error
    send.send(outcome)
    send.close()


class Prefetch:
    """The process preparing the data; `result()` waits for it and raises what it raised."""

    def __init__(self, cfg: TrainerConfig):
        self._forked = time.monotonic()  # the clock of every process of the machine
        # not a daemon: it forks its own tokenizing processes
        self._process = Forked(_prepare, cfg, self._forked, name="floe-prefetch", daemon=False)

    def result(self) -> Prepared:
        asked = time.monotonic()
        outcome = self._process.result()
        # and the rest of its time: from the end of its steps to the data here, then its exit; and when the
        # trainer, busy beside it, asked for the data
        received = self._process.received
        return dataclasses.replace(outcome, seconds={**outcome.seconds,
                                                     "send": round(received - outcome.steps_ended, 2),
                                                     "exit": round(time.monotonic() - received, 2),
                                                     "asked": round(asked - self._forked, 2)})


def start(cfg: TrainerConfig) -> Prefetch | None:
    """Prefetch the data where that can be done before the model is loaded (see the module's docstring)."""
    if cfg.model.scratch is not None or cfg.dataset.snowflake is not None:
        return None
    return Prefetch(cfg)


def _prepare(cfg: TrainerConfig, forked: float) -> Prepared:
    """Read and tokenize; `seconds` times the steps from the fork: `tokenizer` is the wait for the tokenizer after
    the reading."""
    seconds = {}

    def lap(step: str) -> None:
        seconds[step] = round(time.monotonic() - forked - sum(seconds.values()), 2)

    lap("fork")
    loading = Forked(_load_encoder, cfg.model, name="floe-tokenizer", daemon=True)
    from floe_trainer import data

    prepared = data.load(cfg.dataset)
    lap("read")
    encoder = loading.result()
    lap("tokenizer")
    ready = tokenize_splits(prepared, encoder, cfg)
    lap("tokenize")
    return dataclasses.replace(ready, seconds=seconds, steps_ended=time.monotonic())


def _load_encoder(source: ModelSource) -> TextEncoder:
    from floe_trainer.pretrained import load_tokenizer
    from floe_trainer.text_encoder import TextEncoder

    return TextEncoder.of(load_tokenizer(source))
