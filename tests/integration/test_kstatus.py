"""What GitOps appliers see: the kstatus verdict (sigs.k8s.io/cli-utils `status.Compute`, which Flux, kpt and
cli-utils wait on) of floe objects as the real control plane holds them, and the README's `kubectl wait`
commands, which must return when a job fails instead of waiting out their timeout."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from hack import kstatus

API = "floe.dev/v1alpha1"
README = Path(__file__).resolve().parents[2] / "README.md"
# kwok's chaos and delay stages read these from the pod (see dev/build.sh).
KWOK_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
KWOK_FAIL_MESSAGE = "pod-container-running-failed.stage.kwok.x-k8s.io/message"
KWOK_COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
KWOK_COMPLETE_JITTER = "pod-complete.stage.kwok.x-k8s.io/jitter-delay"
FAILING = {"labels": {KWOK_FAIL_LABEL: "true"}, "annotations": {KWOK_FAIL_MESSAGE: "CUDA out of memory"}}
# kwok waits the jitter delay (5s by default) when it is not longer than the delay, so both are set.
LONG_RUNNING = {"annotations": {KWOK_COMPLETE_DELAY: "600s", KWOK_COMPLETE_JITTER: "600s"}}


def finetunejob(name: str, namespace: str, **spec) -> dict:
    base = {
        "model": {"scratch": {"shape": "tiny"}},
        "dataset": {"file": {"path": "/data/news.csv"}},
        "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
        "backoffLimit": 0,
    }
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {**base, **spec}}


def deployment(name: str, namespace: str, source: dict) -> dict:
    target = {"mode": "local", "database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": name.upper()}
    return {"apiVersion": API, "kind": "SnowflakeDeployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"source": source, "snowflake": target}}


def workspace(name: str, namespace: str, **spec) -> dict:
    # The gpu profile would place the pod on a simulated GPU node; without a volume for its home it stays Pending.
    return {"apiVersion": API, "kind": "Workspace", "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": "snowflake", "computeProfile": "gpu", **spec}}


def phase_of(cluster, kind: str, name: str, namespace: str | None = None) -> str | None:
    args = [kind, name] + (["-n", namespace] if namespace else [])
    return ((cluster.get(*args) or {}).get("status") or {}).get("phase")


def settled(cluster, kind: str, name: str, namespace: str | None, phase: str, reason: str | None = None) -> dict:
    """The object once it is in `phase` (with Ready's `reason`), as the API server returns it."""

    def current():
        args = [kind, name] + (["-n", namespace] if namespace else [])
        obj = cluster.get(*args) or {}
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
        return obj if status.get("phase") == phase and reason in (None, ready.get("reason")) else None

    return cluster.wait_for(current, 120, f"{kind} {name} {phase}")


def conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


@pytest.fixture(scope="module")
def project(cluster, floe_operator):
    name = f"kstatus-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": name},
                   "spec": {"quota": {"gpus": 16, "cpu": "64", "memory": "256Gi"}}}).check_returncode()
    cluster.wait_for(lambda: phase_of(cluster, "project", name) == "Ready", 90, f"Project {name} Ready")
    yield name
    cluster.kubectl("delete", "project", name, "--wait=false")


@pytest.fixture(scope="module")
def finetunejobs(cluster, project):
    """One FineTuneJob in each state an applier waits through: succeeded, running, failed, suspended."""
    cluster.apply(
        finetunejob("done", project),
        finetunejob("training", project, podMetadata=LONG_RUNNING),
        finetunejob("broken", project, podMetadata=FAILING),
        finetunejob("paused", project, suspend=True),
    ).check_returncode()
    return {
        "done": settled(cluster, "ftj", "done", project, "Succeeded"),
        "training": settled(cluster, "ftj", "training", project, "Running"),
        "broken": settled(cluster, "ftj", "broken", project, "Failed"),
        "paused": settled(cluster, "ftj", "paused", project, "Suspended"),
    }


def test_finetunejob_verdicts(finetunejobs):
    done, training, broken, paused = kstatus.compute(*finetunejobs.values())
    assert done["status"] == "Current"
    assert training["status"] == "InProgress" and conditions(finetunejobs["training"])["Reconciling"] == "True"
    assert broken["status"] == "Failed" and "CUDA out of memory" in broken["message"]
    # Suspended is neither done nor failed; nothing is reconciling it either.
    assert paused == {"status": "InProgress", "message": "the job is suspended"}
    assert conditions(finetunejobs["paused"])["Reconciling"] == "False"


def test_snowflakedeployment_verdicts(cluster, project, finetunejobs):
    cluster.apply(
        deployment("waiting", project, {"fineTuneJobRef": {"name": "training"}}),
        deployment("doomed", project, {"fineTuneJobRef": {"name": "broken"}}),
        deployment("unapproved", project, {"modelUri": "pvc://models/summarizer"}),
    ).check_returncode()
    waiting = settled(cluster, "sfd", "waiting", project, "WaitingForModel")
    doomed = settled(cluster, "sfd", "doomed", project, "Failed")
    unapproved = settled(cluster, "sfd", "unapproved", project, "WaitingForApproval")
    waiting_verdict, doomed_verdict, unapproved_verdict = kstatus.compute(waiting, doomed, unapproved)
    assert waiting_verdict["status"] == "InProgress" and conditions(waiting)["Reconciling"] == "True"
    assert doomed_verdict["status"] == "Failed"
    assert doomed_verdict["message"].startswith("FineTuneJob broken failed: ")
    # Waiting for a governance officer: not done, but nothing the operator is working on.
    assert unapproved_verdict["status"] == "InProgress" and conditions(unapproved)["Reconciling"] == "False"


def test_workspace_verdicts(cluster, project):
    cluster.apply(
        workspace("homeless", project),
        workspace("idle", project, stopped=True),
        workspace("unknown", project, template="tensorflow"),
    ).check_returncode()
    pending = settled(cluster, "ws", "homeless", project, "Pending")
    stopped = settled(cluster, "ws", "idle", project, "Stopped", reason="Stopped")
    failed = settled(cluster, "ws", "unknown", project, "Failed")
    pending_verdict, stopped_verdict, failed_verdict = kstatus.compute(pending, stopped, failed)
    assert pending_verdict["status"] == "InProgress" and conditions(pending)["Reconciling"] == "True"
    assert stopped_verdict["status"] == "Current"
    assert failed_verdict["status"] == "Failed" and "spec.template" in failed_verdict["message"]


def test_project_verdicts(cluster, project):
    taken = f"kstatus-taken-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": taken}}).check_returncode()
    try:
        cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": taken}}).check_returncode()
        refused = settled(cluster, "project", taken, None, "Failed", reason="NamespaceNotAdoptable")
        ready, refused_verdict = kstatus.compute(cluster.get("project", project), refused)
        assert ready["status"] == "Current"
        assert refused_verdict["status"] == "Failed" and f"namespace {taken} exists" in refused_verdict["message"]
    finally:
        cluster.kubectl("delete", "project", taken, "--wait=false")
        cluster.kubectl("delete", "namespace", taken, "--wait=false")


def readme_wait_commands() -> list[list[str]]:
    """The `kubectl wait` lines of the README's usage section, as arguments."""
    usage = README.read_text().split("## Using floe", 1)[1].split("\n## ", 1)[0]
    lines = [line.split(" #", 1)[0] for line in usage.splitlines() if re.match(r"kubectl .* wait ftj/", line)]
    assert len(lines) == 2, lines
    return [shlex.split(line) for line in lines]


@pytest.mark.parametrize(("pod_metadata", "succeeds"), [({}, True), (FAILING, False)], ids=["succeeds", "fails"])
def test_the_readmes_kubectl_wait_returns_when_the_job_ends(cluster, project, pod_metadata, succeeds):
    name = f"waited-{'ok' if succeeds else 'failing'}"
    cluster.apply(finetunejob(name, project, podMetadata=pod_metadata)).check_returncode()
    wait_done, check_ready = readme_wait_commands()
    results = []
    for args in (wait_done, check_ready):
        # An hour's timeout shortened: returning 0 within two minutes is the point.
        args = [a.replace("ftj/t5-news", f"ftj/{name}").replace("--timeout=1h", "--timeout=120s") for a in args[1:]]
        args[args.index("-n") + 1] = project
        results.append(subprocess.run([cluster.kubectl_bin, f"--kubeconfig={cluster.kubeconfig}", *args],
                                      capture_output=True, text=True, timeout=150))
    waited, ready = results
    # The first returns as soon as the job ends either way (its one-hour timeout would fail it otherwise) ...
    assert waited.returncode == 0, waited.stderr
    assert phase_of(cluster, "ftj", name, project) == ("Succeeded" if succeeds else "Failed")
    # ... and the second says which way.
    assert (ready.returncode == 0) is succeeds, ready.stderr


def test_events_come_from_the_floe_operator(cluster, project, finetunejobs):
    events = cluster.get("events", "-n", project, "--field-selector", "involvedObject.name=done")["items"]
    assert events
    for event in events:
        assert event["source"]["component"] == event["reportingComponent"] == "floe-operator"
        assert event["metadata"]["name"].startswith("floe-event-")


def test_kubectl_get_floe_shows_one_namespace_column_ready_and_the_progress_unit(cluster, project, finetunejobs):
    cluster.apply(workspace("listed", project, stopped=True)).check_returncode()  # a row for every kind
    tables = cluster.kubectl("get", "floe", "-A", check=True).stdout
    headers = [line.split() for line in tables.splitlines() if line.startswith("NAMESPACE") or line.startswith("NAME")]
    assert headers and all(header.count("NAMESPACE") <= 1 for header in headers), tables
    for kind, column in (("projects", "TARGET-NS"), ("workspaces", "READY"), ("finetunejobs", "PROGRESS%")):
        header = cluster.kubectl("get", kind, "-A", check=True).stdout.splitlines()[0].split()
        assert column in header, header
