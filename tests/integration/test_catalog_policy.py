"""The chart's catalog-name admission policy: unknown template or compute profile names are refused at
`kubectl apply`, with the valid ones, on a real API server."""

from __future__ import annotations

import pytest
import yaml

from hack.chart import helm_template

NAMESPACE = "catalog-check"
POLICY = "floe-catalog-names"
JOB_SPEC = {
    "model": {"scratch": {"shape": "tiny"}},
    "dataset": {"file": {"path": "/data/news.csv"}},
    "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"},
}


def resource(kind: str, name: str, **spec) -> dict:
    base = JOB_SPEC if kind == "FineTuneJob" else {}
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {**base, **spec},
    }


def dry_run(cluster, obj: dict):
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))


def refuses(cluster, obj: dict) -> bool:
    return "unknown" in dry_run(cluster, obj).stderr


@pytest.fixture(scope="module")
def catalog_names(cluster, floe_operator):
    """The policy, its binding and its parameter ConfigMap as the chart renders them, and a Project to try
    names in (floe's resources live only in Project namespaces); yields the ConfigMap."""
    objects = [o for o in helm_template() if o["metadata"]["name"] == POLICY]
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    params = next(o for o in objects if o["kind"] == "ConfigMap")
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": params["metadata"]["namespace"]}},
        {"apiVersion": "floe.dev/v1alpha1", "kind": "Project", "metadata": {"name": NAMESPACE}, "spec": {}},
        *objects,
    ).check_returncode()
    cluster.wait_for(lambda: (cluster.get("project", NAMESPACE) or {}).get("status", {}).get("phase") == "Ready",
                     90, f"Project {NAMESPACE} Ready")
    bad = resource("Workspace", "probe", template="tensorflow")
    cluster.wait_for(lambda: refuses(cluster, bad), 30, "the catalog policy to take effect")
    yield params
    # Later test modules check the operator's reconcile-time fallback: leave no policy behind.
    for obj in reversed(objects):
        cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], "-n", params["metadata"]["namespace"])
    cluster.wait_for(lambda: dry_run(cluster, bad).returncode == 0, 30, "the catalog policy to be gone")
    cluster.kubectl("delete", "project", NAMESPACE, "--wait=false")


@pytest.mark.parametrize("kind", ["Workspace", "FineTuneJob"])
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"template": "tensorflow"}, "spec.template: unknown template 'tensorflow'; valid: pytorch, snowflake"),
        (
            {"computeProfile": "tpu"},
            "spec.computeProfile: unknown compute profile 'tpu'; valid: cpu, gpu, memory-optimized",
        ),
    ],
    ids=["template", "computeProfile"],
)
def test_unknown_name_is_refused_at_apply_with_the_valid_names(cluster, catalog_names, kind, spec, message):
    refused = cluster.apply(resource(kind, "bad-name", **spec))
    assert refused.returncode != 0
    assert message in refused.stderr
    assert cluster.get(kind.lower(), "bad-name", "-n", NAMESPACE) is None


@pytest.mark.parametrize("kind", ["Workspace", "FineTuneJob"])
def test_catalog_names_are_admitted(cluster, catalog_names, kind):
    for template in ("pytorch", "snowflake"):
        for profile in ("cpu", "gpu", "memory-optimized"):
            result = dry_run(cluster, resource(kind, "good", template=template, computeProfile=profile))
            assert result.returncode == 0, (template, profile, result.stderr)
    # A FineTuneJob may name neither.
    if kind == "FineTuneJob":
        assert dry_run(cluster, resource(kind, "plain")).returncode == 0


def test_a_name_the_catalog_dropped_blocks_only_changes_to_it(cluster, catalog_names):
    cluster.apply(resource("Workspace", "legacy", template="pytorch", computeProfile="cpu")).check_returncode()
    dropped = {**catalog_names, "data": {**catalog_names["data"], "templates": "snowflake"}}
    cluster.apply(dropped).check_returncode()
    try:
        cluster.wait_for(
            lambda: refuses(cluster, resource("Workspace", "fresh", template="pytorch")), 30, "the new names"
        )
        # The Workspace admitted earlier can still be stopped (the operator reports its template at reconcile).
        stop = cluster.kubectl(
            "patch", "workspace", "legacy", "-n", NAMESPACE, "--type=merge", "-p", '{"spec": {"stopped": true}}'
        )
        assert stop.returncode == 0, stop.stderr
        switch = cluster.kubectl(
            "patch", "workspace", "legacy", "-n", NAMESPACE, "--type=merge", "-p", '{"spec": {"template": "tf"}}'
        )
        assert switch.returncode != 0
        assert "spec.template: unknown template 'tf'; valid: snowflake" in switch.stderr
    finally:
        cluster.apply(catalog_names).check_returncode()
