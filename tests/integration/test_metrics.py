"""A real Prometheus scrapes the operator running on the test control plane; floe's series and
alert rules are queried through Prometheus's own API."""

import json
import subprocess
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

from dev.controlplane import free_port, wait_until
from hack.chart import REPO
from hack.floe_tools import ensure

PROMETHEUS_CONFIG = REPO / "manifests" / "prometheus" / "prometheus.yml"
RULES = REPO / "manifests" / "prometheus" / "floe-rules.yaml"


class Prometheus:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def prometheus(floe_operator, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{floe_operator.metrics_port}"]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            str(ensure("prometheus")),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = Prometheus(port)
    try:
        wait_until(lambda: proc.poll() is not None or server.ready(), 60, "Prometheus ready")
        assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def eventually(prometheus: Prometheus, expr: str, timeout: float = 60) -> list[dict]:
    return wait_until(lambda: prometheus.query(expr), timeout, f"Prometheus query {expr!r} to return data")


def test_prometheus_scrapes_the_operator(prometheus):
    eventually(prometheus, 'up{job="floe-operator"} == 1')
    # The operator-down alert (pending from before the first scrape) clears once the operator is scraped.
    wait_until(lambda: prometheus.query('ALERTS{alertname="FloeOperatorDown"}') == [], 30, "FloeOperatorDown to clear")


def test_reconciles_and_per_object_series_reach_prometheus(prometheus, cluster):
    project = f"metrics-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        {"apiVersion": "floe.dev/v1alpha1", "kind": "Project", "metadata": {"name": project}, "spec": {}}
    ).check_returncode()
    cluster.wait_for(
        lambda: (cluster.get("project", project) or {}).get("status", {}).get("phase") == "Ready",
        timeout=60,
        what=f"Project {project} Ready",
    )
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "t5", "namespace": project},
            "spec": {
                "model": {"scratch": {"shape": "tiny"}},
                "dataset": {"file": {"path": "/data/news.csv"}},
                "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
            },
        },
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "nb", "namespace": project},
            "spec": {"template": "snowflake", "computeProfile": "cpu", "stopped": True},
        },
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "SnowflakeDeployment",
            "metadata": {"name": "sfd", "namespace": project},
            "spec": {
                "source": {"fineTuneJobRef": {"name": "t5"}},
                "snowflake": {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"},
            },
        },
    ).check_returncode()
    try:
        eventually(prometheus, 'floe_reconcile_total{kind="Project", result="success"} > 0')
        eventually(prometheus, 'floe_resources{kind="Project", phase="Ready"} >= 1')
        # The latency histogram: every reconcile lands in the +Inf bucket and in the count.
        eventually(
            prometheus,
            'floe_reconcile_duration_seconds_bucket{kind="Project", le="+Inf"}'
            ' == on(kind) floe_reconcile_duration_seconds_count{kind="Project"} > 0',
        )
        # Workspaces are counted like the other kinds (a stopped one settles in Stopped).
        eventually(prometheus, 'floe_reconcile_total{kind="Workspace", result="success"} > 0')
        eventually(prometheus, 'floe_resources{kind="Workspace", phase="Stopped"} >= 1')
        # A deployment waiting for its job has exactly one current phase series.
        deployment = eventually(prometheus, f'floe_snowflakedeployment_phase{{namespace="{project}", name="sfd"}} == 1')
        assert len(deployment) == 1
        eventually(prometheus, 'floe_reconcile_total{kind="SnowflakeDeployment", result="success"} > 0')
        phases = eventually(prometheus, f'floe_finetunejob_phase{{namespace="{project}", name="t5"}} == 1')
        assert len(phases) == 1, "exactly one current phase per job"
        phase = phases[0]["metric"]["phase"]
        assert phase in {"Pending", "Running", "Succeeded", "Failed"}
        if phase in {"Pending", "Running"}:
            assert prometheus.value(f'floe_gpus_requested{{namespace="{project}"}}') == 1
    finally:
        cluster.kubectl("delete", "project", project, "--wait=false")
    # Deleting the job removes its series from the next scrape on.
    cluster.kubectl("delete", "finetunejob", "t5", "-n", project, "--ignore-not-found", "--wait=false")
    wait_until(
        lambda: not prometheus.query(f'floe_finetunejob_phase{{namespace="{project}"}}'),
        60,
        "the deleted job's series to go",
    )
