import json
import subprocess
import sys

import pytest
from floe_trainer.config import ConfigError, ScratchShape, load_config, parse_config

MINIMAL = {"version": "v1", "model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "news.csv"}}}


def with_(path: str, value):
    """MINIMAL with the dotted key set (None deletes it)."""
    raw = json.loads(json.dumps(MINIMAL))
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return raw


def test_minimal_config_gets_the_seed_recipe_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.model.scratch.shape == ScratchShape.tiny
    t = cfg.training
    assert (t.learning_rate, t.source_max_length, t.target_max_length) == (1e-4, 512, 150)
    assert (cfg.dataset.text_column, cfg.dataset.summary_column) == ("ctext", "text")
    assert cfg.metrics_port == 9090


def test_the_design_example_parses():
    cfg = parse_config({
        "version": "v1", "job": {"namespace": "team-a", "name": "t5-news"},
        "model": {"hub": {"id": "t5-small", "revision": None}},
        "dataset": {"snowflake": {"table": "NEWS"}, "textColumn": "ctext", "summaryColumn": "text",
                    "validationFraction": 0.1, "seed": 42, "maxRows": None},
        "training": {"epochs": 3, "batchSize": 8, "learningRate": 1e-4, "warmupRatio": 0.06,
                     "gradientAccumulationSteps": 1, "maxGradNorm": 1.0, "sourceMaxLength": 512,
                     "targetMaxLength": 150, "precision": "auto", "compile": "auto", "seed": 42, "maxSteps": None},
        "evaluation": {"rouge": True, "maxSamples": 64, "numBeams": 2, "maxNewTokens": 150},
        "checkpoint": {"dir": "/var/run/floe/output/checkpoints", "everySteps": 200, "keep": 2},
        "output": {"dir": "/var/run/floe/output/model"}, "metricsPort": 9090,
    })
    assert cfg.dataset.snowflake.table == "NEWS"


@pytest.mark.parametrize("raw, field", [
    (with_("version", "v2"), "version"),
    (with_("training.batchSize", 0), "training.batchSize"),
    (with_("training.batchsize", 8), "training.batchsize"),  # unknown key (wrong case)
    (with_("training.precision", "fp8"), "training.precision"),
    (with_("training.compile", "maybe"), "training.compile"),
    (with_("dataset.validationFraction", 1.0), "dataset.validationFraction"),
    (with_("model.hub", {"id": "t5-small"}), "model"),  # two sources
    (with_("model.scratch", None), "model"),  # no source
    (with_("model.scratch.shape", "t5-huge"), "model.scratch.shape"),
    (with_("dataset.snowflake", {"table": "NEWS"}), "dataset"),
    (with_("dataset.file", {"path": "a.csv", "uri": "s3://b/a.csv"}), "dataset.file"),
    (with_("metricsPort", 70000), "metricsPort"),
])
def test_invalid_config_names_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert f"{field}:" in str(err.value)


def test_unreadable_and_non_json_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "job.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(tmp_path / "job.json")


def test_cli_rejects_a_bad_config_with_exit_2_before_importing_torch(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(with_("training.learningRate", -1)))
    term = tmp_path / "termination-log"
    code = (
        "import sys; from floe_trainer.train import main; rc = main(['--config', sys.argv[1]]); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True, timeout=60,
                          env={"FLOE_TERMINATION_LOG": str(term), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    # Named as the FineTuneJob's field the operator rendered it from, in plain words, not pydantic's.
    said = "spec.training.learningRate: must be greater than 0.0"
    assert said in proc.stderr
    message = json.loads(term.read_text())
    assert message["outcome"] == "Failed" and message["message"].endswith(said)
    assert "Input should" not in message["message"]


def test_evaluation_cadence_is_one_of_epochs_steps_minutes_or_automatic():
    assert parse_config(MINIMAL).evaluation.every.model_dump() == {"epochs": None, "steps": None, "minutes": None}
    assert parse_config(with_("evaluation.every", {"minutes": 30})).evaluation.every.minutes == 30
    with pytest.raises(ConfigError, match="evaluation.every: .*at most one"):
        parse_config(with_("evaluation.every", {"epochs": 1, "steps": 100}))


def test_checkpoints_default_to_a_time_interval():
    c = parse_config(MINIMAL).checkpoint
    assert (c.every_minutes, c.every_steps) == (10.0, None)
