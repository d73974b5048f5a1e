"""Workspace: a JupyterLab notebook from a catalog template on a compute profile."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from floe_operator.api.common import (
    AGE_COLUMN,
    IMAGE_PATTERN,
    PHASE_COLUMN,
    BaseStatus,
    FloeModel,
    Quantity,
    ResourceKind,
    cel,
    column,
    root_name_rule,
)

# Longest name whose derived objects stay valid: the StatefulSet <name> labels its pods with its revision,
# <name>-<hash of up to 10 characters>, and a label value has at most 63 characters.
MAX_NAME_LENGTH = 52


class WorkspaceStorage(FloeModel):
    """The home directory volume."""

    # Checked at admission: a bound volume can grow (where its storage class allows) but never shrink.
    cel_rules = (
        cel(
            "!has(self.size) || !has(oldSelf.size) || "
            "!quantity(string(self.size)).isLessThan(quantity(string(oldSelf.size)))",
            "size can grow but not shrink (a volume cannot be made smaller)",
        ),
    )

    size: Quantity = Field(
        default="10Gi",
        description="Size of the home directory volume, e.g. 20Gi; defaults to 10Gi.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("quantity(string(self)).isGreaterThan(quantity('0'))", "must be more than 0 (a volume's size)")
            ]
        },
    )
    retain: bool = Field(default=True, description="Keep the volume when the Workspace is deleted; defaults to true.")


class WorkspaceSpec(FloeModel):
    """A notebook server for the project, from a catalog template on a compute profile."""

    template: str = Field(
        default="snowflake",
        min_length=1,
        max_length=63,
        description="Template name from the catalog; defaults to snowflake.",
    )
    compute_profile: str = Field(
        default="cpu",
        min_length=1,
        max_length=63,
        description="Compute profile name from the catalog (gpu, cpu ...); defaults to cpu.",
    )
    stopped: bool = Field(
        default=False, description="Scale the notebook to zero, keeping its volume; defaults to false."
    )
    storage: WorkspaceStorage = Field(
        default_factory=WorkspaceStorage,
        description="Home directory volume.",
        json_schema_extra={"default": {}},
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=IMAGE_PATTERN,
        description="Image overriding the template's.",
    )


class WorkspaceStatus(BaseStatus):
    """Observed state of a Workspace."""

    phase: Literal["Pending", "Running", "Stopped", "Failed"] | None = Field(
        default=None, description="Lifecycle phase."
    )
    url: str | None = Field(default=None, description="Where the notebook is served inside the cluster.")


WORKSPACE = ResourceKind(
    kind="Workspace",
    plural="workspaces",
    short_names=("ws",),
    scope="Namespaced",
    spec=WorkspaceSpec,
    status=WorkspaceStatus,
    description="A floe notebook workspace: JupyterLab from a catalog template on a compute profile.",
    printer_columns=(
        PHASE_COLUMN,
        column("Template", ".spec.template"),
        column("Profile", ".spec.computeProfile", description="Compute profile."),
        column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        column("URL", ".status.url", priority=1),
        AGE_COLUMN,
    ),
    root_rules=(root_name_rule(MAX_NAME_LENGTH, "the StatefulSet and Service are named <name>", service=True),),
)
