"""floe's client: the Kubernetes calls behind `import floe` in a notebook and behind the `floe` CLI.

In a Workspace it acts as the notebook's own identity (its ServiceAccount holds the Project's data-scientist
permissions); elsewhere as the kubeconfig's user. Every object it writes is built from the same typed models
as the CRDs, so a spec the API server would refuse is refused here first, naming the field.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from floe_contract.paths import SERVICE_ACCOUNT_NAMESPACE
from floe_operator import API_VERSION, GROUP, VERSION
from floe_operator.api import KINDS
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders.snowflakedeployment import (
    DEPLOY_CONTAINER,
    JOB_UID_LABEL,
    PREDICT_DEADLINE_SECONDS,
    NotPredictable,
    approval_target,
    job_finished,
    predict_argument,
    predict_job,
)

from floe.history import TrainingHistory, loss_figure, parse_training_log
from floe.progress import TERMINAL_PHASES, format_progress, ready_message

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SCOPES = {kind.plural: kind.scope for kind in KINDS}


class FloeError(Exception):
    """What floe cannot do, and why."""


class JobFailed(FloeError):
    """A FineTuneJob ended in Failed; ``status`` is its final status."""

    def __init__(self, name: str, status: dict):
        self.status = status
        super().__init__(f"{name} failed: {ready_message(status)}")


class NoTrainerPods(FloeError):
    """The FineTuneJob has no trainer pods whose logs could be read (not started yet, or collected)."""


def model_to_approve(sfd: dict, ftj: dict | None, digest: str | None) -> str:
    """The digest an approval binds to: ``digest``, else the FineTuneJob's model once it has succeeded."""
    if digest:
        return digest
    ref = (sfd["spec"].get("source") or {}).get("fineTuneJobRef")
    if not ref:
        raise FloeError("the deployment's source is a modelUri: pass --digest sha256:<hex> of the model you approve")
    status = (ftj or {}).get("status") or {}
    if status.get("phase") != "Succeeded" or not status.get("modelDigest"):
        raise FloeError(f"FineTuneJob {ref['name']} has no trained model yet (phase {status.get('phase')}): "
                        "there is nothing to approve")
    return status["modelDigest"]


def approval_patch(approved_by: str, model_digest: str, target: str, comment: str | None = None) -> dict:
    """Merge patch that approves one model for one function of a SnowflakeDeployment."""
    approval: dict[str, Any] = {"approved": True, "approvedBy": approved_by, "modelDigest": model_digest,
                                "target": target}
    if comment:
        approval["comment"] = comment
    return {"spec": {"approval": approval}}


def predict_outcome(log_lines: Iterable[str]) -> dict | None:
    """The deployer's outcome: the last line of its log that is a JSON object with an outcome."""
    for line in reversed(list(log_lines)):
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict) and "outcome" in found:
            return found
    return None


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


class Client:
    """floe's resources in one namespace.

    ``Client()`` in a Workspace talks to the cluster as the notebook (in-cluster config, the pod's namespace);
    elsewhere it reads the kubeconfig ($KUBECONFIG or ~/.kube/config, or ``kubeconfig``) and its ``context``.
    ``namespace`` overrides the default; ``as_user`` and ``as_group`` impersonate, like kubectl --as/--as-group.
    """

    def __init__(self, namespace: str | None = None, *, kubeconfig: str | None = None, context: str | None = None,
                 as_user: str | None = None, as_group: str | None = None):
        from kubernetes import client, config  # here, so `import floe` stays fast

        configuration = client.Configuration()
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except config.ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config(client_configuration=configuration)  # re-reads the rotated token
            default_namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        else:
            if context:
                active = next((c for c in contexts if c["name"] == context), None)
                if active is None:
                    raise FloeError(f"context {context!r} is not in the kubeconfig")
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
            default_namespace = active.get("context", {}).get("namespace") or "default"
        self.api = client.ApiClient(configuration)
        if as_user:  # the API server checks that the caller may impersonate
            self.api.set_default_header("Impersonate-User", as_user)
            if as_group:
                self.api.set_default_header("Impersonate-Group", as_group)
        self.namespace = namespace or default_namespace
        self._objects = client.CustomObjectsApi(self.api)
        self._core = client.CoreV1Api(self.api)
        self._batch = client.BatchV1Api(self.api)

    def __repr__(self) -> str:
        return f"floe.Client(namespace={self.namespace!r})"

    # ---- floe objects ---------------------------------------------------------------------------

    def get(self, plural: str, name: str) -> dict:
        """A floe object: ``plural`` is its resource (finetunejobs, snowflakedeployments, workspaces, projects)."""
        if _SCOPES[plural] == "Cluster":
            return self._objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
        return self._objects.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def list(self, plural: str, all_namespaces: bool = False) -> list[dict]:
        """The floe objects of one resource in this namespace (every namespace, or cluster-scoped ones: all)."""
        if all_namespaces or _SCOPES[plural] == "Cluster":
            return self._objects.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        return self._objects.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)["items"]

    def whoami(self) -> str:
        """The user name the API server knows this client by."""
        from kubernetes import client

        review = client.AuthenticationV1Api(self.api).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        )
        return review.status.user_info.username

    # ---- FineTuneJobs ---------------------------------------------------------------------------

    def submit(self, name: str, spec: FineTuneJobSpec | dict) -> dict:
        """Creates FineTuneJob ``name`` (server-side apply: submitting the same spec again changes nothing).
        ``spec`` is a FineTuneJobSpec or its camelCase dict, checked against the model before it is sent."""
        model = spec if isinstance(spec, FineTuneJobSpec) else FineTuneJobSpec.model_validate(spec)
        body = {"apiVersion": API_VERSION, "kind": "FineTuneJob",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": model.to_k8s()}
        return self._objects.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "finetunejobs", name, body,
            field_manager="floe", _content_type="application/apply-patch+yaml")

    def status(self, name: str) -> dict:
        """FineTuneJob ``name``'s status: phase, progress, metrics, conditions, modelUri ..."""
        return self.get("finetunejobs", name).get("status") or {}

    def metrics(self, name: str) -> dict:
        """The final metrics of FineTuneJob ``name`` (loss, ROUGE ...), empty until it has succeeded."""
        return self.status(name).get("metrics") or {}

    def follow(self, name: str, timeout: float | None = None) -> Iterator[dict]:
        """FineTuneJob ``name``'s status now and after each change, until it has ended."""
        from kubernetes import watch

        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get("finetunejobs", name)
        while True:
            status = job.get("status") or {}
            yield status
            if status.get("phase") in TERMINAL_PHASES:
                return
            left = 60.0 if deadline is None else min(60.0, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"ftj/{name} did not end within {timeout} s")
            stream = watch.Watch().stream(
                self._objects.list_namespaced_custom_object, GROUP, VERSION, self.namespace, "finetunejobs",
                field_selector=f"metadata.name={name}", resource_version=job["metadata"]["resourceVersion"],
                timeout_seconds=max(1, int(left)))
            for event in stream:
                if event["type"] == "DELETED":
                    raise FloeError(f"ftj/{name} was deleted")
                job = event["object"]
                stream.close()
                break
            else:  # the watch timed out quietly: read afresh (also recovers from an expired resourceVersion)
                job = self.get("finetunejobs", name)

    def wait(self, name: str, *, timeout: float | None = None, progress: bool = True, width: int = 30,
             out: TextIO | None = None) -> dict:
        """Waits for FineTuneJob ``name`` to end, showing one progress line (updated in place in a notebook
        or a terminal). Returns the final status; raises JobFailed with the reason when the job failed."""
        out = out or sys.stdout
        in_place = out.isatty() or "ipykernel" in sys.modules
        shown = ""
        status: dict = {}
        for status in self.follow(name, timeout):
            line = format_progress(status, width)
            if progress and line != shown:
                out.write("\r" + line.ljust(len(shown)) if in_place else line + "\n")
                out.flush()
                shown = line
        if progress and in_place:
            out.write("\n")
        if status.get("phase") == "Failed":
            raise JobFailed(name, status)
        return status

    def trainer_pods(self, name: str) -> list[str]:
        """The names of FineTuneJob ``name``'s trainer pods, worker 0 (the one that reports) first."""
        job_name = self.status(name).get("jobName")
        if not job_name:
            return []
        pods = self._core.list_namespaced_pod(self.namespace, label_selector=f"job-name={job_name}").items
        pods.sort(key=lambda p: (p.metadata.labels.get("batch.kubernetes.io/job-completion-index", "0"),
                                 p.metadata.creation_timestamp))
        return [pod.metadata.name for pod in pods]

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None,
             all_workers: bool = False) -> Iterator[str]:
        """The trainer's log lines (worker 0's; every worker's, each line prefixed with its pod, with
        ``all_workers``); ``follow`` streams new lines until the pod ends."""
        pods = self.trainer_pods(name)
        if not pods:
            raise NoTrainerPods(f"ftj/{name} has no trainer pods (yet, or any more)")
        chosen = pods if all_workers else pods[:1]
        for pod in chosen:
            prefix = f"[{pod}] " if len(chosen) > 1 else ""
            for line in self._pod_log(pod, follow=follow, tail=tail):
                yield prefix + line

    def history(self, name: str) -> TrainingHistory:
        """Loss by step and each evaluation, from the trainer's log."""
        return parse_training_log(self.logs(name))

    def plot(self, name: str) -> Figure:
        """The loss curve (and ROUGE-L) of FineTuneJob ``name``: a matplotlib Figure, shown inline in a notebook."""
        return loss_figure(self.history(name), f"{self.namespace}/{name}")

    def _pod_log(self, pod: str, *, follow: bool = False, tail: int | None = None,
                 container: str | None = None) -> Iterator[str]:
        if follow:
            response = self._core.read_namespaced_pod_log(pod, self.namespace, follow=True, tail_lines=tail,
                                                          container=container, _preload_content=False)
            for chunk in response.stream():
                yield from chunk.decode(errors="replace").splitlines()
            return
        yield from self._core.read_namespaced_pod_log(pod, self.namespace, tail_lines=tail,
                                                      container=container).splitlines()

    # ---- SnowflakeDeployments -------------------------------------------------------------------

    def approve(self, deployment: str, *, digest: str | None = None, comment: str | None = None) -> dict:
        """Approves SnowflakeDeployment ``deployment`` as this client's user (a governance officer): the model
        ``digest`` (default: its FineTuneJob's) for the function it names. Returns the approval written."""
        approver = self.whoami()
        sfd = self.get("snowflakedeployments", deployment)
        ref = (sfd["spec"].get("source") or {}).get("fineTuneJobRef")
        ftj = self.get("finetunejobs", ref["name"]) if ref and not digest else None
        target = approval_target(SnowflakeDeploymentSpec.model_validate(sfd["spec"]))
        patch = approval_patch(approver, model_to_approve(sfd, ftj, digest), target, comment)
        self._objects.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "snowflakedeployments",
                                                     deployment, patch, _content_type="application/merge-patch+json")
        return patch["spec"]["approval"]

    def predict(self, deployment: str, data: Any, *, column: str = "text",
                timeout: float = PREDICT_DEADLINE_SECONDS) -> Any:
        """Calls the function SnowflakeDeployment ``deployment`` deployed (local mode) on rows of text, the way
        its verification called it, in a predict Job. ``data``: a list of texts (returns their summaries, in
        order) or a pandas DataFrame whose ``column`` holds them (returns a copy with a ``summary`` column)."""
        texts = [str(text) for text in (data[column] if _is_dataframe(data) else data)]
        if not texts:
            raise FloeError("nothing to predict: no rows")
        summaries = [row["summary"] for row in self._predict(deployment, texts, timeout)]
        if not _is_dataframe(data):
            return summaries
        result = data.copy()
        result["summary"] = summaries
        return result

    def _predict(self, deployment: str, texts: list[str], timeout: float) -> list[dict]:
        try:
            predict_argument(texts)
        except NotPredictable as err:
            raise FloeError(str(err)) from None
        sfd = self.get("snowflakedeployments", deployment)
        status = sfd.get("status") or {}
        if status.get("phase") != "Deployed":
            raise FloeError(f"sfd/{deployment} is {status.get('phase') or 'Pending'}, not Deployed: nothing to call")
        deploy_job = self._batch.read_namespaced_job(f"{deployment}-deploy", self.namespace)
        try:
            job = predict_job(self.api.sanitize_for_serialization(deploy_job), texts)
        except NotPredictable as err:
            raise FloeError(str(err)) from None
        name = self._batch.create_namespaced_job(self.namespace, job).metadata.name
        print(f"job/{name} calls {status.get('functionName')} on {len(texts)} row(s)", file=sys.stderr)
        finished = self._wait_for_job(name, timeout)
        if finished is None:
            raise FloeError(f"job/{name} did not finish within {timeout} s")
        pods = self._core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_UID_LABEL}={finished['metadata']['uid']}").items
        lines = [line for pod in pods for line in self._pod_log(pod.metadata.name, container=DEPLOY_CONTAINER)]
        outcome = predict_outcome(lines)
        if not outcome or outcome.get("outcome") != "Predicted":
            raise FloeError((outcome or {}).get("message") or f"job/{name} failed without an outcome in its log")
        return outcome["rows"]

    def _wait_for_job(self, name: str, timeout: float) -> dict | None:
        """The Job once it has finished (Complete or Failed), None after ``timeout`` seconds."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout
        while (left := int(deadline - time.monotonic())) > 0:
            stream = watch.Watch().stream(self._batch.list_namespaced_job, self.namespace,
                                          field_selector=f"metadata.name={name}", timeout_seconds=min(left, 60))
            for event in stream:
                job = self.api.sanitize_for_serialization(event["object"])
                if job_finished(job):
                    stream.close()
                    return job
        return None
