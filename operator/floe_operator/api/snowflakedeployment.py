"""SnowflakeDeployment: a trained model registered as a Snowflake Python UDF, behind quality and approval gates."""

from __future__ import annotations

from typing import Any, Literal

from floe_contract.base import LocalObjectReference
from floe_contract.deployment import DIGEST_PATTERN, FunctionTarget
from pydantic import Field

from floe_operator.api.common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    BaseStatus,
    FloeModel,
    ResourceKind,
    cel,
    column,
    root_name_rule,
)

# Longest name whose derived objects stay valid: the deploy Job <name>-deploy is a pod label value (job-name),
# 63 characters at most.
MAX_NAME_LENGTH = 56


class DeploymentSource(FloeModel):
    """The model to deploy: exactly one of fineTuneJobRef or modelUri."""

    one_of = ("fine_tune_job_ref", "model_uri")

    fine_tune_job_ref: LocalObjectReference | None = Field(
        default=None, description="A FineTuneJob in this namespace; deployed once it has Succeeded."
    )
    model_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="A trained model directory on a PersistentVolumeClaim: pvc://<claim>/<path>.",
    )


class DeploymentSnowflake(FunctionTarget):
    """Where in Snowflake the UDF goes, and the connection that reaches it."""

    connection_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Connection Secret; the project's connection when unset."
    )


class QualityGate(FloeModel):
    """Minimum evaluation results before deploying."""

    min_rouge_l: float | None = Field(
        default=None, alias="minRougeL", ge=0, le=1, description="Lowest acceptable ROUGE-L of the job's evaluation."
    )


class Approval(FloeModel):
    """Governance approval of one model for one function; only governance officers may set it (`floe approve`
    fills it in). The API server checks that approvedBy is the approver and target the spec's function; the
    operator and the deployer deploy nothing but modelDigest. Changing spec.snowflake's target needs the
    approval cleared (anyone who may edit the deployment may clear it)."""

    cel_rules = (
        cel(
            "!has(self.approved) || !self.approved || (has(self.approvedBy) && has(self.modelDigest) && "
            "has(self.target))",
            "an approval names approvedBy, modelDigest and target (floe approve fills them in)",
        ),
    )

    approved: bool = Field(default=False, description="The deployment is approved; defaults to false.")
    approved_by: str | None = Field(
        default=None, min_length=1, max_length=256, description="Who approved it: the approver's own user name."
    )
    model_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="The model approved (sha256:<hex>, as its FineTuneJob's status.modelDigest reports it).",
    )
    target: str | None = Field(
        default=None,
        max_length=800,
        description="The function approved, DATABASE.SCHEMA.FUNCTION as spec.snowflake names it.",
    )
    comment: str | None = Field(default=None, max_length=4096, description="Why.")


class SnowflakeDeploymentSpec(FloeModel):
    """Deploy a trained model as a Snowflake Python UDF once it passes the quality gate and is approved."""

    source: DeploymentSource = Field(description="The model to deploy.")
    snowflake: DeploymentSnowflake = Field(description="Target database, schema, stage and function.")
    quality_gate: QualityGate = Field(
        default_factory=QualityGate, description="Quality gate.", json_schema_extra={"default": {}}
    )
    approval: Approval = Field(
        default_factory=Approval, description="Governance approval.", json_schema_extra={"default": {}}
    )
    sample_rows: int = Field(
        default=3,
        ge=1,
        le=3,
        description="Built-in sample articles the UDF is verified on after deploying; defaults to 3.",
    )
    deletion_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description="Drop the function when the SnowflakeDeployment is deleted, or keep it; defaults to Delete.",
    )


class SnowflakeDeploymentStatus(BaseStatus):
    """Observed state of a SnowflakeDeployment."""

    phase: (
        Literal["Pending", "WaitingForModel", "WaitingForApproval", "Deploying", "Deployed", "Failed", "Deleting"]
        | None
    ) = Field(default=None, description="Lifecycle phase.")
    function_name: str | None = Field(default=None, description="Fully qualified name of the deployed UDF.")
    model_digest: str | None = Field(default=None, description="Content digest of the deployed model.")
    verified_sample: list[dict[str, Any]] | None = Field(
        default=None,
        description="Inputs and outputs of the UDF on sample rows.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    per_row_latency_ms: float | None = Field(
        default=None,
        description="Latency per row measured on the deploy pod (rows of sourceMaxLength tokens decoded to "
        "maxNewTokens), from which maxBatchSize was chosen.",
    )
    max_batch_size: int | None = Field(
        default=None,
        description="The most rows Snowflake sends the UDF in one batch: what fits, with a margin, in Snowflake's "
        "60 s per-batch limit at the measured latency.",
    )
    message: str | None = Field(default=None, description="Details of the current phase.")


SNOWFLAKEDEPLOYMENT = ResourceKind(
    kind="SnowflakeDeployment",
    plural="snowflakedeployments",
    short_names=("sfd",),
    scope="Namespaced",
    spec=SnowflakeDeploymentSpec,
    status=SnowflakeDeploymentStatus,
    description="Deploys a trained model as a Snowflake Python UDF, gated by quality and governance approval.",
    printer_columns=(
        PHASE_COLUMN,
        column("Function", ".status.functionName", description="Fully qualified UDF name."),
        column("Approved", ".spec.approval.approved", "boolean"),
        column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        AGE_COLUMN,
    ),
    root_rules=(root_name_rule(MAX_NAME_LENGTH, "its deploy Job is named <name>-deploy"),),
)
