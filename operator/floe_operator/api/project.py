"""Project: a team's namespace with its quota, members, Git repository and Snowflake connection."""

from __future__ import annotations

from typing import Literal

from floe_contract.base import LocalObjectReference
from pydantic import Field, field_validator

from floe_operator.api.common import (
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    PHASE_COLUMN,
    BaseStatus,
    FloeModel,
    Quantity,
    ResourceKind,
    cel,
    column,
)

Persona = Literal["DataScientist", "MLEngineer", "ModelQualityController", "MLOpsEngineer", "GovernanceOfficer"]

# https://..., ssh://..., or scp-like git@host:path.
GIT_URL_PATTERN = r"^(https://[^\s/@]+(/[^\s]*)?|ssh://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$"


class ProjectQuota(FloeModel):
    """Resources the project's namespace may use in total (becomes a ResourceQuota)."""

    gpus: int = Field(
        default=4, ge=0, description="GPUs (requests.nvidia.com/gpu) for all pods together; defaults to 4."
    )
    cpu: Quantity = Field(
        default="32", description="CPU requests for all pods together, e.g. 8 or 500m; defaults to 32."
    )
    memory: Quantity = Field(
        default="128Gi", description="Memory requests for all pods together, e.g. 64Gi; defaults to 128Gi."
    )
    storage: Quantity = Field(
        default="500Gi", description="Storage requested by all PersistentVolumeClaims, e.g. 1Ti; defaults to 500Gi."
    )
    max_workspaces: int | None = Field(
        default=None, ge=0, description="Most Workspaces the project may have; unlimited when unset."
    )


# system:serviceaccount:<ns>:<name> is that ServiceAccount, system:serviceaccounts:<ns> all of a namespace's,
# system:authenticated everyone: a persona bound to one would run as a pod, which a stolen token can start.
SYSTEM_SUBJECT = "a member is a person or a group of people, not a system: identity (ServiceAccounts, nodes, everyone)"


class ProjectMember(FloeModel):
    """A user or group and the persona it plays in the project."""

    kind: Literal["User", "Group"] = Field(default="User", description="User or Group; defaults to User.")
    name: str = Field(
        min_length=1,
        max_length=253,
        description="User or group name as the API server authenticates it; not a system: name.",
        json_schema_extra={"x-kubernetes-validations": [cel("!self.startsWith('system:')", SYSTEM_SUBJECT)]},
    )
    persona: Persona = Field(description="What the member does in the project; decides its rights.")

    @field_validator("name")
    @classmethod
    def _a_person_or_a_group_of_people(cls, name: str) -> str:
        if name.startswith("system:"):
            raise ValueError(SYSTEM_SUBJECT)
        return name


class Repository(FloeModel):
    """The project's Git repository, cloned into Workspaces."""

    url: str = Field(
        pattern=GIT_URL_PATTERN,
        max_length=2048,
        description="Git URL: https://host/path, ssh://[user@]host/path or user@host:path.",
    )
    branch: str = Field(
        default="main", min_length=1, max_length=255, description="Branch to check out; defaults to main."
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret in the project namespace with Git credentials (ssh-privatekey or username/password).",
    )


class ProjectSnowflake(FloeModel):
    """The project's Snowflake connections: one to deploy with, one to read training data with. They stay
    apart: a FineTuneJob or Workspace, whose code the user chooses, never gets the deploy connection."""

    connection_secret_ref: LocalObjectReference = Field(
        description="Secret in the project namespace holding the deploy connection (account, user, private_key "
        "...); only SnowflakeDeployment deploy Jobs mount it."
    )
    training_connection_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret holding the connection FineTuneJobs and Workspaces read data through; give it a "
        "read-only role. Without it, Snowflake datasets wait (MissingConnection) and Workspaces get no connection.",
    )


class ProjectSpec(FloeModel):
    """A team's space: a namespace with quota, members, a Git repository and a Snowflake connection."""

    display_name: str | None = Field(default=None, max_length=256, description="Human-friendly name.")
    quota: ProjectQuota = Field(
        default_factory=ProjectQuota,
        description="Resource quota of the project namespace.",
        json_schema_extra={"default": {}},
    )
    members: list[ProjectMember] = Field(
        default_factory=list, description="Users and groups of the project with their personas."
    )
    repository: Repository | None = Field(default=None, description="The project's Git repository.")
    snowflake: ProjectSnowflake | None = Field(
        default=None, description="Default Snowflake connection for jobs and deployments of the project."
    )


class ProjectStatus(BaseStatus):
    """Observed state of a Project."""

    phase: Literal["Pending", "Ready", "Failed"] | None = Field(default=None, description="Lifecycle phase.")
    namespace: str | None = Field(
        default=None, description="The namespace that holds the project's objects; it has the project's name."
    )


PROJECT = ResourceKind(
    kind="Project",
    plural="projects",
    short_names=("proj",),
    scope="Cluster",
    spec=ProjectSpec,
    status=ProjectStatus,
    description="A floe project: a namespace of the same name with quota, members, a Git repository and a Snowflake "
    "connection.",
    printer_columns=(
        PHASE_COLUMN,
        # Not "Namespace": `kubectl get -A` already prints a NAMESPACE column (empty for a cluster-scoped kind).
        column("Target-NS", ".status.namespace", description="The project's namespace (it has the project's name)."),
        column("GPUs", ".spec.quota.gpus", "integer", "GPU quota."),
        column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        AGE_COLUMN,
    ),
    root_rules=(
        cel(
            f"self.metadata.name.matches('{DNS_LABEL_PATTERN}') && size(self.metadata.name) <= 63",
            "metadata.name must be a DNS label (lower-case letters, digits and '-', at most 63 characters): "
            "it becomes the namespace name",
        ),
        # Deleting a Project deletes its namespace: never let one adopt a system namespace.
        cel(
            "self.metadata.name != 'default' && !self.metadata.name.startsWith('kube-') && "
            "self.metadata.name != 'floe-system'",
            "metadata.name may not be default, floe-system or start with kube-: those are system namespaces",
        ),
    ),
)
