"""The operator's log keeps changes, not kopf's line for every event it handled without news."""

import logging

from floe_operator.handlers.startup import _not_routine


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_kopfs_routine_success_lines_are_dropped_and_changes_kept():
    assert not _not_routine(record("Handler 'follow_workload' succeeded."))
    assert not _not_routine(record("Timer 'workspace_quota' succeeded."))
    assert not _not_routine(record("Resuming is processed: 3 succeeded; 0 failed."))
    assert _not_routine(record("Creation is processed: 1 succeeded; 0 failed."))
    assert _not_routine(record("Resuming is processed: 0 succeeded; 1 failed."))
    assert _not_routine(record("Handler 'reconcile_finetunejob' succeeded.", logging.WARNING))
    assert _not_routine(record("removed RoleBinding team-a/x: no member has that persona any more"))
