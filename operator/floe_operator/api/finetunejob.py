"""FineTuneJob: fine-tune a T5 model on a dataset with the trainer image, as a batch/v1 Job. Its training
settings (model, dataset, training, evaluation, checkpoint) are the contract's (floe_contract.training)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from floe_contract.base import FloeModel, cel
from floe_contract.paths import OUTPUT_DIR, TRAINER_CONFIG_PATH
from floe_contract.training import Checkpoint, Dataset, Evaluation, ModelSource, Training
from pydantic import ConfigDict, Field, model_validator

from floe_operator.api.common import (
    AGE_COLUMN,
    IMAGE_PATTERN,
    INT32_MAX,
    LABEL_VALUE_PATTERN,
    METADATA_KEY_RULE,
    PHASE_COLUMN,
    BaseStatus,
    Quantity,
    ResourceKind,
    column,
    immutable_fields,
    metadata_key_errors,
    root_name_rule,
)

# Longest name whose derived objects stay valid: the Job `<name>-train` and its indexed pods'
# hostnames `<name>-train-<index>` must be DNS labels (63 characters at most).
MAX_NAME_LENGTH = 50


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
        description=f"PVC mounted at {OUTPUT_DIR}; an emptyDir (lost with the pod) when unset.",
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
        f"{TRAINER_CONFIG_PATH}; with several GPUs or workers it runs under torchrun, once per process.",
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
# Kubernetes takes 256 KiB of annotations (keys and values, in bytes) per object; the Job controller adds its own
# (1 KiB left for it). The trainer's config is one of them (builders/finetunejob.py): at most
# TRAINER_CONFIG_MAX_BYTES without its Snowflake query (a unit test renders the largest spec), and the query at
# most twice its UTF-8 bytes in JSON (admission refuses the control characters JSON writes as six).
TRAINER_CONFIG_MAX_BYTES = 64 * 1024
POD_ANNOTATIONS_MAX_BYTES = 255 * 1024 - TRAINER_CONFIG_MAX_BYTES
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


def annotation_bytes(annotations: dict[str, str]) -> int:
    """The bytes of annotations' keys and values, as Kubernetes counts them."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def _annotation_bytes(annotations: str) -> str:
    """annotation_bytes in CEL."""
    return f"{annotations}.map(k, size(k) + size(bytes({annotations}[k]))).sum()"


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
        f"reserved. At most {POD_ANNOTATIONS_MAX_BYTES // 1024} KiB in all, less twice the bytes of "
        "dataset.snowflake.query (the pods' annotations carry the trainer's config too).",
        json_schema_extra={
            "maxProperties": POD_METADATA_LIMIT,
            "x-kubernetes-validations": [
                METADATA_KEY_RULE,
                RESERVED_KEY_RULE,
                cel(
                    f"{_annotation_bytes('self')} <= {POD_ANNOTATIONS_MAX_BYTES}",
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
        if annotation_bytes(self.annotations) > POD_ANNOTATIONS_MAX_BYTES:
            raise ValueError(f"annotations: keys and values take at most {POD_ANNOTATIONS_MAX_BYTES // 1024} KiB")
        return self


class FineTuneJobSpec(FloeModel):
    """Fine-tune a model on a dataset. Only suspend can change once created: the rest is the Job's, which runs
    as it was created."""

    cel_rules = (
        cel(
            "!has(self.dataset.snowflake) || !has(self.dataset.snowflake.query) || "
            f"(has(self.podMetadata.annotations) ? {_annotation_bytes('self.podMetadata.annotations')} : 0) + "
            f"2 * size(bytes(self.dataset.snowflake.query)) <= {POD_ANNOTATIONS_MAX_BYTES}",
            f"podMetadata.annotations and twice dataset.snowflake.query take at most "
            f"{POD_ANNOTATIONS_MAX_BYTES // 1024} KiB together (in bytes): the trainer pods' annotations carry the "
            "query in the trainer's config",
            fieldPath=".podMetadata.annotations",
        ),
    )

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

    @model_validator(mode="after")
    def _config_fits_the_annotations(self) -> FineTuneJobSpec:
        query = (self.dataset.snowflake.query if self.dataset.snowflake else None) or ""
        if query and annotation_bytes(self.pod_metadata.annotations) + 2 * len(query.encode()) > (
            POD_ANNOTATIONS_MAX_BYTES
        ):
            raise ValueError(self.cel_rules[0]["message"])
        return self


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
