"""Why a workload's pods are not being created, in words a user understands.

When a pod would exceed the namespace's ResourceQuota, the API server refuses it and the owning
controller (Job, StatefulSet) only records a ``FailedCreate`` event and retries with back-off; the
workload itself just looks Pending. These pure functions turn those events into a QuotaExceeded
condition that names the quota and what was used, asked for and allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

QUOTA_CONDITION = "QuotaExceeded"

# The quota admission plugin's wording (k8s.io/apiserver .../resourcequota/controller.go).
_EXCEEDED = re.compile(
    r"exceeded quota: (?P<quota>[^,]+), requested: (?P<requested>.*?), "
    r"used: (?P<used>.*?), limited: (?P<limited>[^\s,]+(?:,[^\s,]+)*)"
)
_MUST_SPECIFY = re.compile(r"failed quota: (?P<quota>[^:]+): must specify (?P<what>.+)$")


@dataclass(frozen=True)
class Shortfall:
    resource: str
    used: str
    asked: str
    limit: str

    def describe(self) -> str:
        return f"{self.resource} used {self.used}, asked {self.asked}, limit {self.limit}"


@dataclass(frozen=True)
class QuotaProblem:
    """A pod refused by a ResourceQuota: which quota, and per resource what was short."""

    quota: str
    shortfalls: tuple[Shortfall, ...] = ()
    missing: str = ""  # "must specify ..." when the quota needs requests/limits the pod lacks

    @property
    def message(self) -> str:
        if self.missing:
            return f"ResourceQuota {self.quota} requires {self.missing}; the pod cannot be created until it sets them"
        details = "; ".join(s.describe() for s in self.shortfalls)
        return (
            f"ResourceQuota {self.quota} is exceeded: {details}. Pods are created once the "
            "quota allows it (raise the Project's spec.quota or free capacity)"
        )


def _resource_list(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {name.strip(): value.strip() for name, value in pairs}


def parse_quota_error(message: str) -> QuotaProblem | None:
    """The quota problem in an API server refusal (or event quoting it), else None."""
    if match := _EXCEEDED.search(message):
        requested = _resource_list(match["requested"])
        used = _resource_list(match["used"])
        limited = _resource_list(match["limited"])
        shortfalls = tuple(
            Shortfall(name, used.get(name, "0"), requested.get(name, "?"), limit)
            for name, limit in sorted(limited.items())
        )
        return QuotaProblem(quota=match["quota"].strip(), shortfalls=shortfalls)
    if match := _MUST_SPECIFY.search(message.strip()):
        return QuotaProblem(quota=match["quota"].strip(), missing=match["what"].strip())
    return None


def _event_order(event: dict) -> tuple[str, int]:
    # lastTimestamp has one-second resolution; the resourceVersion breaks ties between events
    # written in the same second (etcd revisions only grow).
    when = event.get("lastTimestamp") or event.get("eventTime") or ""
    version = str(event.get("metadata", {}).get("resourceVersion", "0"))
    return (str(when), int(version) if version.isdigit() else 0)


RECOVERED_MESSAGE = "all pods were created once the quota allowed them"


def quota_recovery(conditions: Iterable[dict] | None, pods_wanted: int, pods_created: int) -> dict | None:
    """QuotaExceeded False (WithinQuota) for a workload that was refused and now has all its pods, else None."""
    refused = next((c for c in conditions or () if c.get("type") == QUOTA_CONDITION), {}).get("status") == "True"
    if not refused or pods_created < pods_wanted:
        return None
    return {"type": QUOTA_CONDITION, "status": "False", "reason": "WithinQuota", "message": RECOVERED_MESSAGE}


def quota_problem(pods_wanted: int, pods_created: int, events: Iterable[dict]) -> QuotaProblem | None:
    """The quota problem holding a workload back, if pods are missing and quota is why.

    ``events`` are the workload's own events (Job or StatefulSet). Once every wanted pod exists, any
    earlier refusal is history: the workload has recovered.
    """
    if pods_created >= pods_wanted:
        return None
    creations = [e for e in events if e.get("reason") in ("FailedCreate", "SuccessfulCreate")]
    if not creations:
        return None
    latest = max(creations, key=_event_order)
    if latest.get("reason") != "FailedCreate":
        return None
    return parse_quota_error(latest.get("message", ""))
