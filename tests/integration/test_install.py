"""The rendered chart on the real control plane: every object passes the API server's validation
(built-in schemas, CRD schemas, CEL), and the operator runs from it under the chart's own RBAC."""

import os
import re
import subprocess
import sys
import urllib.request
import uuid

import pytest
import yaml

from dev.controlplane import free_port, wait_until
from hack.chart import REPO, documents, helm_template, run
from hack.floe_tools import ensure

NAMESPACE = "floe-chart-test"


def kubectl_apply(cluster, objects: list[dict], *extra: str) -> subprocess.CompletedProcess:
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=floe-install-test",
        *extra,
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )


@pytest.fixture(scope="module")
def namespace(cluster):
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    ).check_returncode()
    return NAMESPACE


@pytest.fixture(scope="module")
def monitoring_crds(cluster):
    """The Prometheus Operator's CRDs (from its own release) for the kinds the chart renders, so the API server
    checks those objects too; no Prometheus Operator runs here to act on them."""
    folder = ensure("prometheus-operator-crds")
    files = [folder / f"monitoring.coreos.com_{plural}.yaml" for plural in ("servicemonitors", "podmonitors",
                                                                             "prometheusrules")]
    crds = [yaml.safe_load(f.read_text()) for f in files]
    kubectl_apply(cluster, crds).check_returncode()
    for crd in crds:
        name = crd["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", check=True)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "replicaCount": 3,
            "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
            "prometheusRule": {"enabled": True},
        },
    ],
    ids=["defaults", "everything-on"],
)
def test_every_rendered_object_passes_server_side_validation(cluster, namespace, monitoring_crds, values):
    checked = helm_template(values=values, include_crds=True, namespace=namespace)
    # CRDs first, so that the custom objects (ClusterKopfPeering) are checked against them.
    crds = [o for o in checked if o["kind"] == "CustomResourceDefinition"]
    kubectl_apply(cluster, crds).check_returncode()
    result = kubectl_apply(cluster, [o for o in checked if o["kind"] != "CustomResourceDefinition"], "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_examples_pass_server_side_validation(cluster):
    """manifests/examples as written, in a fresh namespace (the example's own namespace renamed)."""
    name = f"example-{uuid.uuid4().hex[:6]}"
    objects = documents(run("kustomize", "build", str(REPO / "manifests" / "examples")))
    for obj in objects:
        if obj["kind"] in ("Namespace", "Project"):
            obj["metadata"]["name"] = name
        elif "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = name
    cluster.apply(next(o for o in objects if o["kind"] == "Namespace")).check_returncode()
    try:
        result = kubectl_apply(cluster, [o for o in objects if o["kind"] != "Namespace"], "--dry-run=server")
        assert result.returncode == 0, result.stderr
        assert {
            "project.floe.dev/" + name,
            "finetunejob.floe.dev/t5-news",
            "snowflakedeployment.floe.dev/summarize",
        } <= set(result.stdout.split())
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_operator_runs_from_the_installed_chart_under_its_rbac(cluster, namespace, floe_operator, tmp_path):
    # The chart's operator must be the only one reconciling: with two, either may handle the Project.
    floe_operator.stop()
    objects = helm_template(namespace=namespace)
    kubectl_apply(cluster, objects).check_returncode()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cluster.service_account_kubeconfig(namespace, pod["serviceAccountName"], tmp_path / "kubeconfig")

    # Run the container's own command with its env; the catalog file comes from the installed ConfigMap.
    catalog = cluster.get("configmap", "floe-catalog", "-n", namespace)["data"]["catalog.yaml"]
    (tmp_path / "catalog.yaml").write_text(catalog)
    metrics_port, health_port = free_port(), free_port()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(
        FLOE_METRICS_PORT=str(metrics_port),
        FLOE_HEALTH_PORT=str(health_port),
        FLOE_CATALOG=str(tmp_path / "catalog.yaml"),
        KUBECONFIG=str(tmp_path / "kubeconfig"),
    )
    command = [sys.executable if c == "python" else c for c in container["command"]] + container["args"]
    log = open(tmp_path / "operator.log", "wb")
    proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    project = f"chart-{uuid.uuid4().hex[:6]}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "operator.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(healthy, 60, "the operator's /healthz")
        cluster.apply(
            {"apiVersion": "floe.dev/v1alpha1", "kind": "Project", "metadata": {"name": project}, "spec": {}}
        ).check_returncode()
        cluster.wait_for(
            lambda: (cluster.get("project", project) or {}).get("status", {}).get("phase") == "Ready",
            timeout=90,
            what=f"Project {project} Ready under the chart's operator",
        )

        def reconcile_counted() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                return 'floe_reconcile_total{kind="Project",result="success"}' in response.read().decode()

        wait_until(reconcile_counted, 30, "the Project reconcile in the chart operator's metrics")
        log_text = (tmp_path / "operator.log").read_text()
        # The authorizer refuses with 'is forbidden: User "..." cannot <verb> ...'. Other 403s are not the
        # chart's RBAC: objects of earlier tests whose namespaces are still terminating refuse new content.
        refusals = re.findall(r'forbidden: User \\*"[^"\\]+\\*" cannot [^\n]{0,200}', log_text)
        assert not refusals, refusals[:3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        floe_operator.start()
        cluster.kubectl("delete", "project", project, "--wait=false")
        # Later modules create Workspaces with unknown catalog names to test the operator's own check.
        cluster.kubectl("delete", "validatingadmissionpolicybinding", "floe-catalog-names")
