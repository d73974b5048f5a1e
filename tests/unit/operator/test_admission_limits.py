"""The limits the API models check at admission are the limits of the objects built from them."""

import re

import pytest
from floe_operator.api import finetunejob, snowflakedeployment, workspace
from floe_operator.api.common import DNS_1035_PATTERN, DNS_LABEL_PATTERN, QUALIFIED_NAME_PATTERN
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
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
