"""A FineTuneJob's training settings: the model to start from, the data, optimisation, evaluation and
checkpoints. The FineTuneJob CRD embeds these models, and the trainer's config (floe_trainer.config) is them
plus runtime paths, so a field added here reaches both."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, PlainValidator, WithJsonSchema, model_validator

from floe_contract.base import FloeModel, LocalObjectReference, cel
from floe_contract.paths import DATA_DIR

# Snowflake table name, optionally qualified: DB.SCHEMA.TABLE.
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,254}(\.[A-Za-z_][A-Za-z0-9_$]{0,254}){0,2}$"
URI_PATTERN = r"^[a-z][a-z0-9+.-]*://\S+$"
MAX_BATCH_SIZE = 4096


def _batch_size(value: object) -> int | str:
    if value == "auto" or (type(value) is int and 1 <= value <= MAX_BATCH_SIZE):
        return value
    raise ValueError(f"must be auto or a number from 1 to {MAX_BATCH_SIZE}")


# A number of examples, or "auto": int-or-string in the CRD, checked by CEL as the user wrote it.
BatchSize = Annotated[
    int | str,
    PlainValidator(_batch_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                cel(
                    f"type(self) == string ? self == 'auto' : (self >= 1 && self <= {MAX_BATCH_SIZE})",
                    f"must be auto or a number from 1 to {MAX_BATCH_SIZE}",
                )
            ],
        }
    ),
]


class ScratchShape(StrEnum):
    tiny = "tiny"
    t5_small = "t5-small"
    t5_base = "t5-base"


class Precision(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Toggle(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


class HubModel(FloeModel):
    """A model from a Hugging Face hub (the cluster must reach it)."""

    id: str = Field(min_length=1, max_length=256, description="Model id, e.g. t5-small or google/flan-t5-base.")
    revision: str | None = Field(
        default=None, min_length=1, max_length=256, description="Branch, tag or commit; latest when unset."
    )


class ScratchModel(FloeModel):
    """A T5 shape with random weights and a tokenizer trained on the training text (tests, demos)."""

    shape: ScratchShape = Field(description="Architecture size.")
    vocab_size: int = Field(
        default=2000, ge=256, le=64000, description="SentencePiece vocabulary size; defaults to 2000."
    )


class ModelSource(FloeModel):
    """The model to start from: exactly one of hub, path or scratch."""

    one_of = ("hub", "path", "scratch")

    hub: HubModel | None = Field(default=None, description="A Hugging Face hub model.")
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="A model directory inside the trainer container (air-gapped).",
    )
    scratch: ScratchModel | None = Field(default=None, description="A fresh model of a given T5 shape.")


class FileDataset(FloeModel):
    """A CSV, Parquet or JSON-lines file: a path on a volume or a URI."""

    one_of = ("path", "uri")
    cel_rules = (
        cel("!has(self.claimName) || has(self.path)", "claimName needs path (a file on the claim)"),
        cel(
            "!has(self.claimName) || !has(self.path) || (!self.path.startsWith('/') && !self.path.contains('..'))",
            "path must be relative to the claim's mount (no leading '/', no '..')",
        ),
    )

    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=f"File path; relative to {DATA_DIR} when claimName is set.",
    )
    uri: str | None = Field(
        default=None, pattern=URI_PATTERN, max_length=4096, description="File URI, e.g. s3://bucket/news.parquet."
    )
    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=f"PersistentVolumeClaim holding the file, mounted read-only at {DATA_DIR}.",
    )

    @property
    def local_path(self) -> str | None:
        """The file's path in the trainer's container: under DATA_DIR when it is on a claim."""
        if self.path is None or self.claim_name is None:
            return self.path
        return f"{DATA_DIR}/{self.path}"


class SnowflakeDataset(FloeModel):
    """A Snowflake table or query read through Snowpark."""

    one_of = ("table", "query")

    table: str | None = Field(
        default=None, pattern=TABLE_PATTERN, description="Table name, optionally DATABASE.SCHEMA.TABLE."
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="One read-only query: SELECT or WITH, no ';' (nor control characters but tabs and line breaks). "
        "The trainer runs it as a subquery, so Snowflake refuses anything else too.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.matches('^\\\\s*(?i:select|with)\\\\s') && !self.contains(';')",
                    "must be one read-only query: it starts with SELECT or WITH and has no ';'",
                ),
                # JSON writes one as six bytes: without them a query takes at most twice its bytes in the
                # trainer's config, which travels in a pod annotation of bounded size.
                cel(
                    "!self.matches('[\\\\x00-\\\\x08\\\\x0b\\\\x0c\\\\x0e-\\\\x1f]')",
                    "must have no control characters but tabs and line breaks",
                ),
            ]
        },
    )
    connection_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Connection Secret; the Project's spec.snowflake.trainingConnectionSecretRef when unset, and "
        "it may name no other (checked at admission).",
    )


class Dataset(FloeModel):
    """Training data: exactly one of file or snowflake, and how to read it."""

    one_of = ("file", "snowflake")

    file: FileDataset | None = Field(default=None, description="A file on a volume or at a URI.")
    snowflake: SnowflakeDataset | None = Field(default=None, description="A Snowflake table or query.")
    text_column: str = Field(
        default="ctext", min_length=1, max_length=255, description="Column with the documents; defaults to ctext."
    )
    summary_column: str = Field(
        default="text",
        min_length=1,
        max_length=255,
        description="Column with the reference summaries; defaults to text.",
    )
    validation_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="Share of rows held out for validation; defaults to 0.1."
    )
    seed: int = Field(default=42, ge=0, description="Seed of the train/validation split; defaults to 42.")
    max_rows: int | None = Field(default=None, ge=2, description="Use at most this many rows.")


class Training(FloeModel):
    """Optimisation settings; the defaults follow the seed recipe, but for the batch, which fits the GPU."""

    cel_rules = (
        cel(
            "!(has(self.gradientAccumulationSteps) && has(self.effectiveBatchSize))",
            "set at most one of gradientAccumulationSteps, effectiveBatchSize",
        ),
    )

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training data; defaults to 3.")
    batch_size: BatchSize = Field(
        default="auto",
        description="Examples per micro-step per process, 1 to 4096 (e.g. 64), or auto: the largest batch that fits "
        "the GPU at the data's longest lengths (an epoch keeps at least 32 steps; 8 on CPU); defaults to auto. "
        "The batch used is reported in status.progress.batchSize.",
    )
    learning_rate: float = Field(default=1e-4, gt=0, le=1, description="Peak AdamW learning rate; defaults to 0.0001.")
    warmup_ratio: float = Field(
        default=0.06, ge=0, lt=1, description="Share of steps spent warming up; defaults to 0.06."
    )
    gradient_accumulation_steps: int | None = Field(
        default=None, ge=1, le=1024,
        description="Micro-steps per optimizer update; defaults to 1, or derived from effectiveBatchSize.",
    )
    effective_batch_size: int | None = Field(
        default=None, ge=1, le=65536,
        description="Examples per optimizer update across processes and micro-steps: kept exactly, with gradient "
        "accumulation when the batch that fits is smaller. Excludes gradientAccumulationSteps.",
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm; defaults to 1.")
    source_max_length: int = Field(default=512, ge=8, le=8192, description="Document tokens kept; defaults to 512.")
    target_max_length: int = Field(default=150, ge=4, le=4096, description="Summary tokens kept; defaults to 150.")
    precision: Precision = Field(
        default=Precision.auto,
        description="Numeric precision; defaults to auto, which picks bf16 where the GPU supports it.",
    )
    compile: Toggle = Field(
        default=Toggle.auto, description="Use torch.compile; defaults to auto (on GPUs, when it pays off)."
    )
    seed: int = Field(default=42, ge=0, description="Seed of initialisation and shuffling; defaults to 42.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")

    @model_validator(mode="after")
    def _one_way_to_accumulate(self) -> Training:
        if self.gradient_accumulation_steps is not None and self.effective_batch_size is not None:
            raise ValueError("set at most one of gradientAccumulationSteps, effectiveBatchSize")
        return self


class EvaluationEvery(FloeModel):
    """When to evaluate during training: at most one of epochs, steps, minutes. None set: automatically, at most
    every 10 minutes of training and so that evaluation takes under about 10% of the wall time."""

    cel_rules = (
        cel(
            "(has(self.epochs) ? 1 : 0) + (has(self.steps) ? 1 : 0) + (has(self.minutes) ? 1 : 0) <= 1",
            "set at most one of epochs, steps, minutes",
        ),
    )

    epochs: int | None = Field(default=None, ge=1, le=1000, description="Every this many epochs.")
    steps: int | None = Field(default=None, ge=1, description="Every this many optimizer steps.")
    minutes: float | None = Field(default=None, gt=0, le=10080, description="Every this many minutes of training.")

    @model_validator(mode="after")
    def _at_most_one(self) -> EvaluationEvery:
        if sum(v is not None for v in (self.epochs, self.steps, self.minutes)) > 1:
            raise ValueError("set at most one of epochs, steps, minutes")
        return self


class Evaluation(FloeModel):
    """Evaluation on the validation split during training (as `every` says) and always at the end."""

    rouge: bool = Field(default=True, description="Generate summaries and compute ROUGE-1/2/L; defaults to true.")
    every: EvaluationEvery = Field(
        default_factory=EvaluationEvery,
        description="When to evaluate during training; automatic when empty.",
        json_schema_extra={"default": {}},
    )
    max_samples: int = Field(
        default=64, ge=1, le=100000, description="Validation rows used for ROUGE during training; defaults to 64."
    )
    final_max_samples: int | None = Field(
        default=None, ge=1, description="Validation rows used for the final ROUGE; all of them when unset."
    )
    num_beams: int = Field(default=2, ge=1, le=16, description="Beams when generating summaries; defaults to 2.")
    max_new_tokens: int = Field(
        default=150, ge=1, le=4096, description="Most tokens generated per summary; defaults to 150."
    )
    batch_size: BatchSize = Field(
        default="auto",
        description="Validation rows per generation and validation-loss batch, 1 to 4096 (e.g. 64), or auto: 4 times "
        "the training batch on a GPU (evaluation keeps no activations for a backward pass), 64 on CPU; defaults to "
        "auto.",
    )


class Checkpoint(FloeModel):
    """Checkpointing, so that a restarted pod resumes. Written in the background; also on SIGTERM (preemption)."""

    every_minutes: float | None = Field(
        default=10.0, gt=0, le=10080, description="Checkpoint every this many minutes of the run; defaults to 10."
    )
    every_steps: int | None = Field(default=None, ge=1, description="Also checkpoint every this many optimizer steps.")
    keep: int = Field(default=2, ge=1, le=100, description="Checkpoints kept; defaults to 2.")
