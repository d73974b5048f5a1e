"""floe-deploy: package a trained model and register it in Snowflake as a vectorized Python UDF.

    floe-deploy --config deploy.json          # deploy (idempotent), verify, record the outcome
    floe-deploy --config deploy.json --drop   # drop the function (deletionPolicy: Delete)
    floe-deploy --config deploy.json --predict '["text", ...]'   # call the deployed function on these rows

Steps: validate the config and every Snowflake name; refuse a model other than the approved one; load
the connection Secret; zip the model directory (deterministically, so its content digest names it) and
check the zip loads and summarizes a sample with the UDF's own handler, and time it per row to choose the
largest batch Snowflake may send (within its per-batch time limit, with a margin); skip everything if the function
already serves this digest; otherwise upload the zip and the handler to the stage, register the function
under a staging name, call it on sample rows through the DataFrame API, and only then replace the real
function and drop the staging one. When the target name changed, the previous function is dropped last.

Verified means more than one string per row: every sample row's summary must be plausible (not blank,
not the input echoed back, at most maxNewTokens words); otherwise the deploy fails with reason
ImplausibleOutput and the function is not replaced. `--predict` calls the deployed function exactly as
verification does (through the DataFrame API of the same target: in local mode the emulator re-created from
the local "account", localStateDir, which the deploy Job keeps on the models volume).

Ownership: each function's COMMENT records its digest and its owner (`owner`, the SnowflakeDeployment's
namespace/name/uid). A function whose comment names another owner, or that has no floe comment at all,
is never replaced or dropped.

The outcome ({outcome, functionName, modelDigest, verifiedSample, message}; perRowLatencyMs and maxBatchSize
when it deployed, reason when it failed; {outcome: Predicted, functionName, rows} for --predict) is printed
as JSON on stdout
and written to the termination message file (FLOE_TERMINATION_LOG, default /dev/termination-log).
Progress goes to stderr as JSON lines. No secret value is ever part of either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from floe_contract.deployment import DIGEST_PATTERN, STAGING_INFIX, FunctionTarget, Generation
from floe_contract.paths import SNOWFLAKE_DIR, TERMINATION_LOG
from pydantic import Field, ValidationError, field_validator

from floe_trainer import artifacts, udf_handler
from floe_trainer.field_errors import DEPLOY_FIELDS, describe
from floe_trainer.identifiers import (
    OWNER,
    FunctionName,
    IdentifierError,
    qualified_function,
    stage_location,
)
from floe_trainer.snowflake_session import (
    ConnectionSettings,
    ExistingFunction,
    FunctionSpec,
    SnowflakeTarget,
    open_target,
    read_connection_dir,
    scrub,
)

DEFAULT_TERMINATION_LOG = TERMINATION_LOG
# Exit codes the deploy Job's pod failure policy reads: a refused config and a failure a retry would repeat
# end the Job at once; any other failure is retried.
EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_WOULD_FAIL_AGAIN = 1, 2, 3
TERMINATION_LOG_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
# The UDF's PACKAGES: names in Snowflake's Anaconda channel, and the version series the handler is written
# and tested for (this image's versions are not copied: the warehouse may not have them). Checked against the
# account's INFORMATION_SCHEMA.PACKAGES before the function is created; Snowflake takes the newest match.
UDF_PACKAGES = {
    "numpy": "2.*",
    "pandas": "2.*",
    "pytorch": "2.*",  # import torch
    "transformers": "5.*",
    "sentencepiece": "0.2.*",  # the T5 tokenizer
    "onnx": "1.*",  # torch.onnx.export, for backend onnx
    "onnxruntime": "1.*",
}
# Snowflake stops a vectorized UDF's batch after 60 s. A batch may use half of it: the rest is the margin
# for a warehouse CPU slower than the deploy pod's, and for the model's loading in a process's first batch.
BATCH_TIME_LIMIT_S = 60.0
BATCH_TIME_SHARE = 0.5
LATENCY_ROWS = 8  # rows timed together: fewer than a full batch, so the per-row figure errs on the slow side
MAX_BATCH_SIZE = 1024  # Snowflake's batches stay below this whatever the latency: memory, not time
SAMPLE_ARTICLES = [
    "The city council approved a new budget on Tuesday that raises spending on public transport by ten "
    "percent and funds two new bus lines, after a debate that lasted more than six hours.",
    "Heavy rain flooded several streets in the capital on Monday, forcing schools to close and delaying "
    "trains for hours, while the weather office warned of more storms later in the week.",
    "The company said its quarterly profit rose sharply on strong demand for its phones, and it plans to "
    "hire five hundred engineers at a new research centre next year.",
]


class ReplacePolicy(StrEnum):
    if_changed = "IfChanged"  # replace the function when the model digest differs
    always = "Always"  # register and verify again even for the same digest
    never = "Never"  # refuse to replace a function that serves another model


class DeployConfig(FunctionTarget):
    """The SnowflakeDeployment's target (the contract's FunctionTarget), and what only this deploy has."""

    version: Literal["v1"]
    model_dir: Path = Field(description="save_pretrained model + tokenizer (+ metrics.json)")
    sample_rows: list[str] | int = Field(2, description="texts to verify with, or how many built-in ones")
    replace: ReplacePolicy = ReplacePolicy.if_changed
    connection_dir: Path = Path(SNOWFLAKE_DIR)
    local_state_dir: Path | None = Field(None, description="the local account: the emulator's functions and stage")
    login_timeout_seconds: int = Field(60, ge=1, le=600)
    generation: Generation = Generation()
    owner: str | None = Field(None, description="namespace/name/uid of the SnowflakeDeployment")
    previous_function: str | None = Field(None, description="DB.SCHEMA.FUNCTION this deployment deployed before")
    approved_model_digest: str | None = Field(None, pattern=DIGEST_PATTERN)

    @field_validator("owner")
    @classmethod
    def _valid_owner(cls, value: str | None) -> str | None:
        if value is not None and not OWNER.fullmatch(value):
            raise ValueError(f"{value!r} is not namespace/name/uid")
        return value

    @field_validator("previous_function")
    @classmethod
    def _valid_previous(cls, value: str | None) -> str | None:
        if value is not None:
            qualified_function(value, "previousFunction")
        return value

    @field_validator("sample_rows")
    @classmethod
    def _some_samples(cls, value: list[str] | int) -> list[str] | int:
        if isinstance(value, int) and not 1 <= value <= len(SAMPLE_ARTICLES):
            raise ValueError(f"a count must be between 1 and {len(SAMPLE_ARTICLES)}")
        if isinstance(value, list) and not (1 <= len(value) <= 16 and all(text.strip() for text in value)):
            raise ValueError("give 1 to 16 non-empty texts")
        return value

    @property
    def function(self) -> FunctionName:
        return FunctionName.of(self.database, self.schema_, self.function_name)

    @property
    def previous(self) -> FunctionName | None:
        return qualified_function(self.previous_function, "previousFunction") if self.previous_function else None

    @property
    def samples(self) -> list[str]:
        return SAMPLE_ARTICLES[: self.sample_rows] if isinstance(self.sample_rows, int) else list(self.sample_rows)


class DeployError(RuntimeError):
    reason = "DeployFailed"
    would_fail_again = False  # a connection or the account may recover; the Job retries


class TooSlowError(DeployError):
    reason = "TooSlowForBatchLimit"
    would_fail_again = True


class UnresolvablePackageError(DeployError):
    reason = "UnresolvablePackage"
    would_fail_again = True


class ImplausibleOutputError(DeployError):
    reason = "ImplausibleOutput"
    would_fail_again = True


def log(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


def deployment_digest(model_dir: Path, generation: dict) -> str:
    """What the function serves, recorded with it: the model (its FineTuneJob's modelDigest) and the
    generation settings packaged with it."""
    settings = json.dumps(generation, sort_keys=True)
    return hashlib.sha256(f"{artifacts.content_digest(model_dir)}\n{settings}".encode()).hexdigest()


def package_model(model_dir: Path, digest: str, generation: dict, destination: Path) -> Path:
    """The UDF's model import: model/ plus floe_udf.json, with fixed timestamps (same model, same bytes)."""
    zip_path = destination / udf_handler.MODEL_ZIP
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:

        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)

        add(udf_handler.SETTINGS_FILE, json.dumps({"digest": digest, "generation": generation}).encode())
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            add(f"{udf_handler.MODEL_SUBDIR}/{path.relative_to(model_dir).as_posix()}", path.read_bytes())
    return zip_path


def check_model(model_dir: Path) -> dict:
    """Fail early, naming the field, when modelDir is not a saved model; returns the training's scalar
    metrics (its metrics.json, when the trainer wrote one) for the log."""
    if not model_dir.is_dir():
        raise DeployError(f"modelDir: {model_dir} is not a directory")
    if not (model_dir / "config.json").is_file():
        raise DeployError(f"modelDir: {model_dir} has no config.json (expected a save_pretrained model)")
    metrics_file = model_dir / "metrics.json"
    if not metrics_file.is_file():
        return {}
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DeployError(f"modelDir: {metrics_file.name} is not readable JSON: {error}") from None
    if not isinstance(metrics, dict):
        raise DeployError(f"modelDir: {metrics_file.name} is not a JSON object")
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def summarize_locally(zip_path: Path, texts: list[str]) -> list[str]:
    """Run the packaged model with the UDF's own handler code before anything is uploaded."""
    try:
        summaries = udf_handler.summarizer_for(str(zip_path)).summarize(texts)
    except Exception as error:  # noqa: BLE001 - any load/generate failure means the model is unusable
        raise DeployError(f"modelDir: the model does not load or summarize: {type(error).__name__}: {error}") from None
    if not all(isinstance(summary, str) for summary in summaries):
        raise DeployError("modelDir: the model did not return text for the sample")
    return summaries


def choose_max_batch_size(seconds_per_row: float) -> int:
    """The most rows a batch may hold so that it ends within its share of Snowflake's per-batch limit;
    refuses a model that cannot score one row in time."""
    budget = BATCH_TIME_LIMIT_S * BATCH_TIME_SHARE
    if seconds_per_row > budget:
        raise TooSlowError(
            f"the model takes {seconds_per_row:.1f} s per row (measured on the deploy pod: rows of sourceMaxLength "
            f"tokens decoded to maxNewTokens); a batch may take {budget:.0f} s ({BATCH_TIME_SHARE:.0%} of "
            f"Snowflake's {BATCH_TIME_LIMIT_S:.0f} s per-batch limit), so not even one row fits: lower "
            "generation.maxNewTokens or sourceMaxLength, or deploy a smaller model"
        )
    return max(1, min(MAX_BATCH_SIZE, int(budget / seconds_per_row)))


def measure_batch_size(zip_path: Path, samples: list[str]) -> tuple[float, int]:
    """(seconds per row, max batch size) from the packaged model run on this pod with the UDF's handler."""
    summarize_locally(zip_path, samples[:1])  # loads the model (not timed: a process does it once)
    seconds_per_row = udf_handler.summarizer_for(str(zip_path)).seconds_per_row(LATENCY_ROWS)
    return seconds_per_row, choose_max_batch_size(seconds_per_row)


def pinned_packages() -> tuple[str, ...]:
    return tuple(f"{name}=={version}" for name, version in sorted(UDF_PACKAGES.items()))


def check_packages(available: dict[str, list[str]]) -> None:
    """Refuse, naming each one, the declared packages that no available version matches."""
    missing = [
        f"{name}=={wanted} (available: {', '.join(sorted(available.get(name, []))) or 'none'})"
        for name, wanted in sorted(UDF_PACKAGES.items())
        if not any(fnmatchcase(version, wanted) for version in available.get(name, []))
    ]
    if missing:
        raise UnresolvablePackageError(
            f"the UDF's PACKAGES cannot be resolved by Snowflake's Anaconda channel: {'; '.join(missing)}"
        )


def call_function(target: SnowflakeTarget, function: FunctionName, texts: list[str]) -> list[str]:
    """The function's output for each text, one string per row, called through the DataFrame API: what
    verification and --predict both run."""
    summaries = target.call(function, texts)
    if len(summaries) != len(texts) or not all(isinstance(s, str) for s in summaries):
        raise DeployError(f"{function.qualified} failed: expected one text per row, got {summaries!r}"[:2000])
    return summaries


def implausible(text: str, summary: str, max_new_tokens: int) -> str | None:
    """Why a summary cannot be the model's answer to the text, or None. A word is at least one token, so
    more words than maxNewTokens cannot come from the model's generation."""
    if not summary.strip():
        return "is blank"
    if summary.strip() == text.strip():
        return "repeats the input"
    words = len(summary.split())
    if words > max_new_tokens:
        return f"has {words} words, more than maxNewTokens ({max_new_tokens}) tokens"
    return None


def verify(target: SnowflakeTarget, function: FunctionName, samples: list[str], max_new_tokens: int) -> list[dict]:
    """Call the function on the sample rows; every summary must be plausible."""
    try:
        summaries = call_function(target, function, samples)
    except DeployError as error:
        raise DeployError(f"verification of {error}") from None
    problems = [
        f"row {i + 1} {why} ({summary[:80]!r})"
        for i, (text, summary) in enumerate(zip(samples, summaries, strict=True))
        if (why := implausible(text, summary, max_new_tokens))
    ]
    if problems:
        raise ImplausibleOutputError(
            f"verification of {function.qualified} failed: the summary of {'; '.join(problems)}"
        )
    return [{"text": text[:160], "summary": summary[:300]} for text, summary in zip(samples, summaries, strict=True)]


def predict(config: DeployConfig, target: SnowflakeTarget, texts: list[str]) -> dict:
    """The deployed function's summaries of ``texts``, called as verification calls it."""
    function = config.function
    if target.existing(function) is None:
        raise DeployError(f"{function.qualified} is not deployed (nothing to call)")
    summaries = call_function(target, function, texts)
    rows = [{"text": text, "summary": summary} for text, summary in zip(texts, summaries, strict=True)]
    return {"outcome": "Predicted", "functionName": function.qualified, "rows": rows}


def owner_text(owner: str | None) -> str:
    return owner or "no recorded owner (deployed by an older floe)"


def check_owner(function: FunctionName, found: ExistingFunction | None, owner: str | None, action: str) -> None:
    """Refuse to touch a function that this deployment does not own."""
    if found is None:
        return
    recorded = found.floe
    if recorded is None:
        comment = (found.comment or "")[:120]
        raise DeployError(
            f"refusing to {action} {function.qualified}: floe did not create it (its comment is {comment!r})"
        )
    if recorded.owner != owner:
        raise DeployError(
            f"refusing to {action} {function.qualified}: it belongs to {owner_text(recorded.owner)}, "
            f"not to {owner_text(owner)}"
        )


def check_approval(config: DeployConfig, model_digest: str) -> None:
    if config.approved_model_digest is not None and model_digest != config.approved_model_digest:
        raise DeployError(
            f"spec.approval.modelDigest: {config.approved_model_digest} was approved, but the model in "
            f"{config.model_dir} is {model_digest}; approve this model to deploy it"
        )


def drop_previous(config: DeployConfig, target: SnowflakeTarget) -> str:
    """Drop the function this deployment served under its previous name; another owner's is left alone.
    Returns what happened, for the outcome's message."""
    previous = config.previous
    if previous is None or previous == config.function:
        return ""
    found = target.existing(previous)
    if found is None:
        return ""
    try:
        check_owner(previous, found, config.owner, "drop the previous function")
    except DeployError as refused:
        log("previous-kept", function=previous.qualified, reason=str(refused))
        return f"; kept {previous.qualified}, which it does not own"
    target.drop_function(previous)
    log("previous-dropped", function=previous.qualified)
    return f"; dropped the previous function {previous.qualified}"


def deploy(config: DeployConfig, target: SnowflakeTarget) -> dict:
    function = config.function
    log("model", trainedMetrics=check_model(config.model_dir))
    # The model's own digest, as its FineTuneJob reports it, so the two statuses can be matched.
    model_digest = artifacts.content_digest(config.model_dir)
    check_approval(config, model_digest)
    generation = config.generation.model_dump(by_alias=True, exclude_none=True)
    max_new_tokens = generation.get("maxNewTokens", udf_handler.DEFAULT_SETTINGS["maxNewTokens"])
    digest = deployment_digest(config.model_dir, generation)
    result = {"functionName": function.qualified, "modelDigest": model_digest}

    found = target.existing(function)
    check_owner(function, found, config.owner, "replace")
    existing = found.floe.digest if found else None
    if existing == digest and config.replace != ReplacePolicy.always:
        log("unchanged", function=function.qualified)
        sample = verify(target, function, config.samples, max_new_tokens)
        return {
            "outcome": "Unchanged",
            **result,
            "verifiedSample": sample,
            "message": "the function already serves this model" + drop_previous(config, target),
        }
    if existing is not None and existing != digest and config.replace == ReplacePolicy.never:
        raise DeployError(f"{function.qualified} serves another model (sha256:{existing}) and replace is Never")

    check_packages(target.available_packages(sorted(UDF_PACKAGES)))
    staging = function.with_suffix(f"{STAGING_INFIX}{digest[:12]}")
    check_owner(staging, target.existing(staging), config.owner, "replace")
    with tempfile.TemporaryDirectory(prefix="floe-deploy-") as scratch:
        zip_path = package_model(config.model_dir, digest, generation, Path(scratch))
        log("packaged", bytes=zip_path.stat().st_size, digest=digest)
        seconds_per_row, max_batch_size = measure_batch_size(zip_path, config.samples)
        batch_file = Path(scratch) / udf_handler.BATCH_FILE
        batch_file.write_text(json.dumps({"maxBatchSize": max_batch_size}))
        log("model-checked", secondsPerRow=round(seconds_per_row, 4), maxBatchSize=max_batch_size)
        stage_dir = stage_location(
            config.database, config.schema_, config.stage, "floe", function.bare_name, digest[:16]
        )
        target.ensure_stage(config.database, config.schema_, config.stage)
        target.upload(zip_path, stage_dir)
        target.upload(Path(udf_handler.__file__), stage_dir)
        target.upload(batch_file, stage_dir)
        log("uploaded", stage=stage_dir)

    spec = FunctionSpec(
        function=staging,
        model_zip=f"{stage_dir}/{udf_handler.MODEL_ZIP}",
        handler_module=f"{stage_dir}/{Path(udf_handler.__file__).name}",
        batch_file=f"{stage_dir}/{udf_handler.BATCH_FILE}",
        max_batch_size=max_batch_size,
        packages=pinned_packages(),
        runtime_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        digest=digest,
        owner=config.owner,
    )
    target.create_function(spec)
    try:
        sample = verify(target, staging, config.samples, max_new_tokens)
        log("verified", function=staging.qualified)
        # again right before the replace: another owner may have created the function meanwhile
        check_owner(function, target.existing(function), config.owner, "replace")
        target.create_function(FunctionSpec(**{**spec.__dict__, "function": function}))
    finally:
        target.drop_function(staging)
    found = target.existing(function)
    if found is None or found.floe != spec.comment:
        raise DeployError(f"{function.qualified} does not report {spec.comment.render()!r} after the replace")
    verb = "replaced a function serving another model" if existing else "created the function"
    message = f"verified, then {verb}" + drop_previous(config, target)
    measured = {"perRowLatencyMs": round(seconds_per_row * 1000, 1), "maxBatchSize": max_batch_size}
    return {"outcome": "Deployed", **result, **measured, "verifiedSample": sample, "message": message}


def drop(config: DeployConfig, target: SnowflakeTarget) -> dict:
    """Drop the function (and the previous one, when the target changed); refuse another owner's."""
    function = config.function
    previous = drop_previous(config, target)
    found = target.existing(function)
    check_owner(function, found, config.owner, "drop")
    if found is not None:
        target.drop_function(function)
    return {
        "outcome": "Dropped",
        "functionName": function.qualified,
        "modelDigest": None,
        "verifiedSample": [],
        "message": ("function dropped" if found else "there was no function to drop") + previous,
    }


def termination_message(result: dict) -> str:
    """The result as JSON, shortened to what Kubernetes keeps of a termination message."""
    result = dict(result)
    text = json.dumps(result)
    rows = "rows" if "rows" in result else "verifiedSample"
    while len(text.encode()) > TERMINATION_LOG_LIMIT and result.get(rows):
        result[rows] = result[rows][:-1]
        text = json.dumps(result)
    if len(text.encode()) > TERMINATION_LOG_LIMIT:
        result["message"] = result["message"][:1000]
        text = json.dumps(result)
    return text


def write_outcome(result: dict) -> None:
    """The whole result on stdout (the pod's log: every predicted row), as much as fits in the
    termination message."""
    print(json.dumps(result), flush=True)
    path = os.environ.get("FLOE_TERMINATION_LOG", DEFAULT_TERMINATION_LOG)
    try:
        Path(path).write_text(termination_message(result))
    except OSError as error:
        log("termination-log-unwritable", path=path, error=type(error).__name__)


def predict_rows(text: str) -> list[str]:
    """--predict's JSON: a non-empty list of texts, none of them blank."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DeployError(f"--predict: not JSON ({error})") from None
    if not isinstance(rows, list) or not rows:
        raise DeployError("--predict: expected a JSON list of texts")
    blank = [i + 1 for i, row in enumerate(rows) if not isinstance(row, str) or not row.strip()]
    if blank:
        raise DeployError(f"--predict: row(s) {blank} are not non-blank texts")
    return rows


def load_config(path: Path) -> DeployConfig:
    try:
        return DeployConfig.model_validate_json(path.read_text())
    except OSError as error:
        raise DeployError(f"--config: cannot read {path}: {error.strerror}") from None
    except ValidationError as error:
        # Named as the SnowflakeDeployment's fields: the operator renders this config from its spec.
        raise DeployError(f"invalid deploy config: {describe(error, DEPLOY_FIELDS, 'deploy config')}") from None


def run(config: DeployConfig, drop_function: bool, secrets: list[str], rows: list[str] | None = None) -> dict:
    settings: ConnectionSettings = read_connection_dir(config.connection_dir, config.mode)
    secrets.extend(settings.secret_values())
    log("connecting", mode=settings.mode)
    target = open_target(settings, config.local_state_dir, config.login_timeout_seconds)
    try:
        if rows is not None:
            return predict(config, target, rows)
        return drop(config, target) if drop_function else deploy(config, target)
    finally:
        target.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floe-deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="deploy config JSON (version v1)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--drop", action="store_true", help="drop the function instead of deploying")
    action.add_argument("--predict", metavar="JSON", help="call the deployed function on a JSON list of texts")
    args = parser.parse_args(argv)
    secrets: list[str] = []
    failed = {"outcome": "Failed", "functionName": None, "modelDigest": None, "verifiedSample": []}
    try:
        config = load_config(args.config)
        rows = predict_rows(args.predict) if args.predict is not None else None
    except DeployError as error:
        write_outcome({**failed, "message": str(error)})
        return EXIT_BAD_CONFIG
    try:
        result = run(config, args.drop, secrets, rows)
    except (DeployError, IdentifierError, ValueError) as error:
        result = {
            **failed,
            "functionName": config.function.qualified,
            "reason": getattr(error, "reason", DeployError.reason),
            "message": scrub(str(error), secrets),
        }
        if getattr(error, "would_fail_again", False):
            write_outcome(result)
            return EXIT_WOULD_FAIL_AGAIN
    except Exception as error:  # noqa: BLE001 - report any failure as the outcome, never a raw traceback
        message = scrub(f"{type(error).__name__}: {error}", secrets)
        result = {**failed, "functionName": config.function.qualified, "message": message}
    write_outcome(result)
    return 0 if result["outcome"] != "Failed" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
