"""The training settings' rules, declared once in floe_contract.training: the FineTuneJob CRD and the trainer's
config both take these models, so each rule is tested here, on the model that declares it."""

import pytest
from floe_contract.training import (
    Checkpoint,
    Dataset,
    Evaluation,
    EvaluationEvery,
    FileDataset,
    ModelSource,
    ScratchShape,
    Training,
)
from pydantic import ValidationError

FILE = {"file": {"path": "news.csv"}}


def error_text(model, data) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def test_defaults_follow_the_seed_recipe():
    training = Training()
    assert training.epochs == 3
    # The batch is the one exception: the largest that fits the GPU (8 on CPU, as the seed's small batches).
    assert (training.batch_size, training.effective_batch_size) == ("auto", None)
    assert (training.learning_rate, training.max_grad_norm) == (1e-4, 1.0)
    assert (training.source_max_length, training.target_max_length, training.seed) == (512, 150, 42)
    dataset = Dataset.model_validate(FILE)
    assert (dataset.text_column, dataset.summary_column, dataset.validation_fraction) == ("ctext", "text", 0.1)
    scratch = ModelSource.model_validate({"scratch": {"shape": "tiny"}}).scratch
    assert (scratch.shape, scratch.vocab_size) == (ScratchShape.tiny, 2000)
    evaluation = Evaluation()
    assert (evaluation.rouge, evaluation.max_samples, evaluation.num_beams) == (True, 64, 2)
    assert evaluation.every.model_dump() == {"epochs": None, "steps": None, "minutes": None}  # automatic
    # Checkpoints on a time interval by default, so a fast job does not stall on them every few steps.
    checkpoint = Checkpoint()
    assert (checkpoint.every_minutes, checkpoint.every_steps, checkpoint.keep) == (10.0, None, 2)


@pytest.mark.parametrize(
    "model", [{}, {"hub": {"id": "t5-small"}, "path": "/models/t5"}, {"path": "/m", "scratch": {"shape": "tiny"}}]
)
def test_model_needs_exactly_one_source(model):
    assert "exactly one of hub, path, scratch" in error_text(ModelSource, model)


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
    assert message in error_text(Dataset, dataset)


@pytest.mark.parametrize(
    "model, data, where",
    [
        (Training, {"epochs": 0}, "epochs"),
        (Training, {"batchSize": 5000}, "batchSize"),
        (Training, {"batchSize": "largest"}, "batchSize"),
        (Training, {"gradientAccumulationSteps": 2, "effectiveBatchSize": 64}, "at most one of"),
        (Training, {"learningRate": 0}, "learningRate"),
        (Training, {"precision": "int4"}, "precision"),
        (Training, {"compile": "maybe"}, "compile"),
        (Training, {"batchsize": 8}, "batchsize"),  # an unknown key (wrong case) is refused
        # One rule where the operator's and the trainer's copies used to differ: clipping is always on.
        (Training, {"maxGradNorm": None}, "maxGradNorm"),
        (ModelSource, {"scratch": {"shape": "tiny", "vocabSize": 100}}, "scratch.vocabSize"),  # at least 256
        (ModelSource, {"scratch": {"shape": "t5-huge"}}, "scratch.shape"),
        (ModelSource, {"scratch": {}}, "scratch.shape"),  # required: no silent tiny model
        (Evaluation, {"maxSamples": 100001}, "maxSamples"),
        (Dataset, {**FILE, "validationFraction": 0}, "validationFraction"),
        (Dataset, {**FILE, "validationFraction": 1}, "validationFraction"),
        (Dataset, {"file": {"uri": "news.csv"}}, "file.uri"),
        (Dataset, {"snowflake": {"table": "NEWS; DROP TABLE USERS"}}, "snowflake.table"),
    ],
)
def test_bounds_and_enums_name_the_field(model, data, where):
    assert where in error_text(model, data)


def test_qualified_snowflake_tables_are_accepted():
    assert Dataset.model_validate({"snowflake": {"table": "DB.PUBLIC.NEWS"}}).snowflake.table == "DB.PUBLIC.NEWS"


def test_evaluation_cadence_is_one_of_epochs_steps_minutes_or_automatic():
    assert EvaluationEvery.model_validate({"minutes": 30}).minutes == 30
    assert "at most one of epochs, steps, minutes" in error_text(EvaluationEvery, {"epochs": 1, "steps": 100})


def test_a_file_on_a_claim_is_read_where_the_claim_is_mounted():
    on_claim = FileDataset.model_validate({"path": "news.csv", "claimName": "data"})
    assert on_claim.local_path == "/var/run/floe/data/news.csv"
    assert FileDataset.model_validate({"path": "/data/news.csv"}).local_path == "/data/news.csv"
    assert FileDataset.model_validate({"uri": "s3://b/news.csv"}).local_path is None
