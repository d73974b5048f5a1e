"""The typed API models: defaults, JSON names and the validation the CRDs also enforce. The training settings and
the deployment target are the contract's models (tests/unit/contract), embedded here."""

import pytest
from floe_contract.deployment import FunctionTarget
from floe_contract.training import Checkpoint, Dataset, Evaluation, ModelSource, Training
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import ProjectSpec
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.api.workspace import WorkspaceSpec
from pydantic import ValidationError

MINIMAL_FTJ = {"model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "/data/news.csv"}}}


def ftj(**overrides):
    return FineTuneJobSpec.model_validate({**MINIMAL_FTJ, **overrides})


def error_text(model, data) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def test_finetunejob_defaults():
    spec = ftj()
    assert (spec.training.epochs, spec.evaluation.rouge, spec.checkpoint.keep) == (3, True, 2)  # the contract's
    assert (spec.resources.gpus, spec.resources.workers) == (1, 1)
    assert (spec.backoff_limit, spec.ttl_seconds_after_finished, spec.suspend) == (3, 86400, False)


def test_the_specs_embed_the_contract_models():
    """A training setting or a deployment target field is declared once, in floe_contract."""
    embedded = {"model": ModelSource, "dataset": Dataset, "training": Training, "evaluation": Evaluation,
                "checkpoint": Checkpoint}
    assert {name: FineTuneJobSpec.model_fields[name].annotation for name in embedded} == embedded
    assert issubclass(SnowflakeDeploymentSpec.model_fields["snowflake"].annotation, FunctionTarget)


def test_json_names_are_camel_case_and_unset_optionals_are_left_out():
    data = ftj(training={"batchSize": 32, "learningRate": 3e-4}).to_k8s()
    assert data["training"]["batchSize"] == 32
    assert data["training"]["learningRate"] == 3e-4
    assert "maxSteps" not in data["training"]
    assert data["ttlSecondsAfterFinished"] == 86400


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("training", {"epochs": 0}, "training.epochs"),
        ("resources", {"workers": 0}, "resources.workers"),
        ("resources", {"gpus": -1}, "resources.gpus"),
        ("resources", {"cpu": "four"}, "resources.cpu"),
        ("model", {"scratch": {"shape": "t5-huge"}}, "model.scratch.shape"),
    ],
)
def test_bounds_and_enums_name_the_field(field, value, where):
    assert where in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, field: value})


def test_unknown_fields_are_refused():
    assert "trainng" in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, "trainng": {}})


def test_quantities_accept_numbers_and_refuse_words():
    spec = ftj(resources={"cpu": 8, "memory": "32Gi"})
    assert (spec.resources.cpu, spec.resources.memory) == ("8", "32Gi")


def test_project_defaults_and_members():
    spec = ProjectSpec.model_validate({"members": [{"name": "alice", "persona": "DataScientist"}]})
    assert spec.quota.gpus == 4
    assert spec.members[0].kind == "User"
    assert "members.0.persona" in error_text(ProjectSpec, {"members": [{"name": "bob", "persona": "Boss"}]})


@pytest.mark.parametrize(
    "url", ["https://github.com/floe-dev/demo.git", "ssh://git@github.com/floe-dev/demo.git", "git@github.com:a/b.git"]
)
def test_project_repository_accepts_https_and_ssh(url):
    spec = ProjectSpec.model_validate({"repository": {"url": url}})
    assert spec.repository.branch == "main"


@pytest.mark.parametrize("url", ["http://github.com/a/b", "file:///etc/passwd", "github.com/a/b", "https://"])
def test_project_repository_refuses_other_urls(url):
    assert "repository.url" in error_text(ProjectSpec, {"repository": {"url": url}})


SFD = {
    "source": {"fineTuneJobRef": {"name": "t5-news"}},
    "snowflake": {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"},
}


def test_snowflakedeployment_defaults():
    spec = SnowflakeDeploymentSpec.model_validate(SFD)
    assert (spec.snowflake.mode, spec.sample_rows, spec.deletion_policy) == (None, 3, "Delete")
    assert spec.approval.approved is False
    assert spec.to_k8s()["snowflake"]["schema"] == "PUBLIC"


def test_snowflakedeployment_names_the_target_field_and_needs_one_source():
    bad = {**SFD, "snowflake": {**SFD["snowflake"], "functionName": 'X"; DROP FUNCTION Y; --'}}
    assert "snowflake.functionName" in error_text(SnowflakeDeploymentSpec, bad)
    both = {**SFD, "source": {"fineTuneJobRef": {"name": "a"}, "modelUri": "pvc://c/model"}}
    assert "exactly one of fineTuneJobRef, modelUri" in error_text(SnowflakeDeploymentSpec, both)


def test_workspace_defaults():
    spec = WorkspaceSpec.model_validate({})
    assert (spec.template, spec.compute_profile, spec.stopped) == ("snowflake", "cpu", False)
    assert (spec.storage.size, spec.storage.retain) == ("10Gi", True)
