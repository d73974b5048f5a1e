"""High availability on a real control plane: two operator replicas under the operator's ServiceAccount elect a
leader on a Lease; killing the leader mid-pipeline hands over within 15 s, and the job finishes with one Job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from floe_operator.leader import DEFAULT_LEASE_NAME, EXIT_LOST_LEASE
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dev.cluster import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, REPO
from dev.controlplane import free_port, kubectl, wait_until

API = "floe.dev/v1alpha1"
KWOK_COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
HANDOVER_S = 15
# What floe_operator.leader logs while it stands by.
ELECTION = ("leader election on Lease", "standing by:", "acquiring Lease")


class Replica:
    """One operator pod's process: `--leader-elect`, its pod name as the Lease holder identity."""

    def __init__(self, name: str, kubeconfig: Path, logdir: Path):
        self.name, self.log_path = name, logdir / f"operator-ha-{name}.log"
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": name,
               "POD_NAMESPACE": OPERATOR_NAMESPACE, "FLOE_METRICS_PORT": str(self.metrics_port),
               "FLOE_HEALTH_PORT": str(self.health_port)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "floe_operator", "--all-namespaces", "--leader-elect"],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def messages(self) -> list[str]:
        """The message of each JSON log line so far."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line)["message"] for line in lines if line.startswith("{")]

    def answers(self, port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def leases(cluster):
    return client.CoordinationV1Api(cluster.api())


@pytest.fixture(scope="module")
def leader_role(cluster):
    """The chart's leader-election Role, bound to the operator's ServiceAccount in its own namespace."""
    role = yaml.safe_load((REPO / "helm/floe/files/operator-leader-role.yaml").read_text())
    role["metadata"]["namespace"] = OPERATOR_NAMESPACE
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": role["metadata"]["name"], "namespace": OPERATOR_NAMESPACE},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
               "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}]}
    cluster.apply(role, binding).check_returncode()
    yield
    cluster.kubectl("delete", "rolebinding,role", role["metadata"]["name"], "-n", OPERATOR_NAMESPACE)


@pytest.fixture
def replicas(cluster, leader_role, floe_operator, operator_kubeconfig, cluster_workdir):
    """Two replicas and no other operator: the session's is stopped for the test and started again after."""
    floe_operator.stop()
    started: list[Replica] = []
    try:
        started += [Replica(name, operator_kubeconfig, cluster_workdir / "plane" / "logs") for name in ("ha-a", "ha-b")]
        yield {r.name: r for r in started}
    finally:
        for replica in started:
            replica.stop()
        cluster.kubectl("delete", "lease", DEFAULT_LEASE_NAME, "-n", OPERATOR_NAMESPACE, "--ignore-not-found")
        floe_operator.start()


def holder(leases) -> str | None:
    try:
        return leases.read_namespaced_lease(DEFAULT_LEASE_NAME, OPERATOR_NAMESPACE).spec.holder_identity
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def phase(cluster, *args) -> str | None:
    return ((cluster.get(*args) or {}).get("status") or {}).get("phase")


def logged_before_leading(replica: Replica) -> list[str]:
    """What the replica logged before it led, other than the election itself (kopf logs its start-up)."""
    messages = replica.messages()
    led = next(i for i, m in enumerate(messages) if m.startswith("leading:"))
    return [m for m in messages[:led] if not m.startswith(ELECTION)]


def test_killing_the_leader_mid_pipeline_hands_over_without_duplicates(cluster, replicas, leases):
    leader_name = wait_until(lambda: holder(leases), 60, "a replica to hold the Lease")
    leader = replicas[leader_name]
    (standby,) = (r for r in replicas.values() if r is not leader)
    wait_until(lambda: any(m.startswith("standing by:") for m in standby.messages()), 30, "the standby to wait")
    # Its probes pass and Prometheus can scrape it: a standby is a healthy replica, not a down target.
    wait_until(lambda: standby.answers(standby.health_port, "/healthz"), 10, "the standby's /healthz")
    assert standby.answers(standby.metrics_port, "/metrics")

    project = f"ha-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": project},
                   "spec": {"quota": {"gpus": 2, "cpu": "4", "memory": "8Gi"}}}).check_returncode()
    try:
        cluster.wait_for(lambda: phase(cluster, "project", project) == "Ready", 60, f"Project {project} Ready")
        cluster.apply({
            "apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": "t5", "namespace": project},
            "spec": {"model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "/data/news.csv"}},
                     "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
                     # kwok finishes the trainer pod this long after it starts: after the handover.
                     "podMetadata": {"annotations": {KWOK_COMPLETE_DELAY: "10s"}}},
        }).check_returncode()
        cluster.wait_for(lambda: phase(cluster, "ftj", "t5", "-n", project) == "Running", 60, "t5 Running")
        (job,) = cluster.get("jobs", "-n", project, "-l", "floe.dev/finetunejob=t5")["items"]

        killed_at = time.monotonic()
        leader.stop()  # SIGKILL, as when the leader's node dies
        wait_until(lambda: holder(leases) == standby.name, HANDOVER_S + 5, "the standby to take the Lease")
        handover = time.monotonic() - killed_at
        print(f"handover after SIGKILL: {handover:.1f} s")
        assert handover <= HANDOVER_S, f"handover took {handover:.1f} s"

        cluster.wait_for(lambda: phase(cluster, "ftj", "t5", "-n", project) == "Succeeded", 90,
                         "t5 Succeeded under the new leader")
        jobs = cluster.get("jobs", "-n", project, "-l", "floe.dev/finetunejob=t5")["items"]
        assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]], "one trainer Job, no duplicate"
        assert standby.proc.poll() is None
        # While it stood by, the standby ran no kopf: no watch, no handler, no write.
        assert logged_before_leading(standby) == []
    finally:
        cluster.kubectl("delete", "project", project, "--wait=false")


def test_a_leader_that_cannot_renew_exits_before_the_standby_takes_over(replicas, leases):
    leader_name = wait_until(lambda: holder(leases), 60, "a replica to hold the Lease")
    leader = replicas[leader_name]
    (standby,) = (r for r in replicas.values() if r is not leader)
    leader.proc.send_signal(19)  # SIGSTOP: a leader frozen (or cut off) past its renew deadline
    try:
        wait_until(lambda: holder(leases) == standby.name, HANDOVER_S + 5, "the standby to take the Lease")
    finally:
        leader.proc.send_signal(18)  # SIGCONT
    # Thawed, it finds the renew deadline passed and exits at once; its pod's restart makes it a standby.
    assert leader.proc.wait(timeout=10) == EXIT_LOST_LEASE
    assert any(m.startswith("stepping down:") for m in leader.messages())


def lease(namespace: str, name: str, holder: str) -> str:
    return json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": name, "namespace": namespace}, "spec": {"holderIdentity": holder}})


def test_the_operator_may_hold_its_own_lease_and_no_other_components(cluster, leader_role, operator_kubeconfig):
    def as_operator(*args, input=None):
        return kubectl(cluster.kubectl_bin, operator_kubeconfig, *args, input=input)

    # The control plane's own leader elections (kube-scheduler, kube-controller-manager) are out of reach.
    scheduler = as_operator("replace", "-f", "-", input=lease("kube-system", "kube-scheduler", "floe"))
    assert scheduler.returncode != 0 and "forbidden" in scheduler.stderr, scheduler.stderr
    elsewhere = as_operator("create", "-f", "-", input=lease("default", DEFAULT_LEASE_NAME, "floe"))
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr, elsewhere.stderr
    # In its own namespace: its Lease only; create cannot be limited to a name, reading and renewing can.
    other = f"other-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "-f", "-", input=lease(OPERATOR_NAMESPACE, other, "someone"), check=True)
    try:
        assert as_operator("get", "lease", other, "-n", OPERATOR_NAMESPACE).returncode != 0
        taken = as_operator("replace", "-f", "-", input=lease(OPERATOR_NAMESPACE, other, "floe"))
        assert taken.returncode != 0 and "forbidden" in taken.stderr, taken.stderr
    finally:
        cluster.kubectl("delete", "lease", other, "-n", OPERATOR_NAMESPACE)
