"""The work queue the FineTuneJob reconciles run from: a key waits at most once, runs alone, and comes back after
a temporary error's delay or a doubling back-off."""

from __future__ import annotations

import asyncio

import kopf
from floe_operator import workqueue
from floe_operator.workqueue import WorkQueue


class Recorder:
    """Work that records each run and, per key, can be held until released."""

    def __init__(self, outcomes: dict | None = None):
        self.runs: list[str] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.outcomes = outcomes or {}  # key -> list of exceptions to raise on its next runs
        self.ran = asyncio.Condition()

    async def __call__(self, key: str) -> None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        try:
            if key in self.gates:
                await self.gates[key].wait()
            self.runs.append(key)
            pending = self.outcomes.get(key)
            if pending:
                raise pending.pop(0)
        finally:
            self.running.discard(key)
            async with self.ran:
                self.ran.notify_all()

    async def until(self, predicate) -> None:
        async with self.ran:
            await asyncio.wait_for(self.ran.wait_for(predicate), timeout=5)


def run(coroutine):
    return asyncio.run(coroutine)


def test_events_while_a_key_waits_cost_one_run():
    async def scenario():
        work = Recorder()
        queue = WorkQueue("test", work, reference=lambda key: {"name": key}, workers=2)
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        queue.start()
        await work.until(lambda: len(work.runs) == 2)
        await queue.stop()
        return work.runs

    assert sorted(run(scenario())) == ["a", "b"]


def test_an_event_during_a_run_brings_the_key_back_once_and_never_runs_it_twice_at_once():
    async def scenario():
        work = Recorder()
        work.gates["a"] = asyncio.Event()
        queue = WorkQueue("test", work, reference=lambda key: {"name": key}, workers=4)
        queue.start()
        queue.add("a")
        await work.until(lambda: "a" in work.running)
        for _ in range(3):  # other workers are idle: none may take "a" while it runs
            queue.add("a")
        await asyncio.sleep(0)  # a turn for the idle workers, which must leave "a" alone
        work.gates["a"].set()
        await work.until(lambda: len(work.runs) == 2 and not work.running)
        await queue.stop()
        return work

    work = run(scenario())
    assert work.runs == ["a", "a"]
    assert work.overlaps == 0


def test_a_temporary_error_runs_the_key_again_after_its_delay():
    async def scenario():
        work = Recorder({"a": [kopf.TemporaryError("waiting for the Project", delay=0.01)]})
        queue = WorkQueue("test", work, reference=lambda key: {"name": key}, workers=1)
        queue.start()
        queue.add("a")
        await work.until(lambda: len(work.runs) == 2)
        await queue.stop()
        return work.runs

    assert run(scenario()) == ["a", "a"]


def test_errors_back_off_doubling_per_consecutive_failure(monkeypatch):
    delays: list[float] = []

    async def scenario():
        work = Recorder({"a": [RuntimeError("API down"), RuntimeError("API down"), RuntimeError("API down")]})
        queue = WorkQueue("test", work, reference=lambda key: {"name": key}, workers=1)
        real_add_after = queue.add_after

        def add_after(key, delay):
            delays.append(delay)
            real_add_after(key, 0)

        monkeypatch.setattr(queue, "add_after", add_after)
        queue.start()
        queue.add("a")
        await work.until(lambda: len(work.runs) == 4)  # three failures, then a success
        await queue.stop()
        return queue

    queue = run(scenario())
    first = workqueue.FIRST_BACKOFF_S
    assert delays == [first, 2 * first, 4 * first]
    assert "a" not in queue._failures  # the success forgot the history


def test_the_back_off_is_capped(monkeypatch):
    delays: list[float] = []
    failures = 12  # 2**11 s uncapped

    async def scenario():
        work = Recorder({"a": [RuntimeError("API down")] * failures})
        queue = WorkQueue("test", work, reference=lambda key: {"name": key}, workers=1)
        monkeypatch.setattr(queue, "add_after", lambda key, delay: (delays.append(delay), queue.add(key)))
        queue.start()
        queue.add("a")
        await work.until(lambda: len(work.runs) == failures + 1)
        await queue.stop()

    run(scenario())
    assert max(delays) == workqueue.MAX_BACKOFF_S
