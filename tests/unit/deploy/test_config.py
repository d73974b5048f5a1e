import json

import pytest
from floe_trainer.artifacts import content_digest
from floe_trainer.deploy import DeployError, check_model, load_config, main, termination_message

BASE = {
    "version": "v1",
    "modelDir": "/models/t5",
    "database": "analytics",
    "schema": "public",
    "stage": "models",
    "functionName": "summarize",
}


def write(tmp_path, **overrides):
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps({**BASE, **overrides}))
    return path


def test_defaults(tmp_path):
    config = load_config(write(tmp_path))
    assert config.function.qualified == '"ANALYTICS"."PUBLIC"."SUMMARIZE"'
    assert config.replace == "IfChanged" and config.mode is None and len(config.samples) == 2
    assert str(config.connection_dir) == "/var/run/floe/snowflake"


@pytest.mark.parametrize("field", ["database", "schema", "stage", "functionName"])
def test_injection_is_refused_naming_the_field(tmp_path, field):
    with pytest.raises(DeployError, match=f"{field}: .*not a valid Snowflake identifier"):
        load_config(write(tmp_path, **{field: 'x"; DROP TABLE y; --'}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"unknown": 1}, "deploy config unknown: not a field floe knows"),
        # Named as the SnowflakeDeployment's field the operator rendered it from, in plain words.
        ({"database": None}, "^invalid deploy config: spec.snowflake.database: must be a string$"),
        ({"mode": "cloud"}, "spec.snowflake.mode: must be one of 'local' or 'account'$"),
        ({"version": "v2"}, "version:"),
        ({"sampleRows": 0}, "spec.sampleRows: .*between 1 and"),
        ({"sampleRows": ["  "]}, "sampleRows: .*non-empty"),
        ({"replace": "Sometimes"}, "replace:"),
        ({"generation": {"numBeams": 0}}, "generation.numBeams:"),
        ({"owner": "team-a/summarize"}, "owner: .*not namespace/name/uid"),
        ({"owner": "team-a/summarize/uid owner:x"}, "owner: .*not namespace/name/uid"),
        ({"previousFunction": "DB.S"}, "previousFunction: .*not DATABASE.SCHEMA.FUNCTION"),
        ({"previousFunction": 'DB.S."x"; DROP'}, "previousFunction: "),
        ({"approvedModelDigest": "abc"}, r"spec.approval.modelDigest: must match \^sha256:"),
    ],
)
def test_bad_config_names_the_field(tmp_path, overrides, message):
    with pytest.raises(DeployError, match=message):
        load_config(write(tmp_path, **overrides))


def test_a_missing_field_is_required_by_its_spec_name(tmp_path):
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps({key: value for key, value in BASE.items() if key != "database"}))
    with pytest.raises(DeployError, match="^invalid deploy config: spec.snowflake.database: required$"):
        load_config(path)


def test_cli_refuses_injection_before_any_connection(tmp_path, monkeypatch, capsys):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(log))
    # a connection directory that would fail loudly if it were read
    config = write(tmp_path, functionName='x"; DROP TABLE y; --', connectionDir=str(tmp_path / "not-a-dir"))
    assert main(["--config", str(config)]) == 2
    outcome = json.loads(log.read_text())
    assert outcome["outcome"] == "Failed"
    assert outcome["message"].startswith("invalid deploy config: spec.snowflake.functionName:")
    assert json.loads(capsys.readouterr().out) == outcome


def test_cli_refuses_a_model_other_than_the_approved_one(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(log))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    approved = "sha256:" + "0" * 64
    config = write(tmp_path, modelDir=str(model), approvedModelDigest=approved, connectionDir=str(tmp_path / "none"),
                   owner="team-a/summarize/7f1c2a9e")
    assert main(["--config", str(config)]) == 1
    outcome = json.loads(log.read_text())
    assert outcome["outcome"] == "Failed" and outcome["modelDigest"] is None
    assert outcome["message"] == (
        f"spec.approval.modelDigest: {approved} was approved, but the model in {model} is "
        f"{content_digest(model)}; approve this model to deploy it"
    )


def test_termination_message_fits_kubernetes_limit():
    sample = [{"text": "t" * 160, "summary": "s" * 300}] * 16
    text = termination_message({"outcome": "Deployed", "message": "ok", "verifiedSample": sample})
    assert len(text.encode()) <= 4096 and json.loads(text)["verifiedSample"]


def test_check_model_reads_the_training_metrics_and_refuses_broken_ones(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert check_model(tmp_path) == {}
    (tmp_path / "metrics.json").write_text('{"rougeL": 0.31, "steps": 176, "history": [{"epoch": 1}]}')
    assert check_model(tmp_path) == {"rougeL": 0.31, "steps": 176}
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DeployError, match="modelDir: metrics.json is not readable JSON"):
        check_model(tmp_path)
