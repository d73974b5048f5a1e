"""A work queue of object keys, as client-go's controllers keep one: each key waits at most once, and is worked on
by one worker at a time. Events that arrive while a key waits add nothing; one that arrives while it is worked
on brings it back once more. So a burst of watch events about one object costs one pass over its newest state,
not one pass per event, and two passes over one object never race.

The work raises kopf.TemporaryError to come back after its delay (e.g. waiting for a setting); any other error
is logged and retried after a back-off that doubles with each consecutive failure of the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import kopf

K = TypeVar("K", bound=Hashable)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

log = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    def __init__(self, name: str, work: Callable[[K], Awaitable[None]], workers: int,
                 reference: Callable[[K], dict[str, Any]]):
        """`reference`: the object a key stands for, as its log lines name it (kopf's formatters read it)."""
        self.name = name
        self._work = work
        self._reference = reference
        self._workers = workers
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start the workers on the running loop (in the context of the caller, e.g. kopf's for its events)."""
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def forget(self, key: K) -> None:
        """The object is gone: no back-off history is kept for it."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._waiting)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._waiting.discard(key)
            self._active.add(key)
            delay: float | None = None
            try:
                await self._work(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except kopf.TemporaryError as error:  # an expected wait (e.g. for a Project's connection)
                delay = error.delay or 0.0  # kopf's None: again at once
                log.info("%s (again in %s s)", error, delay, extra={"k8s_ref": self._reference(key)})
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (failures - 1))
                log.exception("%s reconcile failed (again in %.0f s)", self.name, delay,
                              extra={"k8s_ref": self._reference(key)})
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
            if delay is not None:
                self.add_after(key, delay)
