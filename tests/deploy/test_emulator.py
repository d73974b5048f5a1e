"""floe-deploy against Snowpark's local testing emulator: deploy, call, redeploy, replace, drop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from floe_trainer import deploy as deploy_module
from floe_trainer.artifacts import content_digest
from floe_trainer.deploy import (
    DeployConfig,
    DeployError,
    ImplausibleOutputError,
    TooSlowError,
    deploy,
    deployment_digest,
    drop,
)
from floe_trainer.snowflake_session import ConnectionSettings, FunctionSpec, LocalTarget, open_target

FAST = {"maxNewTokens": 4}


def config(model_dir: Path, **overrides) -> DeployConfig:
    return DeployConfig.model_validate(
        {
            "version": "v1",
            "modelDir": str(model_dir),
            "database": "analytics",
            "schema": "public",
            "stage": "models",
            "functionName": "summarize",
            "generation": FAST,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    target = open_target(ConnectionSettings(mode="local"), tmp_path_factory.mktemp("state"))
    yield target
    target.close()


def digest_of(target, function) -> str | None:
    found = target.existing(function)
    return found.floe.digest if found else None


def registered(target) -> set[str]:
    return set(target.session.udf._registry)


def test_deploy_registers_a_function_that_summarizes(target, model_dir):
    result = deploy(config(model_dir), target)
    assert result["outcome"] == "Deployed" and result["functionName"] == '"ANALYTICS"."PUBLIC"."SUMMARIZE"'
    assert [s["text"][:20] for s in result["verifiedSample"]] == ["The city council app", "Heavy rain flooded s"]
    summaries = target.call(config(model_dir).function, ["A storm hit the coast.", "Prices rose again."])
    assert all(isinstance(s, str) for s in summaries) and len(summaries) == 2
    assert registered(target) == {'"ANALYTICS"."PUBLIC"."SUMMARIZE"'}  # the staging function is gone
    # registered with the batch size chosen from the latency measured before the upload
    assert result["perRowLatencyMs"] > 0 and result["maxBatchSize"] >= 1
    assert target.functions['"ANALYTICS"."PUBLIC"."SUMMARIZE"']["max_batch_size"] == result["maxBatchSize"]


def test_redeploying_the_same_model_changes_nothing(target, model_dir):
    before = dict(target.session.udf._registry)
    result = deploy(config(model_dir), target)
    assert result["outcome"] == "Unchanged" and result["verifiedSample"]
    assert target.session.udf._registry == before


def test_a_model_that_cannot_score_one_row_within_the_batch_limit_is_refused(target, model_dir, monkeypatch):
    monkeypatch.setattr(deploy_module, "BATCH_TIME_LIMIT_S", 0.001)  # any model is too slow for this limit
    slow = config(model_dir, functionName="too_slow")
    with pytest.raises(TooSlowError, match="not even one row fits"):
        deploy(slow, target)
    assert target.existing(slow.function) is None and all("TOO_SLOW" not in name for name in registered(target))


class BrokenStaging(LocalTarget):
    """A target whose staged function answers nothing, as a model that fails in Snowflake would."""

    def create_function(self, spec: FunctionSpec) -> None:
        if "STAGING" not in spec.function.qualified:
            return super().create_function(spec)
        from snowflake.snowpark.types import StringType

        self.session.udf.register(
            lambda text: None,
            return_type=StringType(),
            input_types=[StringType()],
            name=spec.function.qualified,
            replace=True,
        )


def test_a_new_model_that_fails_verification_leaves_the_old_one(target, model_dir, other_model_dir):
    old_digest = digest_of(target, config(model_dir).function)
    broken = BrokenStaging(target.session)
    broken.functions = target.functions
    with pytest.raises(DeployError, match="verification of .*SUMMARIZE__FLOE_STAGING_.* failed"):
        deploy(config(other_model_dir), broken)
    assert digest_of(target, config(model_dir).function) == old_digest
    assert registered(target) == {'"ANALYTICS"."PUBLIC"."SUMMARIZE"'}


def test_replace_policy_never_refuses_another_model(target, other_model_dir):
    with pytest.raises(DeployError, match="serves another model .* replace is Never"):
        deploy(config(other_model_dir, replace="Never"), target)


def test_a_new_model_replaces_the_function_after_verification(target, model_dir, other_model_dir):
    result = deploy(config(other_model_dir), target)
    assert result["outcome"] == "Deployed" and "replaced" in result["message"]
    # What its FineTuneJob reports, and not the replaced model's (compared without deploying that one again).
    assert result["modelDigest"] == content_digest(other_model_dir) != content_digest(model_dir)
    generation = config(other_model_dir).generation.model_dump(by_alias=True, exclude_none=True)
    assert digest_of(target, config(other_model_dir).function) == deployment_digest(other_model_dir, generation)
    # the local account keeps the files of the model it serves, not those of the one it replaced
    staged = sorted(p.parent.name for p in (target.state_dir / "stage").rglob("floe_model.zip"))
    assert staged == [deployment_digest(other_model_dir, generation)[:16]]


def test_a_model_whose_summaries_are_blank_is_not_verified(target, mute_model_dir):
    mute = config(mute_model_dir, functionName="mute")
    with pytest.raises(ImplausibleOutputError, match=r"the summary of row 1 is blank \(''\); row 2 is blank"):
        deploy(mute, target)
    assert target.existing(mute.function) is None and all("MUTE" not in name for name in registered(target))


def test_drop_removes_the_function(target, model_dir):
    assert drop(config(model_dir), target)["outcome"] == "Dropped"
    assert digest_of(target, config(model_dir).function) is None
    with pytest.raises(Exception, match="SUMMARIZE"):
        target.call(config(model_dir).function, ["text"])


def test_deployment_digest_follows_the_weights_and_the_generation_settings(model_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in model_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert deployment_digest(copy, {}) == deployment_digest(model_dir, {})
    (copy / "metrics.json").write_text("{}")  # describes the model, is not the model
    assert deployment_digest(copy, {}) == deployment_digest(model_dir, {})
    assert deployment_digest(copy, {"numBeams": 4}) != deployment_digest(model_dir, {})
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert deployment_digest(copy, {}) != deployment_digest(model_dir, {})


def cli_config(tmp_path, model_dir, **overrides) -> dict:
    """floe-deploy's config file for function "DB"."S"."F" on the local emulator (no connection Secret)."""
    return {"version": "v1", "modelDir": str(model_dir), "database": "db", "schema": "s", "stage": "m",
            "functionName": "f", "generation": FAST, "connectionDir": str(tmp_path / "no-secret"), **overrides}


def run_cli(tmp_path, deploy_config: dict, *args) -> tuple[subprocess.CompletedProcess, dict]:
    config_file = tmp_path / "deploy.json"
    config_file.write_text(json.dumps(deploy_config))
    log = tmp_path / "termination-log"
    env = {**os.environ, "FLOE_TERMINATION_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-m", "floe_trainer.deploy", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done, json.loads(log.read_text())


def test_cli_is_idempotent_across_processes(tmp_path, model_dir):
    deploy_config = cli_config(tmp_path, model_dir, sampleRows=["One short article about rain."],
                               localStateDir=str(tmp_path / "state"))
    first, outcome = run_cli(tmp_path, deploy_config)
    assert first.returncode == 0, first.stderr
    assert outcome["outcome"] == "Deployed" and json.loads(first.stdout.splitlines()[-1]) == outcome
    assert isinstance(outcome["verifiedSample"][0]["summary"], str)
    second, again = run_cli(tmp_path, deploy_config)
    assert second.returncode == 0 and again["outcome"] == "Unchanged", second.stderr
    assert again["modelDigest"] == outcome["modelDigest"]
    dropped, gone = run_cli(tmp_path, deploy_config, "--drop")
    assert dropped.returncode == 0 and gone["outcome"] == "Dropped"
    # the local account keeps nothing of a dropped function: neither its record nor its staged files
    assert [p for p in (tmp_path / "state").rglob("*") if p.is_file()] == []


def test_predict_calls_the_deployed_function_in_a_new_process_as_verification_did(tmp_path, model_dir):
    article = "Heavy rain flooded several streets in the capital on Monday, forcing schools to close."
    deploy_config = cli_config(tmp_path, model_dir, sampleRows=[article], localStateDir=str(tmp_path / "account"))
    deployed, outcome = run_cli(tmp_path, deploy_config)
    assert deployed.returncode == 0 and outcome["outcome"] == "Deployed", deployed.stderr
    # the deploy process has ended: only the local account on disk knows the function
    called, predicted = run_cli(tmp_path, deploy_config, "--predict", json.dumps([article, "Prices rose again."]))
    assert called.returncode == 0 and predicted["outcome"] == "Predicted", called.stderr
    assert predicted["functionName"] == '"DB"."S"."F"'
    rows = predicted["rows"]
    assert [row["text"] for row in rows] == [article, "Prices rose again."]
    assert rows[0]["summary"] == outcome["verifiedSample"][0]["summary"] and rows[0]["summary"].strip()
    assert json.loads(called.stdout.splitlines()[-1]) == predicted

    refused, bad = run_cli(tmp_path, deploy_config, "--predict", '["fine", " "]')
    assert refused.returncode == 2 and bad["message"] == "--predict: row(s) [2] are not non-blank texts"
    run_cli(tmp_path, deploy_config, "--drop")
    gone, missing = run_cli(tmp_path, deploy_config, "--predict", '["text"]')
    assert gone.returncode == 1 and missing["message"] == '"DB"."S"."F" is not deployed (nothing to call)'


def test_a_failing_connection_never_shows_the_secret(tmp_path, model_dir):
    secret = tmp_path / "secret"
    secret.mkdir()
    password = "pw-9f3a-DO-NOT-PRINT"
    for key, value in {
        "account": "acme-x1",
        "user": "deployer",
        "password": password,
        "host": "127.0.0.1",
        "port": "1",
    }.items():
        (secret / key).write_text(value)
    done, outcome = run_cli(tmp_path, cli_config(tmp_path, model_dir, connectionDir=str(secret), loginTimeoutSeconds=2))
    assert done.returncode == 1 and outcome["outcome"] == "Failed"
    assert "could not connect to Snowflake account 'acme-x1'" in outcome["message"]
    for text in (done.stdout, done.stderr, json.dumps(outcome)):
        assert password not in text
