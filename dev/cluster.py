"""The cluster the demo and the tests run against and the operator running on it.

By default a local control plane (controlplane.py) plus a pod runner for one node (podrunner.py); an
existing cluster (kind or real) instead when given its kubeconfig (`FLOE_TEST_KUBECONFIG=<path>` for the
tests, `--kubeconfig` for the demo).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml
from kubernetes import client, config

from dev.controlplane import ControlPlane, free_port, kubectl, wait_until
from dev.object_reader import ObjectReader, parse_get

REPO = Path(__file__).resolve().parents[1]
CHART_FILES = REPO / "helm/floe/files"  # the RBAC and admission policies the chart installs
OPERATOR_NAMESPACE = "floe-system"
OPERATOR_ACCOUNT = "floe-operator"
TEST_ROLE = "floe-operator-under-test"
RUNNER_STATE_ROOT = Path("/var/lib/floe-podrunner")
DEV_WORKDIR = REPO / ".demo"  # the kept development cluster of `make dev-cluster` and `make demo KEEP=1`
KEPT = "cluster.json"  # in the workdir: what `make dev-down` stops


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: str
    local: ControlPlane | None = None
    runner_state: Path | None = None  # where the local pod runner keeps pod and volume files
    _reader: ObjectReader | None = field(default=None, init=False, repr=False)

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
        """What `kubectl get ARGS -o yaml` prints, or None where kubectl fails; read in-process where the
        arguments allow, since tests poll with it (a kubectl process costs ~70x the CPU of the request)."""
        request = parse_get(args)
        if request is not None:
            if self._reader is None:
                _, context = config.list_kube_config_contexts(str(self.kubeconfig))
                self._reader = ObjectReader(self.api(), context["context"].get("namespace", "default"))
            try:
                return self._reader.get(request)
            except LookupError:
                pass  # a resource type discovery does not list: kubectl says what is wrong
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
        stop_local(cluster, runner)
        raise
    return cluster, runner


def stop_tree(process: psutil.Process, timeout: float = 20) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after `timeout`; the descendants it leaves behind are killed too and returned."""
    descendants = process.children(recursive=True)
    with contextlib.suppress(psutil.NoSuchProcess):
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait()
    survivors = [p for p in psutil.wait_procs(descendants, timeout=10)[1] if not _ended(p)]
    for survivor in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    return survivors


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited, and only waits to be reaped by whoever inherited it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop_local(cluster: Cluster, runner: subprocess.Popen) -> list[psutil.Process]:
    """Stops the pod runner, then the control plane. Returns the processes of the runner's containers that
    outlived it (killed here): a pod's processes should end with the node that runs them."""
    survivors = stop_tree(psutil.Process(runner.pid)) if runner.poll() is None else []
    runner.wait()
    cluster.local.stop()
    return survivors


def existing(kubeconfig: str) -> Cluster:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RuntimeError("FLOE_TEST_KUBECONFIG is set but kubectl is not on PATH")
    return Cluster(Path(kubeconfig), kubectl)


def install_operator_rbac(cluster: Cluster, workdir: Path, files: Path = CHART_FILES) -> Path:
    """The operator's namespace, ServiceAccount, least-privilege ClusterRole, the role Projects bind it to in
    their namespaces, the role each FineTuneJob binds its trainer to, its admission guards and the tenancy and
    persona policies (the chart's own `files`, or an older checkout's for a benchmark's baseline); returns a
    kubeconfig that authenticates as that ServiceAccount."""
    rules = yaml.safe_load((files / "operator-clusterrole.yaml").read_text())["rules"]
    # Named apart from the chart's own objects, so a test that installs the chart leaves these alone.
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": TEST_ROLE}, "rules": rules}
    guards: list[dict] = []
    for policy in yaml.safe_load_all((files / "operator-guard.yaml").read_text()):
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
        # a checkout from before trainer-role.yaml gave each trainer a Role of its own
        *(yaml.safe_load(role.read_text())
          for role in (files / "operator-project-role.yaml", files / "trainer-role.yaml") if role.exists()),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": TEST_ROLE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TEST_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}]},
        *guards,
    )
    if result.returncode:
        raise RuntimeError(f"installing the operator's RBAC and policies failed: {result.stderr}")
    install_personas(cluster, files)
    cluster.kubectl("apply", "-f", str(files / "tenancy.yaml"), check=True)
    return cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, workdir / "operator.kubeconfig")


def install_personas(cluster: Cluster, files: Path = CHART_FILES) -> None:
    """The persona ClusterRoles and the approval policy, as the chart ships them."""
    cluster.kubectl("apply", "-f", str(files / "personas.yaml"), check=True)


def install_crds(cluster: Cluster) -> None:
    crds = REPO / "helm/floe/crds"  # a kustomization: -k applies the CRDs it lists
    cluster.kubectl("apply", "--server-side", "-k", str(crds), check=True)
    for crd in sorted(p.name.removesuffix(".yaml") for p in crds.glob("*.floe.dev.yaml")):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s", check=True)
        # Established comes before the schema reaches the OpenAPI documents that kubectl explain reads.
        plural = crd.split(".", 1)[0]
        wait_until(lambda p=plural: cluster.kubectl("explain", p).returncode == 0, 60, f"{crd} in OpenAPI")


class OperatorProcess:
    """`python -m floe_operator` as a subprocess, under the operator's own ServiceAccount."""

    _runs = itertools.count(1)

    def __init__(self, kubeconfig: Path, logdir: Path, env: dict[str, str] | None = None, detached: bool = False):
        """detached: in a session of its own, so that it outlives the caller (a kept development cluster)."""
        self.kubeconfig, self.logdir, self.extra_env, self.detached = kubeconfig, logdir, env or {}, detached
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
                                     env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=self.detached)
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


def start_dev(workdir: Path) -> tuple[Cluster, subprocess.Popen, OperatorProcess]:
    """The local control plane and pod runner with floe installed as the tests install it (CRDs, RBAC,
    policies, personas) and the operator running under its own ServiceAccount."""
    refuse_if_kept(workdir)
    cluster, runner = start_local(workdir / "plane")
    try:
        install_crds(cluster)
        operator = OperatorProcess(install_operator_rbac(cluster, workdir), cluster.local.logs, detached=True).start()
    except BaseException:
        stop_local(cluster, runner)
        raise
    return cluster, runner, operator


def stop_dev(cluster: Cluster, runner: subprocess.Popen, operator: OperatorProcess) -> None:
    operator.stop()
    stop_local(cluster, runner)
    shutil.rmtree(cluster.runner_state, ignore_errors=True)


def keep(cluster: Cluster, runner: subprocess.Popen, operator: OperatorProcess, workdir: Path) -> None:
    """Leaves the cluster running after this process exits and records what `make dev-down` stops, in
    the order it stops them; prints how to use it and how to stop it."""
    processes = {"operator": operator.proc, "pod runner": runner, **dict(reversed(cluster.local.procs.items()))}
    (workdir / KEPT).write_text(json.dumps({
        "runnerState": str(cluster.runner_state),
        "processes": [{"name": name, "pid": proc.pid, "started": psutil.Process(proc.pid).create_time()}
                      for name, proc in processes.items()],
    }, indent=2))
    tools = f"{Path(cluster.kubectl_bin).parent}:{Path(sys.executable).parent}"
    print(f"""
The cluster keeps running: control plane, pod runner and the floe operator (logs in {cluster.local.logs}).
Use it from the repository root (kubectl and floe on PATH):

    export KUBECONFIG={cluster.kubeconfig} PATH={tools}:$PATH

Stop it with:  make dev-down""", flush=True)


def _kept_processes(workdir: Path) -> tuple[dict, list[tuple[str, psutil.Process]]]:
    """The recorded state and those of its processes still running (a pid reused since is not ours)."""
    state = json.loads((workdir / KEPT).read_text())
    running = []
    for entry in state["processes"]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(entry["pid"])
            if process.create_time() == entry["started"]:
                running.append((entry["name"], process))
    return state, running


def refuse_if_kept(workdir: Path) -> None:
    """A kept cluster owns its workdir: starting another one there would delete its files under it."""
    if (workdir / KEPT).exists() and _kept_processes(workdir)[1]:
        raise SystemExit(f"a development cluster is running in {workdir}: stop it first with `make dev-down`")


def stop_kept(workdir: Path) -> None:
    """Stops what keep() recorded: the operator, the pod runner with every process of its containers,
    then the control plane; removes the runner's state."""
    if not (workdir / KEPT).exists():
        print(f"no development cluster is kept in {workdir}")
        return
    state, running = _kept_processes(workdir)
    for name, process in running:
        survivors = stop_tree(process)
        print(f"stopped {name}" + (f" (killed {len(survivors)} leftover processes)" if survivors else ""))
    shutil.rmtree(state["runnerState"], ignore_errors=True)
    (workdir / KEPT).unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description="the kept development cluster (make dev-cluster, make dev-down)")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--workdir", type=Path, default=DEV_WORKDIR)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.action == "down":
        stop_kept(workdir)
        return
    print("Starting a local control plane, a pod runner and the floe operator", flush=True)
    keep(*start_dev(workdir), workdir)


if __name__ == "__main__":
    main()
