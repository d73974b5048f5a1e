"""The limits the API models check at admission are the limits of the objects built from them."""

import re

import pytest
from floe_operator.api import finetunejob, snowflakedeployment, workspace
from floe_operator.api.common import DNS_1035_PATTERN, DNS_LABEL_PATTERN, QUALIFIED_NAME_PATTERN
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders.finetunejob import TRAINER_CONFIG_ANNOTATION, TrainerTarget
from floe_operator.builders.finetunejob import job as trainer_job
from floe_operator.builders.snowflakedeployment import DeployTarget
from floe_operator.builders.workspace import WorkspaceNames
from floe_trainer.identifiers import FunctionName, IdentifierError
from pydantic import ValidationError

MINIMAL_FTJ = {"model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "/data/news.csv"}}}
# The StatefulSet controller labels a Workspace's pod with its revision: <name>-<hash of up to 10 characters>.
REVISION_HASH = "1234567890"


def is_label(value: str) -> bool:
    return len(value) <= 63 and re.match(DNS_LABEL_PATTERN, value) is not None


def test_the_longest_workspace_name_fits_its_objects():
    names = WorkspaceNames("w" * workspace.MAX_NAME_LENGTH)
    assert re.match(DNS_1035_PATTERN, names.service) and len(names.service) <= 63  # a Service's name
    assert is_label(f"{names.statefulset}-{REVISION_HASH}") and is_label(names.pod)
    assert all(is_label(name) for name in (names.home, names.token))
    assert not is_label(f"{'w' * (workspace.MAX_NAME_LENGTH + 1)}-{REVISION_HASH}")


def test_the_longest_deployment_name_fits_its_jobs():
    target = DeployTarget(namespace="lab", name="d" * snowflakedeployment.MAX_NAME_LENGTH, uid="u", image="i")
    assert is_label(target.deploy_name) and is_label(target.drop_name)  # job-name labels of their pods
    longer = DeployTarget(namespace="lab", name="d" * (snowflakedeployment.MAX_NAME_LENGTH + 1), uid="u", image="i")
    assert not is_label(longer.deploy_name)


def deployment(function: str) -> SnowflakeDeploymentSpec:
    target = {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": function}
    return SnowflakeDeploymentSpec.model_validate({"source": {"modelUri": "pvc://m/model"}, "snowflake": target})


def test_a_function_name_admitted_leaves_room_for_the_deployers_staging_name():
    longest = "F" * 228
    deployment(longest)
    staging = f"__FLOE_STAGING_{'0' * 12}"  # what floe_trainer.deploy appends
    FunctionName.of("ML", "PUBLIC", longest).with_suffix(staging)
    with pytest.raises(ValidationError, match="functionName"):
        deployment(longest + "F")
    with pytest.raises(IdentifierError):
        FunctionName.of("ML", "PUBLIC", longest + "F").with_suffix(staging)


@pytest.mark.parametrize(
    "labels",
    [
        {"cost center": "ml"},
        {"a/b/c": "x"},
        {"-team": "x"},
        {"a" * 254 + "/team": "x"},
        {"example.com/" + "n" * 64: "x"},
        {"team": "x" * 64},
        {"team": "ml ops"},
    ],
)
def test_pod_labels_kubernetes_refuses_are_refused(labels):
    with pytest.raises(ValidationError, match="labels"):
        FineTuneJobSpec.model_validate({**MINIMAL_FTJ, "podMetadata": {"labels": labels}})


def test_pod_metadata_kubernetes_takes_is_taken():
    labels = {"pod-container-running-failed.stage.kwok.x-k8s.io": "true", "a" * 253 + "/" + "n" * 63: "v" * 63, "e": ""}
    annotations = {"example.com/note": "any text: spaces, quotes \" and / slashes"}
    metadata = {"labels": labels, "annotations": annotations}
    spec = FineTuneJobSpec.model_validate({**MINIMAL_FTJ, "podMetadata": metadata})
    assert spec.pod_metadata.labels == labels
    assert all(re.match(QUALIFIED_NAME_PATTERN, key) for key in labels)


def test_pod_annotations_over_the_size_kubernetes_takes_are_refused():
    big = {f"note-{i}": "é" * 40000 for i in range(4)}  # 80,000 bytes each in UTF-8
    with pytest.raises(ValidationError, match="KiB"):
        FineTuneJobSpec.model_validate({**MINIMAL_FTJ, "podMetadata": {"annotations": big}})
    assert finetunejob.POD_ANNOTATIONS_MAX_BYTES < 256 * 1024


def test_int32_fields_of_the_job_are_bounded():
    with pytest.raises(ValidationError, match="ttlSecondsAfterFinished|ttl_seconds_after_finished"):
        FineTuneJobSpec.model_validate({**MINIMAL_FTJ, "ttlSecondsAfterFinished": 2**31})
    assert FineTuneJobSpec.model_validate({**MINIMAL_FTJ, "ttlSecondsAfterFinished": 2**31 - 1})


# JSON writes a control character as six bytes (\u0001): the worst case of a string without a pattern.
WORST = "\x01"
INT64_MAX = 2**63 - 1


def largest_spec(dataset: dict, annotations: dict[str, str] | None = None) -> FineTuneJobSpec:
    """A FineTuneJob whose trainer config is as large as admission lets it be, but for the Snowflake query."""
    return FineTuneJobSpec.model_validate({
        "model": {"path": WORST * 4096},
        "dataset": {**dataset, "textColumn": WORST * 255, "summaryColumn": WORST * 255, "seed": INT64_MAX,
                    "maxRows": INT64_MAX, "validationFraction": 0.1234567890123456},
        "training": {"epochs": 1000, "batchSize": 4096, "learningRate": 0.1234567890123456,
                     "warmupRatio": 0.1234567890123456, "effectiveBatchSize": 65536,
                     "maxGradNorm": 1.7976931348623157e308,
                     "sourceMaxLength": 8192, "targetMaxLength": 4096, "seed": INT64_MAX, "maxSteps": INT64_MAX},
        "evaluation": {"every": {"steps": INT64_MAX}, "maxSamples": 100000, "finalMaxSamples": INT64_MAX,
                       "numBeams": 16, "maxNewTokens": 4096, "batchSize": 4096},
        "checkpoint": {"everyMinutes": 0.1234567890123456, "everySteps": INT64_MAX, "keep": 100},
        "podMetadata": {"annotations": annotations or {}},
    })


def pod_annotations(spec: FineTuneJobSpec) -> dict[str, str]:
    target = TrainerTarget(namespace="n" * 63, name="j" * finetunejob.MAX_NAME_LENGTH, uid="u" * 36, image="i")
    return trainer_job(target, spec)["spec"]["template"]["metadata"]["annotations"]


def test_the_largest_trainer_config_but_the_query_fits_its_share_of_the_annotations():
    spec = largest_spec({"file": {"path": WORST * 4096, "claimName": WORST * 253}})
    config = {TRAINER_CONFIG_ANNOTATION: pod_annotations(spec)[TRAINER_CONFIG_ANNOTATION]}
    assert finetunejob.annotation_bytes(config) <= finetunejob.TRAINER_CONFIG_MAX_BYTES


def test_pod_annotations_and_a_query_admission_takes_fit_the_pods_annotations():
    """The trainer's config travels in the pod template's annotations, with the spec's own: the largest of
    both that admission takes is under what Kubernetes takes (256 KiB, less 1 KiB for the Job controller)."""
    query = 'SELECT "' + '"' * 60000  # JSON writes each '"' as two bytes
    room = finetunejob.POD_ANNOTATIONS_MAX_BYTES - 2 * len(query.encode()) - len("example.com/note")
    dataset = {"snowflake": {"query": query, "connectionSecretRef": {"name": "c" * 253}}}
    annotations = pod_annotations(largest_spec(dataset, {"example.com/note": "é" * (room // 2)}))
    assert finetunejob.annotation_bytes(annotations) <= 255 * 1024
    with pytest.raises(ValidationError, match="twice dataset.snowflake.query"):
        largest_spec(dataset, {"example.com/note": "é" * (room // 2) + "ab"})
