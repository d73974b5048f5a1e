"""Status conditions (Kubernetes conventions) shared by every floe kind.

Conditions are plain dicts as stored in ``status.conditions``, a list the API server merges by type: each
writer applies the conditions it decides (``applied_conditions``). ``lastTransitionTime`` only moves when a
condition's status flips, so repeated reconciles do not churn the object.

Every kind's status builder reports its verdict through ``status_conditions``, which writes ``Ready`` and
the kstatus conditions (``Reconciling``, ``Stalled``) that Flux, kpt and cli-utils appliers read: without
them a failed resource looks in progress to them forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
FAILED = "Failed"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, status: bool | str, reason: str, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    """A condition without lastTransitionTime (set_condition fills it)."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    entry: dict[str, Any] = {"type": type_, "status": value, "reason": reason, "message": message}
    if generation is not None:
        entry["observedGeneration"] = generation
    return entry


def status_conditions(
    phase: str, ready: bool, reason: str, message: str, generation: int | None = None, *, paused: bool = False
) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled for one verdict of a kind's status builder.

    Phase Failed is terminal: Stalled is True with the reason and message. Otherwise the operator is still
    working unless the resource is ready or ``paused`` (waiting on a person: suspended, awaiting approval),
    so Reconciling is True. At most one of the three is True.
    """
    failed = phase == FAILED
    working = not (ready or failed or paused)
    return [
        condition(READY, ready and not failed, reason, message, generation),
        condition(RECONCILING, working, reason, message if working else "", generation),
        condition(STALLED, failed, reason, message if failed else "", generation),
    ]


def set_condition(
    conditions: Iterable[dict[str, Any]] | None, new: dict[str, Any], now: str | None = None
) -> list[dict[str, Any]]:
    """Return conditions with ``new`` merged in by type, keeping lastTransitionTime unless the status flips."""
    result = [dict(c) for c in conditions or ()]
    for index, old in enumerate(result):
        if old.get("type") == new["type"]:
            merged = {**old, **new}
            if old.get("status") != new["status"] or "lastTransitionTime" not in old:
                merged["lastTransitionTime"] = now or now_iso()
            result[index] = merged
            return result
    result.append({**new, "lastTransitionTime": now or now_iso()})
    return result


def merge_conditions(
    conditions: Iterable[dict[str, Any]] | None, updates: Iterable[dict[str, Any]], now: str | None = None
) -> list[dict[str, Any]]:
    """set_condition for several conditions at once."""
    result = list(conditions or ())
    for update in updates:
        result = set_condition(result, update, now)
    return result


def applied_conditions(
    conditions: Iterable[dict[str, Any]] | None, updates: Iterable[dict[str, Any]], now: str | None = None
) -> list[dict[str, Any]]:
    """The conditions ``updates`` as their writer applies them (server-side apply merges them by type with
    other writers' conditions): each keeps its lastTransitionTime in ``conditions`` unless its status flips."""
    updates = list(updates)
    types = {update["type"] for update in updates}
    return [c for c in merge_conditions(conditions, updates, now) if c["type"] in types]


def status_unchanged(status: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether applying ``update`` (a writer's part of a status) would leave ``status`` as it is."""
    conditions = status.get("conditions")
    return all(status.get(key) == value for key, value in update.items() if key != "conditions") and all(
        get_condition(conditions, new["type"]) == new for new in update.get("conditions") or ()
    )


def get_condition(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_true(conditions: Iterable[dict[str, Any]] | None, type_: str) -> bool:
    found = get_condition(conditions, type_)
    return bool(found) and found.get("status") == "True"


def is_terminal(phase: str | None) -> bool:
    return phase in TERMINAL_PHASES
