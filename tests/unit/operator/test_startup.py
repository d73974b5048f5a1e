"""The operator's log keeps changes, not kopf's line for every event it handled without news."""

import json
import logging

from floe_operator import kube
from floe_operator.handlers.startup import _not_routine
from kubernetes import client
from kubernetes.config import kube_config


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
