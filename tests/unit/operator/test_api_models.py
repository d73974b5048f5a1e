"""The typed API models: defaults, JSON names and the validation the CRDs also enforce."""

import pytest
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


def test_finetunejob_defaults_follow_the_seed_recipe():
    spec = ftj()
    assert spec.training.epochs == 3
    # The batch is the one exception: the largest that fits the GPU (8 on CPU, as the seed's small batches).
    assert (spec.training.batch_size, spec.training.effective_batch_size) == ("auto", None)
    assert spec.training.learning_rate == 1e-4
    assert (spec.training.source_max_length, spec.training.target_max_length) == (512, 150)
    assert spec.training.seed == 42
    assert (spec.dataset.text_column, spec.dataset.summary_column) == ("ctext", "text")
    assert spec.dataset.validation_fraction == 0.1
    assert spec.model.scratch.vocab_size == 2000
    assert (spec.evaluation.rouge, spec.evaluation.max_samples, spec.evaluation.num_beams) == (True, 64, 2)
    # Checkpoints on a time interval by default, so a fast job does not stall on them every few steps.
    assert (spec.checkpoint.every_minutes, spec.checkpoint.every_steps, spec.checkpoint.keep) == (10.0, None, 2)
    assert (spec.resources.gpus, spec.resources.workers) == (1, 1)
    assert (spec.backoff_limit, spec.ttl_seconds_after_finished, spec.suspend) == (3, 86400, False)


def test_json_names_are_camel_case_and_unset_optionals_are_left_out():
    data = ftj(training={"batchSize": 32, "learningRate": 3e-4}).to_k8s()
    assert data["training"]["batchSize"] == 32
    assert data["training"]["learningRate"] == 3e-4
    assert "maxSteps" not in data["training"]
    assert data["ttlSecondsAfterFinished"] == 86400


@pytest.mark.parametrize(
    "model",
    [{}, {"hub": {"id": "t5-small"}, "path": "/models/t5"}, {"path": "/m", "scratch": {"shape": "tiny"}}],
)
def test_model_needs_exactly_one_source(model):
    assert "exactly one of hub, path, scratch" in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, "model": model})


@pytest.mark.parametrize(
    "dataset, message",
    [
        ({}, "exactly one of file, snowflake"),
        ({"file": {"path": "a.csv"}, "snowflake": {"table": "NEWS"}}, "exactly one of file, snowflake"),
        ({"file": {}}, "exactly one of path, uri"),
        ({"file": {"path": "a.csv", "uri": "s3://b/a.csv"}}, "exactly one of path, uri"),
        ({"snowflake": {}}, "exactly one of table, query"),
        ({"snowflake": {"table": "NEWS", "query": "SELECT 1"}}, "exactly one of table, query"),
    ],
)
def test_dataset_sources_are_exclusive(dataset, message):
    assert message in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, "dataset": dataset})


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("training", {"epochs": 0}, "training.epochs"),
        ("training", {"batchSize": 5000}, "training.batchSize"),
        ("training", {"batchSize": "largest"}, "training.batchSize"),
        ("training", {"gradientAccumulationSteps": 2, "effectiveBatchSize": 64}, "training"),
        ("training", {"learningRate": 0}, "training.learningRate"),
        ("training", {"precision": "int4"}, "training.precision"),
        ("resources", {"workers": 0}, "resources.workers"),
        ("resources", {"gpus": -1}, "resources.gpus"),
        ("resources", {"cpu": "four"}, "resources.cpu"),
        ("model", {"scratch": {"shape": "tiny", "vocabSize": 100}}, "model.scratch.vocabSize"),
        ("model", {"scratch": {"shape": "t5-huge"}}, "model.scratch.shape"),
    ],
)
def test_bounds_and_enums_name_the_field(field, value, where):
    assert where in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, field: value})


@pytest.mark.parametrize("fraction", [0, 1, 1.5])
def test_validation_fraction_is_strictly_between_zero_and_one(fraction):
    data = {**MINIMAL_FTJ, "dataset": {"file": {"path": "a.csv"}, "validationFraction": fraction}}
    assert "dataset.validationFraction" in error_text(FineTuneJobSpec, data)


def test_unknown_fields_are_refused():
    assert "trainng" in error_text(FineTuneJobSpec, {**MINIMAL_FTJ, "trainng": {}})


def test_snowflake_table_names_cannot_smuggle_sql():
    data = {**MINIMAL_FTJ, "dataset": {"snowflake": {"table": "NEWS; DROP TABLE USERS"}}}
    assert "dataset.snowflake.table" in error_text(FineTuneJobSpec, data)
    assert ftj(dataset={"snowflake": {"table": "DB.PUBLIC.NEWS"}}).dataset.snowflake.table == "DB.PUBLIC.NEWS"


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


def test_snowflakedeployment_identifiers_and_source():
    bad = {**SFD, "snowflake": {**SFD["snowflake"], "functionName": 'X"; DROP FUNCTION Y; --'}}
    assert "snowflake.functionName" in error_text(SnowflakeDeploymentSpec, bad)
    both = {**SFD, "source": {"fineTuneJobRef": {"name": "a"}, "modelUri": "pvc://c/model"}}
    assert "exactly one of fineTuneJobRef, modelUri" in error_text(SnowflakeDeploymentSpec, both)


def test_workspace_defaults():
    spec = WorkspaceSpec.model_validate({})
    assert (spec.template, spec.compute_profile, spec.stopped) == ("snowflake", "cpu", False)
    assert (spec.storage.size, spec.storage.retain) == ("10Gi", True)
