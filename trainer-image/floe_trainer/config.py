"""The trainer's job config (version v1): what the operator renders into /etc/floe/job.json.

Validated before anything heavy is imported, so a bad config fails in well under a second with an
error that names the field. Keys are camelCase, unknown keys are rejected.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from floe_trainer.field_errors import TRAINER_FIELDS, describe


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class JobRef(Model):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class HubSource(Model):
    id: str = Field(min_length=1, description="Hugging Face model id, e.g. t5-small")
    revision: str | None = None


class ScratchShape(StrEnum):
    tiny = "tiny"
    t5_small = "t5-small"
    t5_base = "t5-base"


class ScratchSource(Model):
    shape: ScratchShape = ScratchShape.tiny
    vocab_size: int = Field(2000, ge=64, le=64000, description="SentencePiece pieces (capped by the corpus)")


class ModelSource(Model):
    """Exactly one of hub, path (a local directory / volume) or scratch (random weights from a shape)."""

    hub: HubSource | None = None
    path: str | None = Field(None, min_length=1)
    scratch: ScratchSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [k for k in ("hub", "path", "scratch") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of hub, path, scratch (got {given or 'none'})")
        return self


class FileSource(Model):
    """A CSV / Parquet / JSON-lines file (by suffix) at a local path or an fsspec URI (s3://, gs://, ...)."""

    path: str | None = Field(None, min_length=1)
    uri: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> FileSource:
        if (self.path is None) == (self.uri is None):
            raise ValueError("set exactly one of path, uri")
        return self


class SnowflakeSource(Model):
    table: str | None = Field(None, min_length=1)
    query: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SnowflakeSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of table, query")
        return self


class Dataset(Model):
    file: FileSource | None = None
    snowflake: SnowflakeSource | None = None
    text_column: str = Field("ctext", min_length=1, description="the document column")
    summary_column: str = Field("text", min_length=1, description="the summary column")
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 42
    max_rows: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _exactly_one(self) -> Dataset:
        if (self.file is None) == (self.snowflake is None):
            raise ValueError("set exactly one of file, snowflake")
        return self


class Precision(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Toggle(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


def _batch_size(value: object) -> int | str:
    if value == "auto" or (type(value) is int and 1 <= value <= 4096):
        return value
    raise ValueError("must be auto or a number from 1 to 4096")


class Training(Model):
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: Annotated[int | str, PlainValidator(_batch_size)] = Field(
        "auto", description="samples per process per micro-step; auto: the largest that fits the GPU, 8 on CPU")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    gradient_accumulation_steps: int | None = Field(None, ge=1, le=1024, description="1 unless derived from "
                                                    "effective_batch_size")
    effective_batch_size: int | None = Field(None, ge=1, le=65536, description="samples per optimizer step")
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    source_max_length: int = Field(512, ge=8, le=8192)
    target_max_length: int = Field(150, ge=4, le=4096)
    precision: Precision = Precision.auto
    compile: Toggle = Toggle.auto
    seed: int = 42
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")

    @model_validator(mode="after")
    def _one_way_to_accumulate(self) -> Training:
        if self.gradient_accumulation_steps is not None and self.effective_batch_size is not None:
            raise ValueError("set at most one of gradientAccumulationSteps, effectiveBatchSize")
        return self


class EvaluationEvery(Model):
    """When to evaluate during training: at most one of epochs, steps, minutes.

    None set (auto): every 10 minutes of training at the earliest, and no sooner than nine times the last
    evaluation's duration, so evaluation stays under about 10% of the wall time.
    """

    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _at_most_one(self) -> EvaluationEvery:
        given = [k for k in ("epochs", "steps", "minutes") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of epochs, steps, minutes (got {given})")
        return self


class Evaluation(Model):
    """Validation loss and ROUGE; during training as `every` says, and always once at the end."""

    rouge: bool = True
    every: EvaluationEvery = EvaluationEvery()
    max_samples: int = Field(64, ge=1, description="validation rows for ROUGE during training")
    final_max_samples: int | None = Field(None, ge=1, description="rows for the final ROUGE (None: all)")
    num_beams: int = Field(2, ge=1, le=16)
    max_new_tokens: int = Field(150, ge=1, le=4096)
    batch_size: Annotated[int | str, PlainValidator(_batch_size)] = Field(
        "auto", description="rows per generation / validation-loss batch; auto: 4x the training batch on a GPU, "
                            "64 on CPU")


class Checkpoint(Model):
    """Written in the background from a host-memory snapshot; also on SIGTERM before exiting."""

    dir: str = Field("/var/run/floe/output/checkpoints", min_length=1)
    every_minutes: float | None = Field(10.0, gt=0)
    every_steps: int | None = Field(None, ge=1)
    keep: int = Field(2, ge=1)


class Output(Model):
    dir: str = Field("/var/run/floe/output/model", min_length=1)


class TrainerConfig(Model):
    version: Literal["v1"]
    job: JobRef | None = None
    model: ModelSource
    dataset: Dataset
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    checkpoint: Checkpoint = Checkpoint()
    output: Output = Output()
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9090


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
