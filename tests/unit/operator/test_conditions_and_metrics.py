"""Condition helpers and the metrics decorator."""

import asyncio
import inspect

import kopf
import pytest
from floe_operator import metrics
from floe_operator.conditions import (
    condition,
    get_condition,
    is_true,
    merge_conditions,
    set_condition,
    status_conditions,
)
from prometheus_client import REGISTRY


def test_set_condition_keeps_transition_time_until_status_flips():
    first = set_condition([], condition("Ready", False, "Creating", generation=1), now="t1")
    same = set_condition(first, condition("Ready", False, "StillCreating", "more detail", 2), now="t2")
    assert get_condition(same, "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "StillCreating",
        "message": "more detail",
        "observedGeneration": 2,
        "lastTransitionTime": "t1",
    }
    flipped = set_condition(same, condition("Ready", True, "Done"), now="t3")
    assert get_condition(flipped, "Ready")["lastTransitionTime"] == "t3"
    assert is_true(flipped, "Ready")
    assert len(flipped) == 1


def test_merge_conditions_adds_new_types_in_order():
    merged = merge_conditions(None, [condition("Ready", False, "A"), condition("Running", True, "B")], now="t")
    assert [c["type"] for c in merged] == ["Ready", "Running"]


def statuses(conditions):
    return {c["type"]: c["status"] for c in conditions}


@pytest.mark.parametrize(
    ("phase", "ready", "paused", "expected"),
    [
        ("Pending", False, False, {"Ready": "False", "Reconciling": "True", "Stalled": "False"}),
        ("Succeeded", True, False, {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
        ("Suspended", False, True, {"Ready": "False", "Reconciling": "False", "Stalled": "False"}),
        ("Failed", False, False, {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
    ],
)
def test_status_conditions_follow_kstatus(phase, ready, paused, expected):
    conditions = status_conditions(phase, ready, "Why", "what happened", 3, paused=paused)
    assert statuses(conditions) == expected
    assert all(c["reason"] == "Why" and c["observedGeneration"] == 3 for c in conditions)
    # The message goes where the verdict is: on Ready always, on Reconciling or Stalled only when True.
    for c in conditions:
        assert c["message"] == ("what happened" if c["type"] == "Ready" or c["status"] == "True" else "")


def sample(name, labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_reconciled_counts_results_and_times_handlers():
    @metrics.reconciled("UnitKind")
    def ok():
        return 1

    @metrics.reconciled("UnitKind")
    def retry():
        raise kopf.TemporaryError("later")

    before = sample("floe_reconcile_total", {"kind": "UnitKind", "result": "success"})
    assert ok() == 1
    with pytest.raises(kopf.TemporaryError):
        retry()
    assert sample("floe_reconcile_total", {"kind": "UnitKind", "result": "success"}) == before + 1
    assert sample("floe_reconcile_total", {"kind": "UnitKind", "result": "retry"}) == 1
    assert sample("floe_reconcile_duration_seconds_count", {"kind": "UnitKind"}) == 2


def test_reconciled_wraps_async_handlers():
    @metrics.reconciled("AsyncKind")
    async def handler():
        raise ValueError("boom")

    assert inspect.iscoroutinefunction(handler)  # kopf must still see an async handler
    with pytest.raises(ValueError):
        asyncio.run(handler())
    assert sample("floe_reconcile_total", {"kind": "AsyncKind", "result": "error"}) == 1


def test_phase_gauge_counts_objects_and_forgets_deleted_ones():
    metrics.observe_phase("GaugeKind", "a", "Running")
    metrics.observe_phase("GaugeKind", "b", "Running")
    metrics.observe_phase("GaugeKind", "a", "Succeeded")
    assert sample("floe_resources", {"kind": "GaugeKind", "phase": "Running"}) == 1
    assert sample("floe_resources", {"kind": "GaugeKind", "phase": "Succeeded"}) == 1
    metrics.observe_phase("GaugeKind", "a", None)
    assert sample("floe_resources", {"kind": "GaugeKind", "phase": "Succeeded"}) == 0
