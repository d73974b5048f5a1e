"""The cluster the demo and the tests run against and the operator running on it.

By default a local control plane (controlplane.py) plus a pod runner for one node (podrunner.py); an
existing cluster (kind or real) instead when given its kubeconfig (`FLOE_TEST_KUBECONFIG=<path>` for the
tests, `--kubeconfig` for the demo).
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config

from dev.controlplane import ControlPlane, free_port, kubectl, wait_until

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "floe-system"
OPERATOR_ACCOUNT = "floe-operator"
TEST_ROLE = "floe-operator-under-test"
RUNNER_STATE_ROOT = Path("/var/lib/floe-podrunner")


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: str
    local: ControlPlane | None = None
    runner_state: Path | None = None  # where the local pod runner keeps pod and volume files

    def kubectl(self, *args, input=None, as_user=None, as_groups=(), check=False, timeout=60):
        return kubectl(self.kubectl_bin, self.kubeconfig, *args, input=input, as_user=as_user, as_groups=as_groups,
                       check=check, timeout=timeout)

    def apply(self, *objects: dict, as_user=None, as_groups=()) -> subprocess.CompletedProcess:
        docs = yaml.safe_dump_all(list(objects))
        return self.kubectl("apply", "-f", "-", input=docs, as_user=as_user, as_groups=as_groups)

    def username(self) -> str:
        """Who the admin kubeconfig authenticates as (an approval must carry the approver's own name)."""
        return self.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", check=True).stdout

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))

    def get(self, *args) -> dict | None:
        result = self.kubectl("get", *args, "-o", "yaml")
        return yaml.safe_load(result.stdout) if result.returncode == 0 else None

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition"):
        return wait_until(predicate, timeout, what)

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """Writes a kubeconfig that authenticates as a ServiceAccount (a token from the TokenRequest API)."""
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=24h", check=True).stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
        server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": server}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        }))
        return path


def start_local(workdir: Path) -> tuple[Cluster, subprocess.Popen]:
    plane = ControlPlane(workdir).start()
    # Like the kubelet's /var/lib/kubelet: outside /tmp, which pods mount over.
    runner_state = RUNNER_STATE_ROOT / workdir.parent.name
    cert, key = plane.pki.issue("local-runner", "local-runner", server=True)
    runner = subprocess.Popen(
        [sys.executable, "-m", "dev.podrunner", f"--kubeconfig={plane.kubeconfig}",
         f"--state-dir={runner_state}", f"--tls-cert-file={cert}", f"--tls-key-file={key}"],
        cwd=REPO, stdout=open(plane.logs / "podrunner.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster = Cluster(plane.kubeconfig, plane.bin("kubectl"), plane, runner_state)
    try:
        cluster.wait_for(
            lambda: "True" in cluster.kubectl(
                "get", "node", "local-runner", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
            ).stdout,
            60, "the local runner node to be Ready",
        )
    except BaseException:
        runner.terminate()
        runner.wait(timeout=20)
        plane.stop()
        raise
    return cluster, runner


def existing(kubeconfig: str) -> Cluster:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RuntimeError("FLOE_TEST_KUBECONFIG is set but kubectl is not on PATH")
    return Cluster(Path(kubeconfig), kubectl)


def install_operator_rbac(cluster: Cluster, workdir: Path) -> Path:
    """The operator's namespace, ServiceAccount, least-privilege ClusterRole, the role Projects bind it to in
    their namespaces, its admission guards and the tenancy and persona policies (the chart's own files);
    returns a kubeconfig that authenticates as that ServiceAccount."""
    rules = yaml.safe_load((REPO / "helm/floe/files/operator-clusterrole.yaml").read_text())["rules"]
    # Named apart from the chart's own objects, so a test that installs the chart leaves these alone.
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": TEST_ROLE}, "rules": rules}
    guards: list[dict] = []
    for policy in yaml.safe_load_all((REPO / "helm/floe/files/operator-guard.yaml").read_text()):
        name = f"{TEST_ROLE}-{policy['metadata']['name']}"
        policy["metadata"]["name"] = name
        guards += [policy, {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "paramRef": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE,
                                  "parameterNotFoundAction": "Allow"}}}]
    result = cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}},
        role,
        yaml.safe_load((REPO / "helm/floe/files/operator-project-role.yaml").read_text()),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": TEST_ROLE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TEST_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}]},
        *guards,
    )
    if result.returncode:
        raise RuntimeError(f"installing the operator's RBAC and policies failed: {result.stderr}")
    install_personas(cluster)
    cluster.kubectl("apply", "-f", str(REPO / "helm/floe/files/tenancy.yaml"), check=True)
    return cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, workdir / "operator.kubeconfig")


def install_personas(cluster: Cluster) -> None:
    """The persona ClusterRoles and the approval policy, as the chart ships them."""
    cluster.kubectl("apply", "-f", str(REPO / "helm/floe/files/personas.yaml"), check=True)


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), check=True)
    for crd in sorted(p.name.removesuffix(".yaml") for p in (REPO / "crds").glob("*.yaml")):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s", check=True)
        # Established comes before the schema reaches the OpenAPI documents that kubectl explain reads.
        plural = crd.split(".", 1)[0]
        wait_until(lambda p=plural: cluster.kubectl("explain", p).returncode == 0, 60, f"{crd} in OpenAPI")


class OperatorProcess:
    """`python -m floe_operator` as a subprocess, under the operator's own ServiceAccount."""

    _runs = itertools.count(1)

    def __init__(self, kubeconfig: Path, logdir: Path, env: dict[str, str] | None = None):
        self.kubeconfig, self.logdir, self.extra_env = kubeconfig, logdir, env or {}
        self.proc: subprocess.Popen | None = None
        self.metrics_port = self.health_port = 0
        self.log_path: Path | None = None

    def start(self) -> OperatorProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = self.logdir / f"operator-{next(OperatorProcess._runs)}.log"  # one file per run
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "FLOE_METRICS_PORT": str(self.metrics_port),
               "FLOE_HEALTH_PORT": str(self.health_port), **self.extra_env}
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "floe_operator", "--all-namespaces"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as when its pod is evicted."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def secret_data(values: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
