"""The leader-election decisions, as pure functions of the Lease and the clock."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from floe_operator.leader import (
    DEFAULT_LEASE_NAME,
    LeaseRecord,
    Observed,
    Timing,
    format_micro_time,
    lease_spec,
    may_acquire,
    must_step_down,
    observe,
    released_spec,
    renewal_wait,
)

REPO = Path(__file__).resolve().parents[3]

TIMING = Timing(lease_duration=8, renew_deadline=6, retry_period=2)
WALL = datetime(2026, 12, 2, 13, 0, 0, tzinfo=UTC)


def held(by: str, renewed: str = "2026-12-02T12:59:58.000000Z", transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(holder=by, lease_duration_seconds=8, transitions=transitions,
                       acquire_time="2026-12-02T12:00:00.000000Z", renew_time=renewed)


def test_a_missing_or_released_lease_is_free():
    assert may_acquire(Observed(None, since=100), "b", now=100)
    assert may_acquire(Observed(held(""), since=100), "b", now=100)


def test_a_standby_waits_a_full_lease_duration_from_when_it_saw_the_lease_change():
    seen = observe(None, held("a"), now=100)
    assert not may_acquire(seen, "b", now=107.9)
    assert may_acquire(seen, "b", now=108)


def test_a_renewal_restarts_the_wait_and_an_unchanged_lease_does_not():
    seen = observe(None, held("a"), now=100)
    assert observe(seen, held("a"), now=105) is seen
    renewed = observe(seen, held("a", renewed="2026-12-02T13:00:04.000000Z"), now=105)
    assert renewed.since == 105
    assert not may_acquire(renewed, "b", now=108)


def test_the_leaders_own_timestamps_do_not_count_clock_skew_is_harmless():
    # A renewTime an hour old (the leader's clock is behind) does not make the Lease look expired.
    seen = observe(None, held("a", renewed="2026-12-02T12:00:00.000000Z"), now=100)
    assert not may_acquire(seen, "b", now=101)


def test_a_replica_may_take_back_its_own_lease_at_once():
    # A restarted container keeps its pod's name: it is the holder, nobody else reconciles.
    assert may_acquire(Observed(held("a"), since=100), "a", now=100)


def test_the_leader_steps_down_after_the_renew_deadline_before_anyone_may_acquire():
    assert not must_step_down(last_renewed=100, now=105.9, timing=TIMING)
    assert must_step_down(last_renewed=100, now=106, timing=TIMING)
    # The standby saw that renewal no earlier than it happened: it cannot acquire before the leader stopped.
    assert TIMING.renew_deadline < TIMING.lease_duration


def test_handover_after_a_killed_leader_is_within_15_seconds():
    # The last renewal seen one retry period late, then at most one more period until the standby looks.
    assert Timing().lease_duration + 2 * Timing().retry_period <= 15 - 2  # 2 s for the write and kopf's start


def test_timing_must_leave_the_leader_time_to_stop():
    with pytest.raises(ValueError):
        Timing(lease_duration=6, renew_deadline=6, retry_period=2)
    with pytest.raises(ValueError):
        Timing(lease_duration=8, renew_deadline=2, retry_period=2)


def test_acquiring_from_another_holder_counts_a_transition_and_restarts_acquire_time():
    spec = lease_spec(held("a", transitions=2), "b", WALL, TIMING)
    assert spec == {"holderIdentity": "b", "leaseDurationSeconds": 8, "acquireTime": "2026-12-02T13:00:00.000000Z",
                    "renewTime": "2026-12-02T13:00:00.000000Z", "leaseTransitions": 3}


def test_renewing_keeps_acquire_time_and_transitions():
    spec = lease_spec(held("b", transitions=3), "b", WALL, TIMING)
    assert spec["acquireTime"] == "2026-12-02T12:00:00.000000Z"
    assert spec["renewTime"] == "2026-12-02T13:00:00.000000Z"
    assert spec["leaseTransitions"] == 3


def test_creating_the_lease_starts_at_zero_transitions():
    assert lease_spec(None, "a", WALL, TIMING)["leaseTransitions"] == 0


def test_releasing_clears_the_holder_so_a_standby_need_not_wait():
    spec = released_spec(held("a"))
    assert spec["holderIdentity"] is None
    assert may_acquire(Observed(LeaseRecord("", 1, 2, spec["acquireTime"], spec["renewTime"]), since=100), "b", 100)


def test_micro_time_always_has_six_fractional_digits():
    # The API server's MicroTime parser refuses a timestamp without them (isoformat drops them at .000000).
    assert format_micro_time(WALL) == "2026-12-02T13:00:00.000000Z"


def test_a_slow_renewal_shortens_the_wait_so_the_deadline_is_checked_on_time():
    assert renewal_wait(last_renewed=100, now=100, timing=TIMING) == 2
    assert renewal_wait(last_renewed=100, now=105, timing=TIMING) == 1  # a request hung for 3 s
    assert renewal_wait(last_renewed=100, now=107, timing=TIMING) == 0


def test_the_chart_role_names_the_lease_the_operator_uses():
    role = yaml.safe_load((REPO / "helm/floe/files/operator-leader-role.yaml").read_text())
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [DEFAULT_LEASE_NAME], "verbs": ["get", "update"]}]
    # The one unnamed verb is create: RBAC cannot name an object that does not exist yet.
    assert [rule["verbs"] for rule in role["rules"] if "resourceNames" not in rule] == [["create"]]
