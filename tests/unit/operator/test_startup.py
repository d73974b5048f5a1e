"""The operator's start-up settings: a log of changes, not kopf's line for every event it handled without news; a
connection per handler thread; kopf's change detection without copying what it ignores."""

import copy
import json
import logging

import kopf
import pytest
from floe_operator import kube
from floe_operator.handlers.startup import LeanDiffBaseStorage, _not_routine
from kubernetes import client
from kubernetes.config import kube_config


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_kopfs_routine_success_lines_are_dropped_and_changes_kept():
    assert not _not_routine(record("Handler 'trainer_workload_event' succeeded."))
    assert not _not_routine(record("Timer 'workspace_quota' succeeded."))
    assert not _not_routine(record("Resuming is processed: 3 succeeded; 0 failed."))
    assert _not_routine(record("Creation is processed: 1 succeeded; 0 failed."))
    assert _not_routine(record("Resuming is processed: 0 succeeded; 1 failed."))
    assert _not_routine(record("Handler 'reconcile_project' succeeded.", logging.WARNING))
    assert _not_routine(record("removed RoleBinding team-a/x: no member has that persona any more"))


def test_the_api_client_keeps_a_connection_for_each_handler_thread(tmp_path, monkeypatch):
    """urllib3's default pool (5 per CPU) is smaller than kopf's executor: a burst of handlers discarded the
    connections beyond it and paid a new TLS handshake per request."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(client.Configuration, "_default", None)  # restored after the test
    kube.load_config()
    pool = client.ApiClient().rest_client.pool_manager.connection_pool_kw
    assert pool["maxsize"] == kube.API_THREADS >= 32


FINETUNEJOB = {
    "apiVersion": "floe.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {
        "name": "summarize", "namespace": "team-a", "uid": "u-1", "resourceVersion": "42", "generation": 3,
        "labels": {"team": "a"},
        "annotations": {
            "note": "kept",
            "floe.dev/last-handled-configuration": '{"spec": {"epochs": 2}}',
            "floe.dev/reconcile_finetunejob": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "d-1"}],
        "managedFields": [{"manager": "floe-operator", "fieldsV1": {"f:status": {"f:phase": {}}}}],
    },
    "spec": {"epochs": 3, "dataset": {"files": ["a.csv"]}},
    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
}


@pytest.mark.parametrize("body, extra_fields", [
    (FINETUNEJOB, None),
    (FINETUNEJOB, ["status.phase"]),  # a handler that follows a status field keeps it in the essence
    ({**FINETUNEJOB, "kind": "Workspace"}, ["spec"]),
])
def test_the_lean_diffbase_is_kopfs_essence(body, extra_fields):
    """The stored last-handled spec and the detected changes stay kopf's own: an essence that differed would
    make every FineTuneJob look updated after an upgrade of the operator."""
    lean, kopfs = (storage(prefix="floe.dev", key="last-handled-configuration")
                   for storage in (LeanDiffBaseStorage, kopf.AnnotationsDiffBaseStorage))
    original = copy.deepcopy(body)
    built = lean.build(body=kopf.Body(body), extra_fields=extra_fields)
    assert built == kopfs.build(body=kopf.Body(body), extra_fields=extra_fields)
    assert body == original  # nothing of the watched object is changed
    built["spec"].clear()
    assert body == original  # a copy, as kopf's is


def test_only_floes_kinds_have_change_handlers():
    """The lean diffbase builds no essence of other kinds (trainer pods and Jobs): a creation or update handler
    of one would see no change, ever."""
    import floe_operator.handlers  # noqa: F401  (registers the handlers)

    changing = kopf.get_default_registry()._changing.get_all_handlers()
    assert changing and {handler.selector.group for handler in changing} == {"floe.dev"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    assert LeanDiffBaseStorage(prefix="floe.dev").build(body=kopf.Body(pod)) == {}


def test_garbage_collection_leaves_start_up_objects_out_and_runs_less_often():
    """In a process of its own: freezing would keep this test process's objects out of its collections."""
    import subprocess
    import sys

    script = ("import gc; from floe_operator.handlers.startup import tune_garbage_collection as tune; "
              "before = gc.get_freeze_count(); tune(); print(before, gc.get_freeze_count(), *gc.get_threshold())")
    before, frozen, *thresholds = map(int, subprocess.check_output([sys.executable, "-c", script], text=True).split())
    assert before == 0 and frozen > 50_000  # the imports' objects: kopf, the Kubernetes client, pydantic's schemas
    assert thresholds[0] >= 10_000
