"""The trainer's config: the contract's training settings (tested in tests/unit/contract) plus the runtime fields,
read from a file with errors named as the FineTuneJob's fields."""

import json
import subprocess
import sys

import pytest
from floe_trainer.config import ConfigError, load_config, parse_config

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


def test_minimal_config_gets_the_contract_defaults_and_the_runtime_ones():
    cfg = parse_config(MINIMAL)
    assert (cfg.training.learning_rate, cfg.checkpoint.every_minutes) == (1e-4, 10.0)  # the contract's
    assert (cfg.checkpoint.dir, cfg.output.dir) == ("/var/run/floe/output/checkpoints", "/var/run/floe/output/model")
    assert (cfg.job, cfg.metrics_port) == (None, 9090)


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
    (with_("job", {"namespace": "team-a"}), "trainer config job.name"),
    (with_("checkpoint.dir", ""), "trainer config checkpoint.dir"),
    (with_("metricsPort", 70000), "metricsPort"),
    # A setting of the spec is named as the spec's field.
    (with_("training.batchSize", 0), "spec.training.batchSize"),
    (with_("checkpoint.keep", 0), "spec.checkpoint.keep"),
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
