"""The trainer's job config (version v1): what the operator renders into /etc/floe/job.json.

The FineTuneJob's training settings as the contract declares them (floe_contract.training: the same models
its CRD embeds), plus what only a run has: the job's name, where checkpoints and the model go, the metrics
port. Validated before anything heavy is imported, so a bad config fails in well under a second with an
error that names the field. Keys are camelCase, unknown keys are rejected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from floe_contract.base import FloeModel
from floe_contract.paths import OUTPUT_DIR
from floe_contract.training import Checkpoint, Dataset, Evaluation, EvaluationEvery, ModelSource, ScratchShape, Training
from pydantic import Field, ValidationError

from floe_trainer.field_errors import TRAINER_FIELDS, describe

# The contract's models that scripts and tests take from here, with the config they belong to.
__all__ = ["ConfigError", "EvaluationEvery", "ScratchShape", "TrainerConfig", "load_config", "parse_config"]


class JobRef(FloeModel):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class CheckpointConfig(Checkpoint):
    """spec.checkpoint, and the directory of this job's checkpoints."""

    dir: str = Field(f"{OUTPUT_DIR}/checkpoints", min_length=1)


class Output(FloeModel):
    dir: str = Field(f"{OUTPUT_DIR}/model", min_length=1)


class TrainerConfig(FloeModel):
    version: Literal["v1"]
    job: JobRef | None = None
    model: ModelSource
    dataset: Dataset
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    checkpoint: CheckpointConfig = CheckpointConfig()
    output: Output = Output()
    metrics_port: int = Field(9090, ge=0, le=65535)


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message names the offending field."""


def parse_config(raw: object) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("invalid FineTuneJob spec for this trainer image: "
                          + describe(err, TRAINER_FIELDS, "trainer config")) from None


def load_config(path: Path) -> TrainerConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read trainer config {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"trainer config {path} is not JSON: {err}") from None
    return parse_config(raw)
