"""SnowflakeDeployment -> gates (model, quality, approval), deploy ConfigMap and Job, drop Job, predict Job;
Job -> status.

In local mode (Snowpark's emulator) the deployer keeps the "account" (its stage and functions) in
LOCAL_ACCOUNT_DIR on the claim that holds the model, so the function outlives the deploy pod: the deploy
and drop Jobs mount that claim read-write there, and a predict Job (`floe predict`) reads it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from floe_contract import API_VERSION
from floe_contract.deployment import FunctionTarget
from floe_contract.paths import (
    CACHE_DIR,
    CONFIG_DIR,
    DEPLOY_CONFIG_FILE,
    MODEL_MOUNT,
    SNOWFLAKE_DIR,
    TERMINATION_LOG,
)

from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders.common import (
    APP_NAME_LABEL,
    EXIT_BAD_CONFIG,
    EXIT_WOULD_FAIL_AGAIN,
    metadata,
    owner_reference,
    pod_failure_policy,
    restricted_container_security,
    restricted_pod_security,
    unschedulable,
)
from floe_operator.conditions import condition, merge_conditions, status_conditions

KIND = "SnowflakeDeployment"
DEPLOYMENT_LABEL = "floe.dev/snowflakedeployment"
DEPLOY_APP = "floe-deploy"  # the APP_NAME_LABEL of deploy and drop Jobs and pods
REVISION_ANNOTATION = "floe.dev/deploy-revision"
CONFIG_VERSION = "v1"

MODELS_VOLUME = "model"  # the claim the model is on; in local mode it holds the local account too
ACCOUNT_MOUNT = "/var/run/floe/models-volume"  # that claim again, read-write, for the local account
LOCAL_ACCOUNT_DIR = ".floe-local-account"
DEPLOY_CONTAINER = "deploy"
DEPLOY_BACKOFF_LIMIT = 2
DEPLOY_DEADLINE_SECONDS = 3600
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"  # set by the Job controller on its pods
PREDICT_LABEL = "floe.dev/predict"  # on predict Jobs: the SnowflakeDeployment whose function they call
PREDICT_DEADLINE_SECONDS = 600
PREDICT_TTL_SECONDS = 600  # a finished predict Job (and its log) stays this long for the CLI to read
PREDICT_MAX_BYTES = 100_000  # the rows travel as one argument of the pod's command; Linux takes 128 KiB

MODEL_READY, QUALITY_PASSED, APPROVED = "ModelReady", "QualityPassed", "Approved"
DEPLOYED, VERIFIED = "Deployed", "Verified"
# What the deployer may name as the reason it failed (its outcome's "reason"); anything else is DeployFailed.
DEPLOY_FAILURE_REASONS = ("DeployFailed", "TooSlowForBatchLimit", "UnresolvablePackage", "ImplausibleOutput")


class InvalidDeployment(ValueError):
    """The spec (or the model it points to) cannot be deployed; the message names the field."""


# --- the model: where it is, and the gates in front of it ---------------------------------------------


@dataclass(frozen=True)
class ModelLocation:
    """A trained model directory on a PersistentVolumeClaim, and what identifies its content."""

    claim_name: str
    path: str
    identity: str

    @property
    def model_dir(self) -> str:
        return f"{MODEL_MOUNT}/{self.path}".rstrip("/")


def parse_model_uri(uri: str, field_name: str) -> tuple[str, str]:
    """pvc://claim/path -> (claim, path). The deploy pod reads the model from a volume, nothing else."""
    scheme, sep, rest = uri.partition("://")
    if scheme != "pvc" or not sep:
        raise InvalidDeployment(
            f"{field_name}: {uri!r} is not a pvc://<claim>/<path> URI (the deploy Job reads the model from a "
            "PersistentVolumeClaim)"
        )
    claim, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not claim or any(p in (".", "..") for p in parts):
        raise InvalidDeployment(f"{field_name}: {uri!r} needs a claim name and a path without '.' or '..'")
    return claim, "/".join(parts)


@dataclass(frozen=True)
class Gates:
    """The three gates' conditions, the blocking verdict (phase, reason, message) if any, and the model."""

    conditions: list[dict[str, Any]]
    blocked: tuple[str, str, str] | None
    model: ModelLocation | None = None


def _gate(type_: str, passed: bool | str, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return condition(type_, passed, reason, message, generation)


@dataclass(frozen=True)
class _ModelVerdict:
    ready: bool
    reason: str
    message: str
    blocked_phase: str | None = None  # None when the model is ready
    model: ModelLocation | None = None
    metrics: dict[str, Any] | None = None


def _model_verdict(spec: SnowflakeDeploymentSpec, ftj: dict[str, Any] | None) -> _ModelVerdict:
    source = spec.source
    if source.model_uri is not None:
        claim, path = parse_model_uri(source.model_uri, "spec.source.modelUri")
        model = ModelLocation(claim, path, f"uri:{source.model_uri}")
        return _ModelVerdict(True, "ModelUri", f"model at {source.model_uri}", model=model)
    job_name = source.fine_tune_job_ref.name
    if ftj is None:
        return _ModelVerdict(False, "Waiting", f"FineTuneJob {job_name} does not exist (yet)", "WaitingForModel")
    status = ftj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        message = f"FineTuneJob {job_name} failed: {status.get('message') or 'no details'}"
        return _ModelVerdict(False, "Failed", message, "Failed")
    if phase != "Succeeded":
        detail = f": {status['message']}" if status.get("message") else ""
        message = f"waiting for FineTuneJob {job_name} to succeed (it is {phase}{detail})"
        return _ModelVerdict(False, "Waiting", message, "WaitingForModel")
    uri = status.get("modelUri") or ""
    if not uri.startswith("pvc://"):
        message = (
            f"FineTuneJob {job_name} kept its model in an emptyDir ({uri or 'no modelUri'}), which is gone with its "
            "pod: set its spec.storage.claimName to deploy what it trains"
        )
        return _ModelVerdict(False, "NotOnVolume", message, "Failed")
    claim, path = parse_model_uri(uri, f"FineTuneJob {job_name} status.modelUri")
    model = ModelLocation(claim, path, f"ftj:{ftj['metadata'].get('uid')}:{status.get('modelDigest') or ''}")
    message = f"FineTuneJob {job_name} succeeded; model at {uri}"
    return _ModelVerdict(True, "Succeeded", message, model=model, metrics=status.get("metrics") or {})


def _quality_gate(
    spec: SnowflakeDeploymentSpec, model_ready: bool, metrics: dict[str, Any], generation: int | None
) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
    minimum = spec.quality_gate.min_rouge_l
    if minimum is None:
        return _gate(QUALITY_PASSED, True, "NoGate", "no quality gate is set", generation), None
    if spec.source.model_uri is not None:
        message = "spec.qualityGate.minRougeL needs evaluation metrics, which only a fineTuneJobRef source has"
        return _gate(QUALITY_PASSED, False, "NoMetrics", message, generation), ("Failed", "NoMetrics", message)
    if not model_ready:
        return _gate(QUALITY_PASSED, "Unknown", "WaitingForModel", "the model is not ready", generation), None
    measured = metrics.get("rougeL")
    if not isinstance(measured, int | float) or isinstance(measured, bool):
        message = "the FineTuneJob reported no rougeL (is its spec.evaluation.rouge off?); minRougeL cannot be checked"
        return _gate(QUALITY_PASSED, False, "NoMetrics", message, generation), ("Failed", "NoMetrics", message)
    if measured < minimum:
        message = f"rougeL {measured:.4f} < minRougeL {minimum}"
        blocked = ("Failed", "QualityGateFailed", message)
        return _gate(QUALITY_PASSED, False, "BelowMinimum", message, generation), blocked
    message = f"rougeL {measured:.4f} >= minRougeL {minimum}"
    return _gate(QUALITY_PASSED, True, "RougeAboveMinimum", message, generation), None


def approval_target(spec: SnowflakeDeploymentSpec) -> str:
    """The function an approval names: DATABASE.SCHEMA.FUNCTION as the spec writes them."""
    target = spec.snowflake
    return f"{target.database}.{target.schema_}.{target.function_name}"


def _approval_gate(
    spec: SnowflakeDeploymentSpec, model_digest: str | None, generation: int | None
) -> tuple[dict[str, Any], tuple | None]:
    """An approval counts for the model and function it names, nothing else (``model_digest``: the
    FineTuneJob's, once known; a modelUri's is checked by the deployer against the files)."""
    approval = spec.approval
    if not approval.approved:
        message = "waiting for a governance officer to approve (floe approve)"
        return _gate(APPROVED, False, "WaitingForApproval", message, generation), (
            "WaitingForApproval",
            "WaitingForApproval",
            message,
        )
    stale = None
    if approval.target != approval_target(spec):
        stale = f"the approval is for function {approval.target}, not {approval_target(spec)}"
    elif model_digest is not None and approval.model_digest != model_digest:
        stale = f"the approval is for model {approval.model_digest}, and the model now is {model_digest}"
    if stale:
        message = f"{stale}: a governance officer must approve again"
        return _gate(APPROVED, False, "ApprovalStale", message, generation), ("WaitingForApproval", "ApprovalStale",
                                                                              message)
    message = f"{approval.model_digest} approved for {approval.target} by {approval.approved_by}"
    return _gate(APPROVED, True, "Approved", message, generation), None


def evaluate_gates(spec: SnowflakeDeploymentSpec, ftj: dict[str, Any] | None, generation: int | None) -> Gates:
    """ModelReady, QualityPassed and Approved, and the first gate that blocks (in that order)."""
    try:
        verdict = _model_verdict(spec, ftj)
    except InvalidDeployment as error:
        verdict = _ModelVerdict(False, "InvalidModelUri", str(error), "Failed")
    model_cond = _gate(MODEL_READY, verdict.ready, verdict.reason, verdict.message, generation)
    model_block = (verdict.blocked_phase, verdict.reason, verdict.message) if verdict.blocked_phase else None
    quality_cond, quality_block = _quality_gate(spec, verdict.ready, verdict.metrics or {}, generation)
    digest = ((ftj or {}).get("status") or {}).get("modelDigest") if verdict.ready and ftj else None
    approval_cond, approval_block = _approval_gate(spec, digest, generation)
    blocked = model_block or quality_block or approval_block
    return Gates([model_cond, quality_cond, approval_cond], blocked, None if blocked else verdict.model)


# --- the deploy and drop Jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployTarget:
    """Who the objects are for and what the spec alone does not say."""

    namespace: str
    name: str
    uid: str
    image: str
    connection_secret: str | None = None
    image_pull_policy: str = "IfNotPresent"

    @property
    def owner_id(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}"

    @property
    def local(self) -> bool:
        """No connection Secret: the deployer uses the emulator (floe_trainer.snowflake_session)."""
        return self.connection_secret is None

    @property
    def deploy_name(self) -> str:
        return f"{self.name}-deploy"

    @property
    def drop_name(self) -> str:
        return f"{self.name}-drop"

    @property
    def labels(self) -> dict[str, str]:
        return {DEPLOYMENT_LABEL: self.name, APP_NAME_LABEL: DEPLOY_APP}

    def meta(self, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta = metadata(name, owner_reference(API_VERSION, KIND, self.name, self.uid), self.labels, self.namespace)
        if annotations:
            meta["annotations"] = annotations
        return meta


def deploy_config(
    spec: SnowflakeDeploymentSpec, model_dir: str, owner: str, previous_function: str | None = None, local: bool = False
) -> dict[str, Any]:
    """The deployer's deploy.json (floe_trainer.deploy.DeployConfig, version v1): spec.snowflake's target (the
    contract's FunctionTarget) as it is, plus what this deploy needs. ``owner``
    (namespace/name/uid) goes into the function's comment, and a function of another owner is never
    replaced or dropped; ``previous_function``, deployed before under another name, is dropped once the new
    one is verified; ``local``: the emulator, whose account is kept on the models volume."""
    target = spec.snowflake.model_dump(mode="json", by_alias=True, include=set(FunctionTarget.model_fields))
    local_state = {"localStateDir": f"{ACCOUNT_MOUNT}/{LOCAL_ACCOUNT_DIR}"} if local else {}
    return {
        **local_state,
        "owner": owner,
        "previousFunction": previous_function,
        "approvedModelDigest": spec.approval.model_digest,
        "version": CONFIG_VERSION,
        "modelDir": model_dir,
        **target,
        "sampleRows": spec.sample_rows,
        "connectionDir": SNOWFLAKE_DIR,
    }


def revision(config: dict[str, Any], model: ModelLocation, target: DeployTarget) -> str:
    """What a deploy Job does, as a short digest: a new model or a changed config means a new Job."""
    # Which old name to drop is bookkeeping of the last deploy, not a reason for another one.
    deploys = {key: value for key, value in config.items() if key != "previousFunction"}
    identity = json.dumps(
        {"config": deploys, "model": model.identity, "secret": target.connection_secret, "image": target.image},
        sort_keys=True,
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def config_map(target: DeployTarget, name: str, config: dict[str, Any], rev: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": target.meta(name, {REVISION_ANNOTATION: rev}),
        "data": {DEPLOY_CONFIG_FILE: json.dumps(config, indent=2)},
    }


def _pod_spec(
    target: DeployTarget,
    config_name: str,
    args: list[str],
    model: ModelLocation | None,
    account_claim: str | None = None,
    account_read_only: bool = False,
) -> dict:
    """The deployer's pod: ``model`` read-only at MODEL_MOUNT; ``account_claim`` (the claim the model is on)
    at ACCOUNT_MOUNT, for the local account."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_name}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    claim = model.claim_name if model is not None else account_claim
    if claim is not None:
        read_only = account_claim is None or account_read_only
        volumes.append({"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
    if model is not None:
        mounts.append({"name": MODELS_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True})
    if account_claim is not None:
        mounts.append({"name": MODELS_VOLUME, "mountPath": ACCOUNT_MOUNT, "readOnly": account_read_only})
    if target.connection_secret is not None:
        volumes.append({"name": "snowflake", "secret": {"secretName": target.connection_secret, "defaultMode": 0o440}})
        mounts.append({"name": "snowflake", "mountPath": SNOWFLAKE_DIR, "readOnly": True})
    container = {
        "name": DEPLOY_CONTAINER,
        "image": target.image,
        "imagePullPolicy": target.image_pull_policy,
        "command": ["floe-deploy", "--config", f"{CONFIG_DIR}/{DEPLOY_CONFIG_FILE}", *args],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
            {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
            # The model comes from the volume; nothing is fetched from a hub.
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": mounts,
        "securityContext": restricted_container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the deployer talks to Snowflake, never to Kubernetes
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(),  # uid/gid 1000, as the trainer that wrote the model
        "containers": [container],
        "volumes": volumes,
    }


def _job(target: DeployTarget, name: str, pod_spec: dict[str, Any], rev: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": target.meta(name, {REVISION_ANNOTATION: rev}),
        "spec": {
            "backoffLimit": DEPLOY_BACKOFF_LIMIT,
            "podFailurePolicy": pod_failure_policy(DEPLOY_CONTAINER, (EXIT_BAD_CONFIG, EXIT_WOULD_FAIL_AGAIN)),
            "activeDeadlineSeconds": DEPLOY_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": target.labels}, "spec": pod_spec},
        },
    }


def previous_function(spec: SnowflakeDeploymentSpec, deployed: str | None) -> str | None:
    """The function deployed before (status.functionName, "DB"."SCHEMA"."NAME") when the spec now names
    another one, unquoted as the deploy config takes it."""
    if not deployed:
        return None
    unquoted = deployed.replace('"', "")
    return None if unquoted.upper() == approval_target(spec).upper() else unquoted


def deploy_objects(
    target: DeployTarget, spec: SnowflakeDeploymentSpec, model: ModelLocation, deployed: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(revision, [ConfigMap, Job]) that deploy ``model`` as the spec says (``deployed``: status.functionName)."""
    config = deploy_config(spec, model.model_dir, target.owner_id, previous_function(spec, deployed), target.local)
    rev = revision(config, model, target)
    account = model.claim_name if target.local else None
    pod_spec = _pod_spec(target, target.deploy_name, [], model, account)
    return rev, [config_map(target, target.deploy_name, config, rev), _job(target, target.deploy_name, pod_spec, rev)]


def drop_objects(
    target: DeployTarget, spec: SnowflakeDeploymentSpec, deployed: str | None = None, account_claim: str | None = None
) -> list[dict[str, Any]]:
    """[ConfigMap, Job] that drop the function, and the one deployed before under another name (``deployed``:
    status.functionName), if this deployment owns them; the model is not needed for that, but in local mode
    the claim that holds the local account is (``account_claim``: models_claim of the deploy Job)."""
    config = deploy_config(spec, MODEL_MOUNT, target.owner_id, previous_function(spec, deployed), target.local)
    rev = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    pod_spec = _pod_spec(target, target.drop_name, ["--drop"], None, account_claim)
    return [config_map(target, target.drop_name, config, rev), _job(target, target.drop_name, pod_spec, rev)]


def models_claim(deploy_job: dict[str, Any] | None) -> str | None:
    """The claim a deploy Job reads the model from (in local mode, where the local account is)."""
    volumes = (((deploy_job or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("volumes") or ()
    for volume in volumes:
        if volume.get("name") == MODELS_VOLUME and volume.get("persistentVolumeClaim"):
            return volume["persistentVolumeClaim"]["claimName"]
    return None


class NotPredictable(ValueError):
    """floe cannot call this deployment's function; the message says why and what to do instead."""


def predict_argument(texts: list[str]) -> str:
    """The rows as `floe-deploy --predict` takes them: one JSON list."""
    argument = json.dumps(texts)
    if len(argument.encode()) > PREDICT_MAX_BYTES:
        raise NotPredictable(
            f"the rows take {len(argument.encode())} bytes as JSON; one call takes at most {PREDICT_MAX_BYTES}: "
            "split them"
        )
    return argument


def predict_job(deploy_job: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """A Job that calls the function a local-mode deploy Job deployed on ``texts`` (`floe-deploy
    --predict`, which calls it as verification does), with the deploy Job's image and config and the local
    account read-only; the summaries are the last line of its log. Owned by the SnowflakeDeployment (not as
    its controller), removed PREDICT_TTL_SECONDS after it ends."""
    meta = deploy_job["metadata"]
    name = meta["labels"][DEPLOYMENT_LABEL]
    template = deploy_job["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in template["volumes"]}
    if "snowflake" in volumes:
        raise NotPredictable(
            f"SnowflakeDeployment {name} deploys to a Snowflake account: call its function there, where your "
            "Snowflake role's grants apply (floe's deploy connection is not lent out)"
        )
    container = template["containers"][0]
    claim = models_claim(deploy_job)
    if claim is None or all(m["mountPath"] != ACCOUNT_MOUNT for m in container.get("volumeMounts") or ()):
        raise NotPredictable(
            f"SnowflakeDeployment {name} was deployed by an older floe that kept no local account: deploy it again"
        )
    owner = next(ref for ref in meta["ownerReferences"] if ref["kind"] == KIND)
    target = DeployTarget(meta["namespace"], name, owner["uid"], container["image"], None,
                          container.get("imagePullPolicy", "IfNotPresent"))
    config_name = volumes["config"]["configMap"]["name"]
    args = ["--predict", predict_argument(texts)]
    pod_spec = _pod_spec(target, config_name, args, None, claim, account_read_only=True)
    labels = {PREDICT_LABEL: name, APP_NAME_LABEL: "floe-predict"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": f"{name}-predict-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": owner["uid"]}],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": PREDICT_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": PREDICT_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


# --- status: what the deploy Job says ----------------------------------------------------------------


def deploy_job_summary(job_obj: dict[str, Any]) -> dict[str, Any]:
    """The part of a deploy or drop Job that ``observe`` and the reconciler read (kept in the operator's index)."""
    meta = job_obj["metadata"]
    revision_ = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
    return {
        "metadata": {"name": meta["name"], "uid": meta.get("uid"), "annotations": {REVISION_ANNOTATION: revision_}},
        "status": {"conditions": (job_obj.get("status") or {}).get("conditions") or []},
    }


def deploy_pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a deploy or drop pod that ``observe`` reads (kept in the operator's index): whether it can be
    scheduled, and the deployer's outcome once it has ended."""
    meta, status = pod["metadata"], pod.get("status") or {}
    ended = [
        {"name": DEPLOY_CONTAINER, "state": {"terminated": (s.get("state") or {})["terminated"]}}
        for s in status.get("containerStatuses") or ()
        if s.get("name") == DEPLOY_CONTAINER and (s.get("state") or {}).get("terminated")
    ]
    return {
        "metadata": {"name": meta["name"], "labels": {JOB_UID_LABEL: (meta.get("labels") or {}).get(JOB_UID_LABEL)}},
        "status": {"conditions": status.get("conditions") or [], "containerStatuses": ended},
    }


def deployer_started(job_obj: dict[str, Any] | None) -> bool:
    """Whether a pod of this deploy Job ever ran the deployer (one is running, or one has ended); a Job whose
    pods never started has changed nothing in any account."""
    counts = (job_obj or {}).get("status") or {}
    return any(counts.get(key) for key in ("ready", "succeeded", "failed"))


def job_finished(job_obj: dict[str, Any]) -> str | None:
    """'Complete', 'Failed' or None while the Job runs."""
    for cond in job_obj.get("status", {}).get("conditions") or ():
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None


def deploy_report(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The deployer's outcome from the latest finished pod: its JSON, or {"message": <raw text>}."""
    finished = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or ():
            state = (status.get("state") or {}).get("terminated")
            if status.get("name") == DEPLOY_CONTAINER and state:
                finished.append(state)
    if not finished:
        return None
    state = max(finished, key=lambda s: s.get("finishedAt") or "")
    raw = (state.get("message") or "").strip()
    try:
        report = json.loads(raw)
    except json.JSONDecodeError:
        report = None
    if isinstance(report, dict):
        return report
    return {"message": raw or f"the deployer exited with code {state.get('exitCode')} ({state.get('reason')})"}


def observe(
    gates: Gates,
    job_obj: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    rev: str | None,
    status: dict[str, Any],
    generation: int | None,
    now: str | None = None,
) -> dict[str, Any]:
    """The SnowflakeDeployment status patch that follows from its gates and its deploy Job."""
    patch: dict[str, Any] = {"observedGeneration": generation}
    updates = list(gates.conditions)
    if gates.blocked is not None:
        phase, reason, message = gates.blocked
    elif job_obj is None or job_obj["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) != rev:
        phase, reason, message = "Deploying", "Creating", "creating the deploy Job"
        updates.append(condition(DEPLOYED, False, "Deploying", message, generation))
    else:
        outcome = job_finished(job_obj)
        report = deploy_report(pods) if outcome else None
        if outcome == "Complete" and report and report.get("outcome") in ("Deployed", "Unchanged"):
            patch["functionName"] = report.get("functionName")
            patch["modelDigest"] = report.get("modelDigest")
            patch["verifiedSample"] = report.get("verifiedSample") or []
            if report["outcome"] == "Deployed":  # measured when registering; an unchanged function keeps its own
                patch["perRowLatencyMs"] = report.get("perRowLatencyMs")
                patch["maxBatchSize"] = report.get("maxBatchSize")
            phase, reason = "Deployed", "Verified"
            rows = len(patch["verifiedSample"])
            message = f"{patch['functionName']} verified on {rows} row{'s' if rows != 1 else ''}"
            deployed_message = str(report.get("message") or report["outcome"])
            updates += [
                condition(DEPLOYED, True, report["outcome"], deployed_message, generation),
                condition(VERIFIED, True, "Verified", message, generation),
            ]
        elif outcome is not None:
            phase = "Failed"
            reason = (report or {}).get("reason")
            reason = reason if reason in DEPLOY_FAILURE_REASONS else "DeployFailed"
            message = str((report or {}).get("message") or "the deploy Job failed")[-2048:]
            updates += [
                condition(DEPLOYED, False, reason, message, generation),
                condition(VERIFIED, False, reason, message, generation),
            ]
        else:
            phase, reason = "Deploying", "Deploying"
            message = f"the deploy Job {job_obj['metadata']['name']} is running"
            if unplaced := unschedulable(pods):  # no node can take its pod: it would wait for good
                reason, message = "Unschedulable", unplaced
            updates.append(condition(DEPLOYED, False, reason, message, generation))
    updates += status_conditions(
        phase, phase == "Deployed", reason, message, generation, paused=phase == "WaitingForApproval"
    )
    patch["phase"] = phase
    patch["message"] = message
    patch["conditions"] = merge_conditions(status.get("conditions"), updates, now)
    return patch


def connection_secret(spec: SnowflakeDeploymentSpec, project: dict[str, Any] | None) -> str | None:
    """The connection Secret: the deployment's own, else the project's. Local mode needs none; with the mode
    unset, a Secret found is mounted and decides (a Project's account is never silently replaced by the
    emulator), and none means local."""
    target = spec.snowflake
    if target.mode == "local":
        return None
    if target.connection_secret_ref is not None:
        return target.connection_secret_ref.name
    ref = ((project or {}).get("spec", {}).get("snowflake") or {}).get("connectionSecretRef")
    if ref:
        return ref["name"]
    if target.mode is None:
        return None
    raise InvalidDeployment(
        "spec.snowflake.connectionSecretRef is unset and the Project has no spec.snowflake.connectionSecretRef "
        "(mode account needs a connection Secret)"
    )
