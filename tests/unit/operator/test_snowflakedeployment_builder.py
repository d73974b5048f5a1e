"""SnowflakeDeployment builders: gates, the deploy and drop objects, and the status derived from the deploy Job."""

import json

import pytest
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders import snowflakedeployment as b
from floe_operator.builders.common import APP_NAME_LABEL
from floe_operator.handlers.startup import WATCHED_APPS
from floe_trainer import deploy as deployer
from floe_trainer.deploy import DeployConfig
from pydantic import ValidationError

UID = "5fd-uid"
FTJ_UID = "ftj-uid"
DIGEST = "sha256:" + "a" * 64
APPROVED = {"approved": True, "approvedBy": "gwen", "modelDigest": DIGEST, "target": "ML.PUBLIC.SUMMARIZE"}


def target(**kw):
    return b.DeployTarget(namespace="team-a", name="news", uid=UID, image="registry/floe-trainer:1", **kw)


def spec(**overrides):
    base = {
        "source": {"fineTuneJobRef": {"name": "t5-news"}},
        "snowflake": {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"},
        "approval": APPROVED,
    }
    return SnowflakeDeploymentSpec.model_validate({**base, **overrides})


def ftj(phase="Succeeded", uri="pvc://models/t5-news/model", metrics=None, digest=DIGEST, message=None):
    status = {"phase": phase, "modelUri": uri, "modelDigest": digest, "metrics": metrics or {"rougeL": 0.312}}
    if message:
        status["message"] = message
    return {"metadata": {"name": "t5-news", "uid": FTJ_UID}, "status": status}


def conditions(gates):
    return {c["type"]: (c["status"], c["reason"]) for c in gates.conditions}


# --- gates ------------------------------------------------------------------------------------------


def test_all_gates_pass_for_a_succeeded_job_on_a_volume():
    gates = b.evaluate_gates(spec(qualityGate={"minRougeL": 0.3}), ftj(), 4)
    assert gates.blocked is None
    assert conditions(gates) == {
        "ModelReady": ("True", "Succeeded"),
        "QualityPassed": ("True", "RougeAboveMinimum"),
        "Approved": ("True", "Approved"),
    }
    assert all(c["observedGeneration"] == 4 for c in gates.conditions)
    assert gates.model == b.ModelLocation("models", "t5-news/model", f"ftj:{FTJ_UID}:{DIGEST}")
    assert gates.model.model_dir == "/var/run/floe/model/t5-news/model"


@pytest.mark.parametrize(
    ("job", "reason", "words"),
    [
        (None, "Waiting", "FineTuneJob t5-news does not exist"),
        (ftj(phase="Running", message="the trainer is running"), "Waiting", "it is Running: the trainer is running"),
        (ftj(phase="Pending"), "Waiting", "to succeed (it is Pending)"),
    ],
)
def test_model_not_ready_waits_and_says_why(job, reason, words):
    gates = b.evaluate_gates(spec(qualityGate={"minRougeL": 0.3}), job, 1)
    phase, blocked_reason, message = gates.blocked
    assert (phase, blocked_reason) == ("WaitingForModel", reason) and words in message
    assert conditions(gates)["ModelReady"] == ("False", reason)
    assert conditions(gates)["QualityPassed"] == ("Unknown", "WaitingForModel")
    assert gates.model is None


def test_a_failed_job_fails_the_deployment_with_its_error():
    gates = b.evaluate_gates(spec(), ftj(phase="Failed", message="CUDA out of memory"), 1)
    assert gates.blocked[0] == "Failed"
    assert "FineTuneJob t5-news failed: CUDA out of memory" in gates.blocked[2]


def test_a_model_in_an_emptydir_cannot_be_deployed():
    gates = b.evaluate_gates(spec(), ftj(uri="file:///var/run/floe/output/model"), 1)
    assert gates.blocked[:2] == ("Failed", "NotOnVolume")
    assert "spec.storage.claimName" in gates.blocked[2]


def test_quality_gate_compares_the_trainers_percent_with_the_fraction():
    gates = b.evaluate_gates(spec(qualityGate={"minRougeL": 0.35}), ftj(metrics={"rougeL": 0.312}), 2)
    assert gates.blocked == ("Failed", "QualityGateFailed", "rougeL 0.3120 < minRougeL 0.35")
    assert conditions(gates)["QualityPassed"] == ("False", "BelowMinimum")
    assert b.evaluate_gates(spec(qualityGate={"minRougeL": 0.312}), ftj(metrics={"rougeL": 0.312}), 2).blocked is None


def test_quality_gate_without_metrics_fails_clearly():
    gates = b.evaluate_gates(spec(qualityGate={"minRougeL": 0.1}), ftj(metrics={"evalLoss": 2.0}), 1)
    assert gates.blocked[:2] == ("Failed", "NoMetrics") and "rougeL" in gates.blocked[2]
    uri_gates = b.evaluate_gates(spec(source={"modelUri": "pvc://models/m"}, qualityGate={"minRougeL": 0.1}), None, 1)
    assert uri_gates.blocked[:2] == ("Failed", "NoMetrics")


def test_no_quality_gate_passes():
    assert conditions(b.evaluate_gates(spec(), ftj(), 1))["QualityPassed"] == ("True", "NoGate")


@pytest.mark.parametrize(
    ("approval", "job_digest", "words"),
    [
        ({**APPROVED, "modelDigest": "sha256:" + "b" * 64}, DIGEST, "the approval is for model sha256:bbb"),
        ({**APPROVED, "target": "ML.PUBLIC.OTHER"}, DIGEST, "the approval is for function ML.PUBLIC.OTHER"),
    ],
    ids=["another-model", "another-function"],
)
def test_an_approval_counts_only_for_the_model_and_function_it_names(approval, job_digest, words):
    gates = b.evaluate_gates(spec(approval=approval), ftj(digest=job_digest), 1)
    assert gates.blocked[:2] == ("WaitingForApproval", "ApprovalStale") and words in gates.blocked[2]
    assert conditions(gates)["Approved"] == ("False", "ApprovalStale")
    assert gates.model is None


def test_deploy_config_binds_the_deployer_to_the_approved_model_and_the_owner():
    _, (config_map, _) = b.deploy_objects(target(), spec(), b.ModelLocation("models", "x/model", "ftj:x"))
    config = json.loads(config_map["data"]["deploy.json"])
    assert (config["approvedModelDigest"], config["owner"]) == (DIGEST, f"team-a/news/{UID}")
    assert config["previousFunction"] is None


def test_a_renamed_function_drops_the_old_one_without_a_second_deploy():
    model = b.ModelLocation("models", "x/model", "ftj:x")
    rev, (config_map, _) = b.deploy_objects(target(), spec(), model, '"ML"."PUBLIC"."OLD"')
    assert json.loads(config_map["data"]["deploy.json"])["previousFunction"] == "ML.PUBLIC.OLD"
    # Once the new name is deployed, nothing is left to drop, and that alone is no reason to deploy again.
    assert b.deploy_objects(target(), spec(), model, '"ML"."PUBLIC"."SUMMARIZE"')[0] == rev


def test_unapproved_waits_for_approval_after_the_other_gates():
    gates = b.evaluate_gates(spec(approval={}), ftj(), 1)
    assert gates.blocked[:2] == ("WaitingForApproval", "WaitingForApproval")
    assert conditions(gates)["Approved"] == ("False", "WaitingForApproval")
    assert gates.model is None
    # a model that is not ready is reported first
    assert b.evaluate_gates(spec(approval={}), None, 1).blocked[0] == "WaitingForModel"


def test_model_uri_source_needs_a_claim():
    gates = b.evaluate_gates(spec(source={"modelUri": "pvc://models/runs/7/model"}), None, 1)
    assert gates.blocked is None and gates.model.model_dir == "/var/run/floe/model/runs/7/model"
    for bad in ("s3://bucket/model", "pvc://models/../etc", "pvc:///model"):
        gates = b.evaluate_gates(spec(source={"modelUri": bad}), None, 1)
        assert gates.blocked[:2] == ("Failed", "InvalidModelUri") and "spec.source.modelUri" in gates.blocked[2]


# --- objects ----------------------------------------------------------------------------------------


def deploy(spec_=None, **kw):
    model = b.ModelLocation("models", "t5-news/model", "ftj:x:sha256:abc")
    return b.deploy_objects(target(**kw), spec_ or spec(), model)


def test_deploy_config_is_valid_for_the_deployer():
    _, (config_map, _) = deploy()
    config = json.loads(config_map["data"]["deploy.json"])
    parsed = DeployConfig.model_validate(config)  # extra keys forbidden: the contract holds both ways
    assert parsed.function.qualified == '"ML"."PUBLIC"."SUMMARIZE"'
    assert str(parsed.model_dir) == "/var/run/floe/model/t5-news/model"
    assert parsed.mode is None and parsed.sample_rows == 3  # the deployer decides from the Secret


def test_the_deployers_names_for_config_fields_are_the_specs():
    """A config the deployer refuses is reported naming the SnowflakeDeployment's field: each rendered field
    that comes from the spec is named by its spec path, which exists, and only the operator's own are not."""
    from floe_trainer.field_errors import DEPLOY_FIELDS, field_name

    local = spec(snowflake={"mode": "local", "database": "ML", "schema": "PUBLIC", "stage": "MODELS",
                            "functionName": "SUMMARIZE"})
    config = b.deploy_config(local, "/var/run/floe/model/x", f"team-a/news/{UID}", "ML.PUBLIC.OLD", local=True)
    dumped = {"spec": local.model_dump(mode="json", by_alias=True)}
    operators = set()
    for key in config:
        name = field_name((key,), DEPLOY_FIELDS, "deploy config")
        if name.startswith("spec."):
            node = dumped
            for part in name.split("."):
                assert isinstance(node, dict) and part in node, f"{key} is named {name}, which the spec does not have"
                node = node[part]
        else:
            operators.add(key)
    assert operators == {"version", "modelDir", "owner", "previousFunction", "connectionDir", "localStateDir"}


@pytest.mark.parametrize("rows", [0, 4])
def test_sample_rows_outside_what_the_deployer_verifies_is_refused(rows):
    with pytest.raises(ValidationError, match="sample_rows|sampleRows"):
        spec(sampleRows=rows)


def test_deploy_job_runs_the_deployer_restricted_with_the_model_read_only():
    rev, (config_map, job) = deploy()
    assert job["metadata"]["name"] == config_map["metadata"]["name"] == "news-deploy"
    assert job["metadata"]["annotations"]["floe.dev/deploy-revision"] == rev
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "SnowflakeDeployment" and owner["uid"] == UID and owner["controller"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 1000
    (container,) = pod["containers"]
    assert container["command"] == ["floe-deploy", "--config", "/etc/floe/deploy.json"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m for m in container["volumeMounts"] if m["name"] == "model"]
    assert {"name": "model", "mountPath": "/var/run/floe/model", "readOnly": True} in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "snowflake" not in volumes  # local mode needs no connection
    assert job["metadata"]["labels"]["floe.dev/snowflakedeployment"] == "news"


def test_local_mode_keeps_its_account_on_the_models_claim():
    _, (config_map, job) = deploy()
    pod = job["spec"]["template"]["spec"]
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    # the model stays read-only; the claim's root is mounted again, writable, for the local account
    assert mounts == [
        {"name": "model", "mountPath": "/var/run/floe/model", "readOnly": True},
        {"name": "model", "mountPath": "/var/run/floe/models-volume", "readOnly": False},
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": False}
    config = DeployConfig.model_validate(json.loads(config_map["data"]["deploy.json"]))
    assert str(config.local_state_dir) == "/var/run/floe/models-volume/.floe-local-account"
    assert b.models_claim(job) == "models"


def test_account_mode_keeps_no_local_account_and_the_model_read_only():
    _, (config_map, job) = deploy(connection_secret="sf-conn")
    pod = job["spec"]["template"]["spec"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"] == [
        "/var/run/floe/model"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert "localStateDir" not in json.loads(config_map["data"]["deploy.json"])


def test_account_mode_mounts_the_connection_secret_and_never_its_values():
    account = spec(
        snowflake={"mode": "account", "database": "ML", "schema": "PUBLIC", "stage": "S", "functionName": "F"}
    )
    secret = b.connection_secret(account, {"spec": {"snowflake": {"connectionSecretRef": {"name": "sf-conn"}}}})
    _, (_, job) = deploy(account, connection_secret=secret)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["snowflake"]["secret"]["secretName"] == "sf-conn"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["snowflake"]["mountPath"] == "/var/run/floe/snowflake" and mounts["snowflake"]["readOnly"]
    assert not any("valueFrom" in e for e in pod["containers"][0]["env"])


def test_connection_secret_own_ref_wins_and_missing_one_is_refused():
    own = spec(
        snowflake={
            "mode": "account",
            "database": "D",
            "schema": "S",
            "stage": "T",
            "functionName": "F",
            "connectionSecretRef": {"name": "mine"},
        }
    )
    assert b.connection_secret(own, {"spec": {"snowflake": {"connectionSecretRef": {"name": "theirs"}}}}) == "mine"
    local = spec(snowflake={"mode": "local", "database": "D", "schema": "S", "stage": "T", "functionName": "F"})
    assert b.connection_secret(local, {"spec": {"snowflake": {"connectionSecretRef": {"name": "theirs"}}}}) is None
    bare = spec(snowflake={"mode": "account", "database": "D", "schema": "S", "stage": "T", "functionName": "F"})
    with pytest.raises(b.InvalidDeployment, match="connectionSecretRef"):
        b.connection_secret(bare, {"spec": {}})


def test_revision_changes_with_the_model_and_the_config_but_not_the_review_fields():
    rev, _ = deploy()
    assert deploy(spec(approval={**APPROVED, "approvedBy": "someone else"}))[0] == rev
    assert deploy(spec(qualityGate={"minRougeL": 0.1}))[0] == rev
    assert deploy(spec(sampleRows=2))[0] != rev
    other_model = b.ModelLocation("models", "t5-news/model", "ftj:x:sha256:def")
    assert b.deploy_objects(target(), spec(), other_model)[0] != rev


def test_drop_job_drops_without_the_model():
    config_map, job = b.drop_objects(target(), spec())
    assert job["metadata"]["name"] == config_map["metadata"]["name"] == "news-drop"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["floe-deploy", "--config", "/etc/floe/deploy.json", "--drop"]
    assert "model" not in {v["name"] for v in pod["volumes"]}
    DeployConfig.model_validate(json.loads(config_map["data"]["deploy.json"]))


def test_a_local_drop_job_mounts_the_local_account_and_not_the_model():
    config_map, job = b.drop_objects(target(), spec(), account_claim="models")
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": False}
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mounts == [{"name": "model", "mountPath": "/var/run/floe/models-volume", "readOnly": False}]
    config = DeployConfig.model_validate(json.loads(config_map["data"]["deploy.json"]))
    assert str(config.local_state_dir) == "/var/run/floe/models-volume/.floe-local-account"


def predict_from(deploy_job, texts=("A storm hit the coast.",)):
    return b.predict_job(deploy_job, list(texts))


def test_predict_job_calls_the_function_with_the_local_account_read_only():
    _, (_, deploy_job) = deploy()
    job = predict_from(deploy_job, ["A storm hit the coast.", 'Prices "rose".'])
    meta = job["metadata"]
    assert meta["generateName"] == "news-predict-" and "name" not in meta
    assert meta["labels"]["floe.dev/predict"] == "news" and "floe.dev/snowflakedeployment" not in meta["labels"]
    assert "app.kubernetes.io/managed-by" not in meta["labels"]  # the user's, not the operator's
    (owner,) = meta["ownerReferences"]  # goes with the deployment, which does not control it
    assert owner == {"apiVersion": "floe.dev/v1alpha1", "kind": "SnowflakeDeployment", "name": "news", "uid": UID}
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:4] == ["floe-deploy", "--config", "/etc/floe/deploy.json", "--predict"]
    assert json.loads(command[4]) == ["A storm hit the coast.", 'Prices "rose".'] and "args" not in container
    assert container["image"] == "registry/floe-trainer:1"
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "news-deploy"  # the deployment's own config
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "model"] == [
        "/var/run/floe/models-volume"
    ]
    assert all("secret" not in v and "projected" not in v for v in pod["volumes"])


def test_predict_refuses_an_account_deployment_and_too_many_rows():
    _, (_, account_job) = deploy(connection_secret="sf-conn")
    with pytest.raises(b.NotPredictable, match="deploys to a Snowflake account: call its function there"):
        predict_from(account_job)
    _, (_, deploy_job) = deploy()
    with pytest.raises(b.NotPredictable, match="at most 100000: split them"):
        predict_from(deploy_job, ["x" * 1000] * 100)


# --- status -----------------------------------------------------------------------------------------


def job_obj(rev, condition=None):
    status = {"conditions": [{"type": condition, "status": "True"}]} if condition else {}
    return {"metadata": {"name": "news-deploy", "annotations": {"floe.dev/deploy-revision": rev}}, "status": status}


def pod(message, code=0):
    terminated = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "message": message,
        "finishedAt": "2024-01-01T00:00:00Z",
    }
    return {"status": {"containerStatuses": [{"name": "deploy", "state": {"terminated": terminated}}]}}


def passed():
    return b.evaluate_gates(spec(), ftj(), 3)


def test_a_deploy_pod_no_node_can_take_is_unschedulable():
    pod = {"metadata": {"name": "news-deploy-x1", "labels": {b.JOB_UID_LABEL: "j1", "other": "dropped"}}, "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": '0/3 nodes are available: persistentvolumeclaim "models" not found.'}]}}
    summary = b.deploy_pod_summary(pod)  # what the operator's index keeps
    assert summary["metadata"]["labels"] == {b.JOB_UID_LABEL: "j1"}
    update = b.observe(passed(), job_obj("r1"), [summary], "r1", {}, 3, now="T")
    assert update["phase"] == "Deploying"
    reasons = {c["type"]: c["reason"] for c in update["conditions"]}
    assert reasons["Deployed"] == reasons["Ready"] == "Unschedulable"
    assert update["message"] == (
        'pod news-deploy-x1 cannot be scheduled: 0/3 nodes are available: persistentvolumeclaim "models" not found.'
    )
    scheduled = {**summary, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert b.observe(passed(), job_obj("r1"), [scheduled], "r1", {}, 3, now="T")["message"] == (
        "the deploy Job news-deploy is running"
    )


def test_the_index_keeps_what_a_finished_deploy_reports():
    """A finished deploy Job's status comes from the operator's indexes, without reading its pods again."""
    report = {"outcome": "Deployed", "functionName": "F", "verifiedSample": [{"text": "a", "summary": "b"}]}
    ended = pod(json.dumps(report))
    ended["metadata"] = {"name": "news-deploy-x1", "labels": {b.JOB_UID_LABEL: "j1"}}
    ended["status"]["containerStatuses"].append({"name": "sidecar", "state": {"running": {}}})
    summary = b.deploy_pod_summary(ended)
    assert b.deploy_report([summary]) == b.deploy_report([ended]) == report
    job = {**job_obj("r1", "Complete"), "spec": {"template": {}}}
    job["metadata"] = {**job["metadata"], "uid": "j1", "labels": {"other": "dropped"}}
    kept = b.deploy_job_summary(job)
    assert kept == {"metadata": {"name": "news-deploy", "uid": "j1", "annotations": {b.REVISION_ANNOTATION: "r1"}},
                    "status": job["status"]}
    assert b.observe(passed(), kept, [summary], "r1", {}, 3, now="T") == b.observe(
        passed(), job, [ended], "r1", {}, 3, now="T"
    )


def kinds(update):
    return {c["type"]: c["status"] for c in update["conditions"]}


def test_status_of_a_verified_deploy():
    report = {
        "outcome": "Deployed",
        "functionName": "ML.PUBLIC.SUMMARIZE",
        "modelDigest": "sha256:1",
        "verifiedSample": [{"text": "a", "summary": "b"}],
        "perRowLatencyMs": 412.5,
        "maxBatchSize": 72,
        "message": "verified, then created the function",
    }
    update = b.observe(passed(), job_obj("r1", "Complete"), [pod(json.dumps(report))], "r1", {}, 3, now="T")
    assert update["phase"] == "Deployed" and update["observedGeneration"] == 3
    assert (update["perRowLatencyMs"], update["maxBatchSize"]) == (412.5, 72)
    assert update["functionName"] == "ML.PUBLIC.SUMMARIZE" and update["modelDigest"] == "sha256:1"
    assert update["verifiedSample"] == [{"text": "a", "summary": "b"}]
    assert kinds(update) == {
        "ModelReady": "True",
        "QualityPassed": "True",
        "Approved": "True",
        "Deployed": "True",
        "Verified": "True",
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert update["message"] == "ML.PUBLIC.SUMMARIZE verified on 1 row"


def test_status_of_a_failed_deploy_carries_the_deployers_message():
    report = {"outcome": "Failed", "functionName": "ML.PUBLIC.SUMMARIZE", "message": "modelDir: no config.json"}
    update = b.observe(passed(), job_obj("r1", "Failed"), [pod(json.dumps(report), 1)], "r1", {}, 3)
    assert update["phase"] == "Failed" and update["message"] == "modelDir: no config.json"
    assert kinds(update)["Deployed"] == "False" and kinds(update)["Ready"] == "False"
    stalled = next(c for c in update["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", "DeployFailed", update["message"])
    assert "functionName" not in update
    logs = b.observe(passed(), job_obj("r1", "Failed"), [pod("Traceback: boom", 1)], "r1", {}, 3)
    assert logs["message"] == "Traceback: boom"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("TooSlowForBatchLimit", "TooSlowForBatchLimit"),
        ("UnresolvablePackage", "UnresolvablePackage"),
        ("ImplausibleOutput", "ImplausibleOutput"),
        ("Bad Reason!", "DeployFailed"),
    ],
)
def test_a_failed_deploy_names_the_deployers_reason_if_it_is_one_it_gives(given, expected):
    report = {"outcome": "Failed", "reason": given, "message": "the model takes 40.0 s per row ..."}
    update = b.observe(passed(), job_obj("r1", "Failed"), [pod(json.dumps(report), 1)], "r1", {}, 3)
    found = {c["type"]: (c["status"], c["reason"]) for c in update["conditions"]}
    assert found["Deployed"] == found["Verified"] == ("False", expected)


def test_every_reason_the_deployer_gives_reaches_the_status():
    reasons = {deployer.DeployError.reason} | {error.reason for error in deployer.DeployError.__subclasses__()}
    assert reasons == set(b.DEPLOY_FAILURE_REASONS)


def test_status_while_deploying_or_replacing_keeps_the_previous_function():
    previous = {"phase": "Deployed", "functionName": "ML.PUBLIC.SUMMARIZE"}
    running = b.observe(passed(), job_obj("r2"), [], "r2", previous, 4)
    assert running["phase"] == "Deploying" and "functionName" not in running
    assert kinds(running)["Reconciling"] == "True" and kinds(running)["Stalled"] == "False"
    stale = b.observe(passed(), job_obj("r1", "Complete"), [], "r2", previous, 4)
    assert stale["phase"] == "Deploying" and kinds(stale)["Ready"] == "False"


def test_status_when_blocked_by_a_gate():
    update = b.observe(b.evaluate_gates(spec(approval={}), ftj(), 2), None, [], None, {}, 2)
    assert update["phase"] == "WaitingForApproval"
    # Waiting on a person is not work in progress for the operator, nor a failure.
    assert kinds(update) == {
        "ModelReady": "True",
        "QualityPassed": "True",
        "Approved": "False",
        "Ready": "False",
        "Reconciling": "False",
        "Stalled": "False",
    }


def test_unset_mode_lets_a_found_secret_decide_and_is_local_without_one():
    # A Project connected to an account must not be deployed to the emulator because `mode` was left out.
    unset = spec()
    assert unset.snowflake.mode is None
    assert b.connection_secret(unset, {"spec": {"snowflake": {"connectionSecretRef": {"name": "theirs"}}}}) == "theirs"
    _, (config_map, job) = deploy(unset, connection_secret="theirs")
    assert json.loads(config_map["data"]["deploy.json"])["mode"] is None  # floe-deploy reads the Secret's account
    assert {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]} >= {"snowflake"}
    assert b.connection_secret(unset, {"spec": {}}) is None
    assert b.connection_secret(unset, None) is None


def test_a_config_the_deployer_refuses_or_a_failure_a_retry_repeats_fails_the_deploy_job_at_once(tmp_path,
                                                                                                  monkeypatch):
    _, (_, job) = b.deploy_objects(target(), spec(), b.ModelLocation("models", "x/model", "ftj:x"))
    fail = next(r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    bad = tmp_path / "deploy.json"
    bad.write_text(json.dumps({"version": "v1"}))
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(tmp_path / "termination"))
    refused = deployer.main(["--config", str(bad)])
    assert fail["onExitCodes"]["values"] == [refused, deployer.EXIT_WOULD_FAIL_AGAIN]
    assert deployer.EXIT_FAILED not in fail["onExitCodes"]["values"]  # a connection may recover: retried
    assert fail["onExitCodes"]["containerName"] == "deploy"


def test_the_drop_also_drops_the_function_deployed_before_a_rename():
    config_map, _ = b.drop_objects(target(), spec(), '"ML"."PUBLIC"."OLD"')
    config = json.loads(config_map["data"]["deploy.json"])
    assert (config["previousFunction"], config["owner"]) == ("ML.PUBLIC.OLD", f"team-a/news/{UID}")
    DeployConfig.model_validate(config)  # the deployer accepts it


@pytest.mark.parametrize("job, started", [
    (None, False),
    ({"status": {"active": 1}}, False),  # its pod pending: never placed, or its volume missing
    ({"status": {"active": 1, "ready": 1}}, True),
    ({"status": {"failed": 1}}, True),
    ({"status": {"succeeded": 1}}, True),
])
def test_a_deployer_that_never_started_changed_nothing(job, started):
    assert b.deployer_started(job) is started


def test_the_operators_watches_select_the_deploy_and_drop_jobs_and_their_pods():
    """The API server sends the operator only the pods and Jobs it selects: a deployment outside the selection
    would wait forever."""
    for job in (deploy()[1][1], b.drop_objects(target(), spec())[1]):
        assert job["metadata"]["labels"][APP_NAME_LABEL] in WATCHED_APPS["batch", "v1", "jobs"]
        assert job["spec"]["template"]["metadata"]["labels"][APP_NAME_LABEL] in WATCHED_APPS["", "v1", "pods"]
