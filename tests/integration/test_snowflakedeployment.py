"""SnowflakeDeployment on a real control plane: the gates hold, and an approved model is deployed for real.

A tiny FineTuneJob trains from scratch on the local runner node (a real trainer process on the committed
news sample, its model on a PersistentVolumeClaim); the deploy Job then runs the real deployer there
against Snowpark's local testing emulator.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from floe_operator.builders.finetunejob import TRAINER_CONFIG_ANNOTATION
from floe_trainer.artifacts import content_digest
from floe_trainer.deploy import SAMPLE_ARTICLES
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hack import kstatus

API = "floe.dev/v1alpha1"
SFD = "snowflakedeployments.floe.dev"
NEWS_CSV = Path(__file__).resolve().parents[1] / "data" / "news_summary.csv"
FTJ = "news-tiny"
TRAIN_TIMEOUT = 900  # a shared 2-core machine: torch import, tokenizer, 20 steps, ROUGE on 8 rows
DEPLOY_TIMEOUT = 600


def sfd(name: str, namespace: str, source: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": "SnowflakeDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": source or {"fineTuneJobRef": {"name": FTJ}},
            "snowflake": {
                "mode": "local",
                "database": "ML",
                "schema": "PUBLIC",
                "stage": "MODELS",
                "functionName": "SUMMARIZE",
            },
            **spec,
        },
    }


def pvc(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "storageClassName": "",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def finetunejob(namespace: str, name: str = FTJ) -> dict:
    return {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"scratch": {"shape": "tiny", "vocabSize": 256}},
            "dataset": {"file": {"claimName": "data", "path": "news.csv"}, "maxRows": 200},
            "training": {
                "epochs": 1,
                "batchSize": 8,
                "learningRate": 3e-3,
                "sourceMaxLength": 64,
                "targetMaxLength": 24,
                "maxSteps": 20,
                "precision": "fp32",
                "compile": "off",
            },
            "evaluation": {"rouge": True, "maxSamples": 8, "numBeams": 1, "maxNewTokens": 16},
            "checkpoint": {"everySteps": 1000, "keep": 1},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
            "storage": {"claimName": "models"},
        },
    }


def status(cluster, namespace: str | None, name: str, kind: str = SFD) -> dict:
    args = [kind, name] + (["-n", namespace] if namespace else [])
    return (cluster.get(*args) or {}).get("status") or {}


def conditions(cluster, namespace: str, name: str) -> dict[str, dict]:
    return {c["type"]: c for c in status(cluster, namespace, name).get("conditions") or ()}


def wait_phase(cluster, namespace: str, name: str, phase: str, timeout: float = 90) -> dict:
    def reached():
        current = status(cluster, namespace, name)
        assert current.get("phase") != "Failed" or phase == "Failed", current.get("message")
        return current if current.get("phase") == phase else None

    return cluster.wait_for(reached, timeout, f"SnowflakeDeployment {name} to be {phase}")


def deploy_job(cluster, namespace: str, name: str) -> dict | None:
    return cluster.get("job", f"{name}-deploy", "-n", namespace)


def patch(cluster, namespace: str, name: str, body: dict, user=None, groups=()):
    return cluster.kubectl(
        "patch",
        f"{SFD}/{name}",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(body),
        as_user=user,
        as_groups=groups,
    )


@pytest.fixture(scope="module")
def lab(cluster, floe_operator):
    """A Project whose `data` claim holds the news sample (the pod runner's directory for that claim),
    a `models` claim for the trained model, and an engineer allowed to write SnowflakeDeployments."""
    if cluster.runner_state is None:
        pytest.skip("needs the local pod runner (its claim directories hold the training data)")
    cluster.kubectl(
        "apply", "-f", str(Path(__file__).resolve().parents[2] / "helm/floe/files/personas.yaml"), check=True
    )
    namespace = f"sfd-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Project",
            "metadata": {"name": namespace},
            "spec": {"members": [{"kind": "User", "name": "eli", "persona": "MLEngineer"}]},
        }
    ).check_returncode()
    cluster.wait_for(
        lambda: status(cluster, None, namespace, "project").get("phase") == "Ready", 90, f"Project {namespace} Ready"
    )
    data_dir = cluster.runner_state / "pvcs" / namespace / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(NEWS_CSV, data_dir / "news.csv")
    cluster.apply(pvc("data", namespace), pvc("models", namespace)).check_returncode()
    yield namespace
    cluster.kubectl("delete", "project", namespace, "--wait=false")


@pytest.fixture(scope="module")
def trained(cluster, lab):
    """The FineTuneJob, started once; tests that need its model wait for it to succeed."""
    cluster.apply(finetunejob(lab)).check_returncode()

    def finished():
        current = status(cluster, lab, FTJ, "finetunejobs.floe.dev")
        assert current.get("phase") != "Failed", current.get("message")
        return current.get("phase") == "Succeeded"

    return finished


def test_a_config_the_trainer_refuses_ends_the_job_at_once_naming_the_spec_field(cluster, lab):
    """A trainer image that refuses the config the operator renders (one of another version than the
    operator's) can never succeed: the first pod's exit 2 fails the Job instead of its retries, and the
    FineTuneJob names the field as its spec writes it."""
    job = finetunejob(lab, "skewed")
    job["spec"].update(suspend=True, backoffLimit=3)
    cluster.apply(job).check_returncode()
    rendered = cluster.wait_for(lambda: cluster.get("job", "skewed-train", "-n", lab), 60, "the trainer Job")
    config = json.loads(rendered["spec"]["template"]["metadata"]["annotations"][TRAINER_CONFIG_ANNOTATION])
    config["training"]["batchSize"] = 0  # what admission refuses, so only a trainer of another version sees it
    # A suspended Job that never ran takes new pod annotations.
    cluster.kubectl("patch", "job", "skewed-train", "-n", lab, "--type=merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {TRAINER_CONFIG_ANNOTATION: json.dumps(config)}}}}}),
        check=True)
    cluster.kubectl("patch", "ftj", "skewed", "-n", lab, "--type=merge", "-p", '{"spec":{"suspend":false}}',
                    check=True)

    def failed():
        current = status(cluster, lab, "skewed", "finetunejobs.floe.dev")
        return current if current.get("phase") == "Failed" else None

    current = cluster.wait_for(failed, 300, "FineTuneJob skewed to fail")
    ready = next(c for c in current["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidConfig"
    said = "spec.training.batchSize: must be auto or a number from 1 to 4096"
    assert ready["message"] == f"invalid FineTuneJob spec for this trainer image: {said}", ready["message"]
    trainer_job = cluster.get("job", "skewed-train", "-n", lab)
    verdict = next(c for c in trainer_job["status"]["conditions"] if c["type"] == "Failed")
    assert verdict["reason"] == "PodFailurePolicy" and trainer_job["status"]["failed"] == 1, trainer_job["status"]


def test_waits_for_a_finetunejob_that_does_not_exist(cluster, lab):
    cluster.apply(sfd("orphan", lab, source={"fineTuneJobRef": {"name": "no-such-job"}})).check_returncode()
    wait_phase(cluster, lab, "orphan", "WaitingForModel")
    model = conditions(cluster, lab, "orphan")["ModelReady"]
    assert model["status"] == "False" and model["reason"] == "Waiting"
    assert "FineTuneJob no-such-job does not exist" in model["message"]
    assert deploy_job(cluster, lab, "orphan") is None


def deployment_requests(cluster, verb: str, scope: str) -> int:
    """Requests of SnowflakeDeployments the API server has answered, from any client: ``scope`` namespace for a
    LIST in one namespace (the operator's watch lists them cluster-wide, once), resource for a GET of one."""
    total = 0
    for line in cluster.kubectl("get", "--raw", "/metrics", check=True).stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if (labels["resource"], labels["verb"], labels["scope"]) == ("snowflakedeployments", verb, scope):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_a_finetunejob_event_lists_no_deployments(cluster, lab):
    """The deployments a FineTuneJob's event concerns come from an index, not from a LIST per event."""
    cluster.apply(sfd("follower", lab, source={"fineTuneJobRef": {"name": "held"}})).check_returncode()
    wait_phase(cluster, lab, "follower", "WaitingForModel")
    held = finetunejob(lab, "held")
    held["spec"]["suspend"] = True  # no pods: only the FineTuneJob's own events
    cluster.apply(held).check_returncode()
    cluster.wait_for(
        lambda: "it is Suspended" in status(cluster, lab, "follower").get("message", ""),
        90,
        "the deployment to follow its suspended FineTuneJob",
    )
    # Other clients list SnowflakeDeployments too (the namespace controller, for every namespace it deletes):
    # many FineTuneJob events, each of which would cost a LIST, against a bound far below their number.
    events = 20
    before = deployment_requests(cluster, "LIST", "namespace")
    for n in range(events):
        cluster.kubectl("label", "finetunejob", "held", "-n", lab, f"touch={n}", "--overwrite", check=True)
    cluster.kubectl("delete", "finetunejob", "held", "-n", lab, check=True)
    # the deletion's event comes after the labels' (kopf handles one object's events in order)
    cluster.wait_for(
        lambda: "does not exist" in status(cluster, lab, "follower").get("message", ""),
        90,
        "the deployment to see its FineTuneJob deleted",
    )
    assert deployment_requests(cluster, "LIST", "namespace") - before < events // 2
    cluster.kubectl("delete", SFD, "follower", "-n", lab, check=True)


def test_a_resync_reads_nothing_from_the_api_server(cluster, lab):
    """A deployment re-synced on its FineTuneJob's events is read from the operator's index, as is the
    FineTuneJob: its status follows with no GET of it, however many events there are."""
    cluster.apply(sfd("reader", lab, source={"fineTuneJobRef": {"name": "later"}})).check_returncode()
    wait_phase(cluster, lab, "reader", "WaitingForModel")
    before = deployment_requests(cluster, "GET", "resource")
    later = finetunejob(lab, "later")
    later["spec"]["suspend"] = True  # no pods: the FineTuneJob's own events (its creation, its status)
    cluster.kubectl("create", "-f", "-", input=json.dumps(later), check=True)  # create, unlike apply, GETs nothing

    def following() -> bool:
        # Watched through a LIST of all namespaces: a GET of the deployment would count.
        listed = json.loads(cluster.kubectl("get", SFD, "-A", "-o", "json", check=True).stdout)["items"]
        reader = next(i for i in listed if (i["metadata"]["namespace"], i["metadata"]["name"]) == (lab, "reader"))
        return "it is Suspended" in (reader.get("status") or {}).get("message", "")

    cluster.wait_for(following, 90, "the deployment to follow its suspended FineTuneJob")
    assert deployment_requests(cluster, "GET", "resource") == before
    cluster.kubectl("delete", "finetunejob", "later", "-n", lab, check=True)
    cluster.kubectl("delete", SFD, "reader", "-n", lab, check=True)


def approval(user: str, digest: str, function: str = "SUMMARIZE") -> dict:
    """What `floe approve` writes: the approver, the model and the function approved."""
    return {"approved": True, "approvedBy": user, "modelDigest": digest, "target": f"ML.PUBLIC.{function}"}


def trained_digest(cluster, lab) -> str:
    return status(cluster, lab, FTJ, "finetunejobs.floe.dev")["modelDigest"]


def test_waits_while_the_finetunejob_trains(cluster, lab, trained):
    cluster.apply(sfd("news", lab)).check_returncode()
    placeholder = approval(cluster.username(), "sha256:" + "0" * 64)
    strict = sfd("strict", lab, qualityGate={"minRougeL": 0.99}, approval=placeholder)
    cluster.apply(strict).check_returncode()
    current = wait_phase(cluster, lab, "news", "WaitingForModel")
    assert f"waiting for FineTuneJob {FTJ} to succeed" in current["message"]
    # Without a gate it passes at once; a gate cannot be judged before the model has its metrics.
    no_gate = conditions(cluster, lab, "news")["QualityPassed"]
    assert (no_gate["status"], no_gate["reason"]) == ("True", "NoGate")
    wait_phase(cluster, lab, "strict", "WaitingForModel")
    gated = conditions(cluster, lab, "strict")["QualityPassed"]
    assert (gated["status"], gated["reason"]) == ("Unknown", "WaitingForModel")
    assert deploy_job(cluster, lab, "news") is None


def test_quality_gate_refuses_a_model_below_the_minimum(cluster, lab, trained):
    cluster.wait_for(trained, TRAIN_TIMEOUT, f"FineTuneJob {FTJ} to succeed")
    rouge_l = status(cluster, lab, FTJ, "finetunejobs.floe.dev")["metrics"]["rougeL"]
    current = wait_phase(cluster, lab, "strict", "Failed")
    quality = conditions(cluster, lab, "strict")["QualityPassed"]
    assert quality["status"] == "False" and quality["reason"] == "BelowMinimum"
    assert quality["message"] == f"rougeL {rouge_l:.4f} < minRougeL 0.99" == current["message"]
    # GitOps appliers (kstatus) see the refusal as a failure, not as work in progress.
    verdict = kstatus.compute(cluster.get(SFD, "strict", "-n", lab))
    assert verdict == [{"status": "Failed", "message": current["message"]}]
    assert conditions(cluster, lab, "strict")["ModelReady"]["status"] == "True"
    assert deploy_job(cluster, lab, "strict") is None
    events = cluster.kubectl(
        "get", "events", "-n", lab, "--field-selector", "involvedObject.name=strict", "-o", "yaml"
    ).stdout
    assert "minRougeL 0.99" in events


def test_unapproved_stays_blocked_and_only_governance_approves(cluster, lab, trained):
    cluster.wait_for(trained, TRAIN_TIMEOUT, f"FineTuneJob {FTJ} to succeed")
    current = wait_phase(cluster, lab, "news", "WaitingForApproval")
    found = conditions(cluster, lab, "news")
    assert found["ModelReady"]["status"] == found["QualityPassed"]["status"] == "True"
    assert found["Approved"]["status"] == "False" and found["Ready"]["status"] == "False"
    assert "governance officer" in current["message"]
    assert deploy_job(cluster, lab, "news") is None

    approve = {"spec": {"approval": {**approval("gwen", trained_digest(cluster, lab)), "comment": "reviewed"}}}
    refused = patch(cluster, lab, "news", approve, user="eli")
    assert refused.returncode != 0 and "spec.approval: only a governance officer may approve" in refused.stderr
    assert status(cluster, lab, "news")["phase"] == "WaitingForApproval"
    assert patch(cluster, lab, "news", approve, user="gwen", groups=["floe:governance-officers"]).returncode == 0


def test_an_approval_of_another_model_deploys_nothing(cluster, lab, trained):
    # An approval given to an earlier model (a FineTuneJob deleted and trained again under the same name).
    earlier = approval(cluster.username(), "sha256:" + "1" * 64, "STALE")
    cluster.apply(sfd("stale", lab, approval=earlier, snowflake={**sfd("x", lab)["spec"]["snowflake"],
                                                                 "functionName": "STALE"})).check_returncode()
    current = wait_phase(cluster, lab, "stale", "WaitingForApproval")
    assert conditions(cluster, lab, "stale")["Approved"]["reason"] == "ApprovalStale"
    assert f"the model now is {trained_digest(cluster, lab)}" in current["message"]
    assert deploy_job(cluster, lab, "stale") is None


def test_the_trainer_cannot_rewrite_what_the_quality_gate_reads(cluster, lab, trained, tmp_path):
    cluster.wait_for(trained, TRAIN_TIMEOUT, f"FineTuneJob {FTJ} to succeed")
    ftj = cluster.get("finetunejobs.floe.dev", FTJ, "-n", lab)
    assert ftj["status"]["modelUri"] == f"pvc://models/{FTJ}-{ftj['metadata']['uid']}/model"  # its own directory
    trainer = cluster.service_account_kubeconfig(lab, f"{FTJ}-train", tmp_path / "trainer.kubeconfig")
    api = client.CustomObjectsApi(config.new_client_from_config(str(trainer)))
    for forged in ({"metrics": {"rougeL": 0.99}}, {"progress": {"percent": 1}}):
        with pytest.raises(ApiException) as refused:  # a PATCH as the trainer sends it (it reads no status)
            api.patch_namespaced_custom_object_status("floe.dev", "v1alpha1", lab, "finetunejobs", FTJ,
                                                      {"status": forged})
        assert "may write only status.progress" in refused.value.body, refused.value.body
    assert status(cluster, lab, FTJ, "finetunejobs.floe.dev")["metrics"] == ftj["status"]["metrics"]


def test_approved_model_is_deployed_and_verified_on_the_local_runner(cluster, lab, trained):
    current = wait_phase(cluster, lab, "news", "Deployed", DEPLOY_TIMEOUT)
    found = conditions(cluster, lab, "news")
    for kind in ("ModelReady", "QualityPassed", "Approved", "Deployed", "Verified", "Ready"):
        assert found[kind]["status"] == "True", found[kind]
    assert kstatus.compute(cluster.get(SFD, "news", "-n", lab))[0]["status"] == "Current"
    assert current["functionName"] == '"ML"."PUBLIC"."SUMMARIZE"'
    assert current["modelDigest"].startswith("sha256:") and len(current["modelDigest"]) == 71
    assert len(current["verifiedSample"]) == 3
    assert all(isinstance(row["summary"], str) and row["text"] for row in current["verifiedSample"])
    assert current["observedGeneration"] == (cluster.get(SFD, "news", "-n", lab))["metadata"]["generation"]
    job = deploy_job(cluster, lab, "news")
    pods = cluster.get("pods", "-n", lab, "-l", f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}")
    assert [p["spec"]["nodeName"] for p in pods["items"]] == ["local-runner"]
    message = pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message)["outcome"] == "Deployed"
    # latency measured on the deploy pod and the batch size registered from it
    assert current["perRowLatencyMs"] > 0 and current["maxBatchSize"] == json.loads(message)["maxBatchSize"] >= 1
    reasons = yaml.safe_load(
        cluster.kubectl("get", "events", "-n", lab, "--field-selector", "involvedObject.name=news", "-o", "yaml").stdout
    )
    assert {"WaitingForModel", "WaitingForApproval", "Deploying", "Deployed"} <= {e["reason"] for e in reasons["items"]}


def floe(cluster, *args, user=None) -> subprocess.CompletedProcess:
    identity = ["--as", user] if user else []
    command = [sys.executable, "-m", "floe_operator.cli", args[0], f"--kubeconfig={cluster.kubeconfig}", *identity]
    return subprocess.run([*command, *args[1:]], capture_output=True, text=True, timeout=DEPLOY_TIMEOUT)


def account_dir(cluster, lab) -> Path:
    """The local account the deploy Jobs keep on the `models` claim (the pod runner's directory for it)."""
    return cluster.runner_state / "pvcs" / lab / "models" / ".floe-local-account"


def test_floe_predict_calls_the_deployed_function_after_its_pod_has_gone(cluster, lab, trained, tmp_path):
    current = wait_phase(cluster, lab, "news", "Deployed", DEPLOY_TIMEOUT)
    assert (account_dir(cluster, lab) / "functions" / "ML.PUBLIC.SUMMARIZE.json").is_file()
    rows = tmp_path / "rows.csv"
    rows.write_text('id,text\n1,"' + SAMPLE_ARTICLES[1] + '"\n')
    # as the Project's ML engineer, with a persona's rights only
    done = floe(cluster, "predict", "sfd/news", "-n", lab, "--text", SAMPLE_ARTICLES[0], "--file", str(rows),
                user="eli")
    assert done.returncode == 0, done.stderr
    summaries = done.stdout.splitlines()
    # the same function, called the same way as verification called it, answers the same (the status keeps
    # the first 300 characters of each)
    verified = [" ".join(row["summary"].split()) for row in current["verifiedSample"][:2]]
    assert len(summaries) == 2 and all(summaries)
    assert all(summary.startswith(prefix) for summary, prefix in zip(summaries, verified, strict=True))
    (job,) = cluster.get("jobs", "-n", lab, "-l", "floe.dev/predict=news")["items"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == cluster.get(SFD, "news", "-n", lab)["metadata"]["uid"]


def test_a_model_that_writes_blank_summaries_is_not_verified(cluster, lab, trained):
    import torch
    from transformers import T5ForConditionalGeneration

    cluster.wait_for(trained, TRAIN_TIMEOUT, f"FineTuneJob {FTJ} to succeed")
    ftj = cluster.get("finetunejobs.floe.dev", FTJ, "-n", lab)
    models = cluster.runner_state / "pvcs" / lab / "models"
    trained_dir = models / ftj["status"]["modelUri"].removeprefix("pvc://models/")
    # the trained model with its output layer zeroed: it loads and generates, but only padding
    mute = models / "mute"
    shutil.copytree(trained_dir, mute)
    model = T5ForConditionalGeneration.from_pretrained(mute, local_files_only=True)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(mute)
    spec = sfd("mute", lab, source={"modelUri": "pvc://models/mute"},
               approval=approval(cluster.username(), content_digest(mute), "MUTE"))
    spec["spec"]["snowflake"]["functionName"] = "MUTE"
    cluster.apply(spec).check_returncode()
    current = wait_phase(cluster, lab, "mute", "Failed", DEPLOY_TIMEOUT)
    verified = conditions(cluster, lab, "mute")["Verified"]
    assert (verified["status"], verified["reason"]) == ("False", "ImplausibleOutput")
    assert "the summary of row 1 is blank" in verified["message"] == current["message"]
    assert not (account_dir(cluster, lab) / "functions" / "ML.PUBLIC.MUTE.json").exists()
    # A retry would load the same model and write the same blanks: the first pod's exit ends the Job.
    job = deploy_job(cluster, lab, "mute")
    verdict = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert verdict["reason"] == "PodFailurePolicy" and job["status"]["failed"] == 1, job["status"]


def test_a_spec_change_deploys_again(cluster, lab, trained):
    before = deploy_job(cluster, lab, "news")
    assert patch(cluster, lab, "news", {"spec": {"sampleRows": 2}}).returncode == 0
    cluster.wait_for(
        lambda: (job := deploy_job(cluster, lab, "news")) and job["metadata"]["uid"] != before["metadata"]["uid"],
        90,
        "a new deploy Job",
    )
    generation = cluster.get(SFD, "news", "-n", lab)["metadata"]["generation"]
    current = cluster.wait_for(
        lambda: (
            (s := status(cluster, lab, "news")).get("phase") == "Deployed"
            and s.get("observedGeneration") == generation
            and len(s["verifiedSample"]) == 2
            and s
        ),
        DEPLOY_TIMEOUT,
        "the redeploy with two sample rows",
    )
    assert current["functionName"] == '"ML"."PUBLIC"."SUMMARIZE"'


def test_deleting_a_local_deployment_drops_its_function_from_the_local_account(cluster, lab, trained):
    obj = cluster.get(SFD, "news", "-n", lab)
    assert obj["metadata"].get("finalizers"), "the operator holds a finalizer on a deployment"
    record = account_dir(cluster, lab) / "functions" / "ML.PUBLIC.SUMMARIZE.json"
    assert record.is_file()
    cluster.kubectl("delete", SFD, "news", "-n", lab, "--wait=false", check=True)
    cluster.wait_for(lambda: cluster.get(SFD, "news", "-n", lab) is None, DEPLOY_TIMEOUT, "the deployment to go")
    assert not record.exists()  # dropped by the drop Job before the finalizer let go
    assert not list((account_dir(cluster, lab) / "stage").rglob("*SUMMARIZE*/*/floe_model.zip"))


PASSWORD = "not-a-real-password-7f3a"


def test_account_mode_failure_is_reported_and_the_finalizer_waits_for_the_drop(cluster, lab, trained):
    # An account that refuses connections: the deployer fails fast, and says so without the password.
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sf-conn", "namespace": lab},
            "stringData": {
                "account": "acme",
                "user": "deployer",
                "password": PASSWORD,
                "host": "127.0.0.1",
                "port": "1",
            },
        }
    ).check_returncode()
    # The Project names it as its deploy connection: a deployment may mount no other Secret.
    cluster.kubectl("patch", "project", lab, "--type=merge", "-p",
                    '{"spec":{"snowflake":{"connectionSecretRef":{"name":"sf-conn"}}}}', check=True)
    cluster.wait_for(
        lambda: cluster.get("namespace", lab)["metadata"]["annotations"].get("floe.dev/deploy-secrets") == "sf-conn",
        60, "the Project to name its deploy connection")
    digest = "sha256:" + "2" * 64
    account = sfd("account", lab, source={"modelUri": "pvc://models/model"}, approval=approval(cluster.username(),
                                                                                              digest))
    account["spec"]["snowflake"].update(mode="account", connectionSecretRef={"name": "sf-conn"})
    cluster.apply(account).check_returncode()
    current = wait_phase(cluster, lab, "account", "Failed", DEPLOY_TIMEOUT)
    assert "could not connect to Snowflake account 'acme'" in current["message"]
    assert conditions(cluster, lab, "account")["Deployed"]["reason"] == "DeployFailed"
    job = deploy_job(cluster, lab, "account")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["snowflake"]["secret"]["secretName"] == "sf-conn"

    # Delete (the default policy): the function must be dropped first, so the object stays while that fails.
    cluster.kubectl("delete", SFD, "account", "-n", lab, "--wait=false", check=True)
    deleting = cluster.wait_for(
        lambda: (
            "drop Job account-drop failed" in (status(cluster, lab, "account").get("message") or "")
            and status(cluster, lab, "account")
        ),
        DEPLOY_TIMEOUT,
        "the drop Job to fail",
    )
    assert deleting["phase"] == "Deleting" and "deletionPolicy: Retain" in deleting["message"]
    assert cluster.get(SFD, "account", "-n", lab)["metadata"]["deletionTimestamp"]
    events = cluster.kubectl("get", "events", "-n", lab, "-o", "yaml").stdout
    assert "DropFailed" in events and PASSWORD not in events
    assert PASSWORD not in json.dumps(cluster.get(SFD, "account", "-n", lab))

    # Retain lets it go without dropping.
    assert patch(cluster, lab, "account", {"spec": {"deletionPolicy": "Retain"}}).returncode == 0
    cluster.wait_for(lambda: cluster.get(SFD, "account", "-n", lab) is None, 180, "the deployment to go")
