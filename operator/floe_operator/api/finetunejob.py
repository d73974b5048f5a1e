"""FineTuneJob: fine-tune a T5 model on a dataset with the trainer image, as a batch/v1 Job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator

from floe_operator.api.common import (
    AGE_COLUMN,
    IMAGE_PATTERN,
    INT32_MAX,
    LABEL_VALUE_PATTERN,
    METADATA_KEY_RULE,
    PHASE_COLUMN,
    BaseStatus,
    FloeModel,
    LocalObjectReference,
    Quantity,
    ResourceKind,
    cel,
    column,
    immutable_fields,
    metadata_key_errors,
    root_name_rule,
)

# Longest name whose derived objects stay valid: the Job `<name>-train` and its indexed pods'
# hostnames `<name>-train-<index>` must be DNS labels (63 characters at most).
MAX_NAME_LENGTH = 50
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


class HubModel(FloeModel):
    """A model from a Hugging Face hub (the cluster must reach it)."""

    id: str = Field(min_length=1, max_length=256, description="Model id, e.g. t5-small or google/flan-t5-base.")
    revision: str | None = Field(
        default=None, min_length=1, max_length=256, description="Branch, tag or commit; latest when unset."
    )


class ScratchModel(FloeModel):
    """A T5 shape with random weights and a tokenizer trained on the training text (tests, demos)."""

    shape: Literal["tiny", "t5-small", "t5-base"] = Field(description="Architecture size.")
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
        description="File path; relative to /var/run/floe/data when claimName is set.",
    )
    uri: str | None = Field(
        default=None, pattern=URI_PATTERN, max_length=4096, description="File URI, e.g. s3://bucket/news.parquet."
    )
    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="PersistentVolumeClaim holding the file, mounted read-only at /var/run/floe/data.",
    )


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
        description="One read-only query: SELECT or WITH, no ';'. The trainer runs it as a subquery, so Snowflake "
        "refuses anything else too.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.matches('^\\\\s*(?i:select|with)\\\\s') && !self.contains(';')",
                    "must be one read-only query: it starts with SELECT or WITH and has no ';'",
                )
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
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Numeric precision; defaults to auto, which picks bf16 where the GPU supports it."
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="Use torch.compile; defaults to auto (on GPUs, when it pays off)."
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


class Resources(FloeModel):
    """What each training worker gets."""

    gpus: int = Field(
        default=1,
        ge=0,
        le=64,
        description="GPUs per worker (nvidia.com/gpu); defaults to 1, so set 0 on a cluster without GPUs (the pods "
        "wait unscheduled otherwise).",
    )
    workers: int = Field(
        default=1, ge=1, le=256, description="Worker pods; defaults to 1, and more than one runs multi-node torchrun."
    )
    cpu: Quantity = Field(default="4", description="CPU per worker, e.g. 2 or 500m; defaults to 4.")
    memory: Quantity = Field(default="16Gi", description="Memory per worker, e.g. 8Gi or 512Mi; defaults to 16Gi.")
    gpu_product: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Required GPU model (node label nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3.",
    )


class Storage(FloeModel):
    """Where checkpoints and the trained model go."""

    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="PVC mounted at /var/run/floe/output; an emptyDir (lost with the pod) when unset.",
    )


class RepositoryCode(FloeModel):
    """Code from the Project's Git repository, run instead of the built-in trainer (floe-train)."""

    cel_rules = (
        cel(
            "!self.workingDir.startsWith('/') && !self.workingDir.contains('..')",
            "workingDir must be relative to the checkout (no leading '/', no '..')",
        ),
    )

    command: list[str] = Field(
        min_length=1,
        max_length=64,
        description="Command run in workingDir of the checkout, e.g. [python, train.py]. The job's config is at "
        "/etc/floe/job.json; with several GPUs or workers it runs under torchrun, once per process.",
    )
    working_dir: str = Field(
        default=".",
        min_length=1,
        max_length=1024,
        description="Directory in the checkout to run the command in; defaults to . (its root).",
    )
    branch: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Branch or tag to check out; the Project's spec.repository.branch when unset.",
    )


# Keys whose prefix belongs to floe or Kubernetes: a pod carrying them could join another workload's
# Service (floe.dev/workspace), pose as floe's, or change its own security profile (AppArmor, seccomp).
RESERVED_KEY_RULE = cel(
    "self.all(k, !k.matches('^([a-z0-9.-]*[.])?(floe[.]dev|kubernetes[.]io|k8s[.]io)/'))",
    "keys with the prefixes floe.dev/, kubernetes.io/ or k8s.io/ (and their subdomains, e.g. app.kubernetes.io/) "
    "are reserved",
)
POD_METADATA_LIMIT = 64
# Kubernetes takes 256 KiB of annotations (keys and values, in bytes) per object; the Job controller adds its own.
POD_ANNOTATIONS_MAX_BYTES = 255 * 1024
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


class PodMetadata(FloeModel):
    """Labels and annotations added to the trainer pods (a service mesh, cost allocation, a node
    simulator's hints); floe's own labels win."""

    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Labels added to the trainer pods; floe.dev/, kubernetes.io/ and k8s.io/ prefixes are reserved. "
        "Values have at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
        json_schema_extra={
            "maxProperties": POD_METADATA_LIMIT,
            "x-kubernetes-validations": [METADATA_KEY_RULE, RESERVED_KEY_RULE],
        },
    )
    annotations: dict[str, Annotated[str, Field(max_length=POD_ANNOTATIONS_MAX_BYTES)]] = Field(
        default_factory=dict,
        description="Annotations added to the trainer pods; floe.dev/, kubernetes.io/ and k8s.io/ prefixes are "
        f"reserved. At most {POD_ANNOTATIONS_MAX_BYTES // 1024} KiB in all.",
        json_schema_extra={
            "maxProperties": POD_METADATA_LIMIT,
            "x-kubernetes-validations": [
                METADATA_KEY_RULE,
                RESERVED_KEY_RULE,
                cel(
                    f"self.map(k, size(k) + size(bytes(self[k]))).sum() <= {POD_ANNOTATIONS_MAX_BYTES}",
                    f"keys and values take at most {POD_ANNOTATIONS_MAX_BYTES // 1024} KiB",
                ),
            ],
        },
    )

    @model_validator(mode="after")
    def _kubernetes_syntax(self) -> PodMetadata:
        for field, values in (("labels", self.labels), ("annotations", self.annotations)):
            if bad := metadata_key_errors(values):
                raise ValueError(f"{field}: {', '.join(map(repr, bad))}: {METADATA_KEY_RULE['message']}")
        if sum(len(k) + len(v.encode()) for k, v in self.annotations.items()) > POD_ANNOTATIONS_MAX_BYTES:
            raise ValueError(f"annotations: keys and values take at most {POD_ANNOTATIONS_MAX_BYTES // 1024} KiB")
        return self


class FineTuneJobSpec(FloeModel):
    """Fine-tune a model on a dataset. Only suspend can change once created: the rest is the Job's, which runs
    as it was created."""

    model: ModelSource = Field(description="The model to start from.")
    dataset: Dataset = Field(description="The training data.")
    training: Training = Field(
        default_factory=Training, description="Optimisation settings.", json_schema_extra={"default": {}}
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Evaluation settings.", json_schema_extra={"default": {}}
    )
    checkpoint: Checkpoint = Field(
        default_factory=Checkpoint, description="Checkpoint settings.", json_schema_extra={"default": {}}
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resources per worker.", json_schema_extra={"default": {}}
    )
    template: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="Template name from the catalog; its trainerImage runs the job unless spec.image is set.",
    )
    compute_profile: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="Compute profile name from the catalog; its resources, GPUs, node selector and tolerations "
        "replace spec.resources' cpu, memory and gpus (workers and gpuProduct still apply).",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=IMAGE_PATTERN,
        description="Trainer image overriding the default.",
    )
    code: RepositoryCode | None = Field(
        default=None,
        description="Run code from the Project's repository (cloned into the pods by an init container) "
        "instead of floe-train.",
    )
    storage: Storage = Field(default_factory=Storage, description="Output volume.", json_schema_extra={"default": {}})
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Retries of failed pods before the job fails; defaults to 3."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job when it runs longer than this."
    )
    ttl_seconds_after_finished: int = Field(
        default=86400,
        ge=0,
        le=INT32_MAX,
        description="Delete the finished Job and its pods after this many seconds; defaults to 86400 (a day).",
    )
    suspend: bool = Field(
        default=False, description="Suspend the job (its pods are stopped); resume by unsetting. Defaults to false."
    )
    pod_metadata: PodMetadata = Field(
        default_factory=PodMetadata, description="Extra pod labels and annotations.", json_schema_extra={"default": {}}
    )


class TrainingProgress(FloeModel):
    """Progress reported by the trainer."""

    # The trainer may report more than these; keep what it writes.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    step: int | None = Field(default=None, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, description="Current epoch (fractional).")
    percent: float | None = Field(default=None, description="Share of steps done, 0..100.")
    loss: float | None = Field(default=None, description="Recent training loss.")
    samples_per_second: float | None = Field(default=None, description="Training throughput.")
    eta_seconds: float | None = Field(
        default=None, description="Estimated seconds until the training steps are done (compilation excluded)."
    )
    batch_size: int | None = Field(default=None, description="Examples per micro-step per process the run uses.")
    gradient_accumulation_steps: int | None = Field(default=None, description="Micro-steps per optimizer update.")
    phase: Literal["preparing", "compiling", "training", "evaluating", "checkpointing", "exporting"] | None = Field(
        default=None, description="What the trainer is doing now."
    )
    validation_loss: float | None = Field(default=None, description="Validation loss of the latest evaluation.")
    rouge1: float | None = Field(default=None, description="ROUGE-1 F1 (0..1) of the latest evaluation.")
    rouge2: float | None = Field(default=None, description="ROUGE-2 F1 (0..1) of the latest evaluation.")
    rouge_l: float | None = Field(default=None, description="ROUGE-L F1 (0..1) of the latest evaluation.")
    evaluated_step: int | None = Field(default=None, description="The step the latest evaluation was taken at.")
    last_checkpoint_time: datetime | None = Field(default=None, description="When the last checkpoint was in place.")
    last_checkpoint_step: int | None = Field(default=None, description="The step of the last checkpoint.")


class FineTuneJobStatus(BaseStatus):
    """Observed state of a FineTuneJob."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"] | None = Field(
        default=None, description="Lifecycle phase."
    )
    job_name: str | None = Field(default=None, description="The batch/v1 Job running the trainer.")
    progress: TrainingProgress | None = Field(default=None, description="Training progress (written by the trainer).")
    metrics: dict[str, Any] | None = Field(
        default=None,
        description="Evaluation metrics from the trainer: validationLoss, initialValidationLoss, "
        "rouge1, rouge2, rougeL (F1, 0..1) ...",
    )
    model_uri: str | None = Field(default=None, description="Where the trained model is.")
    model_digest: str | None = Field(default=None, description="Content digest of the trained model.")
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When the job finished.")
    message: str | None = Field(default=None, description="Details of the current phase (the error when Failed).")


FINETUNEJOB = ResourceKind(
    kind="FineTuneJob",
    plural="finetunejobs",
    short_names=("ftj",),
    scope="Namespaced",
    spec=FineTuneJobSpec,
    status=FineTuneJobStatus,
    description="Fine-tunes a T5 model on a dataset with floe's trainer, as a batch/v1 Job on GPU nodes.",
    printer_columns=(
        PHASE_COLUMN,
        column("Progress%", ".status.progress.percent", "number", "Percent of training steps done (0..100)."),
        column("Loss", ".status.progress.loss", "number", "Recent training loss."),
        column("RougeL", ".status.metrics.rougeL", "number", "ROUGE-L on the validation split."),
        column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        AGE_COLUMN,
    ),
    root_rules=(
        # a Service is named <name>-train too (several workers)
        root_name_rule(MAX_NAME_LENGTH, "the Job is named <name>-train", service=True),
        *immutable_fields(FineTuneJobSpec, "spec", mutable=("suspend",)),
    ),
)
