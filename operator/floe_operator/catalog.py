"""The template catalog: notebook/trainer templates and compute profiles, picked by name.

The catalog is operator configuration. The Helm chart renders it into a ConfigMap and points
``FLOE_CATALOG`` at the mounted file; without it the built-in default below applies.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import yaml
from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CATALOG_ENV = "FLOE_CATALOG"

WORKSPACE_IMAGE = "ghcr.io/floe-dev/floe-workspace:0.1.0"
TRAINER_IMAGE = "ghcr.io/floe-dev/floe-trainer:0.1.0"

GPU_RESOURCE = "nvidia.com/gpu"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Template(_Model):
    """What a Workspace or FineTuneJob runs: images and the packages they ship with."""

    description: str = ""
    workspace_image: str = Field(alias="workspaceImage", min_length=1)
    trainer_image: str = Field(alias="trainerImage", min_length=1)
    packages: tuple[str, ...] = Field(default=(), description="Packages the template's images provide, shown to users.")


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    def to_k8s(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)


class Resources(_Model):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            try:
                parse_quantity(value)
            except ValueError as error:
                raise ValueError(f"{name}: not a Kubernetes quantity: {value!r}") from error
        return values


class ComputeProfile(_Model):
    """Where and with how much a pod runs."""

    description: str = ""
    gpus: int = Field(default=0, ge=0)
    resources: Resources = Resources()
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[Toleration, ...] = ()

    def container_resources(self) -> dict:
        """Container resources; GPUs as requests and limits, so the GPU quota counts them."""
        requests, limits = dict(self.resources.requests), dict(self.resources.limits)
        if self.gpus:
            requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(self.gpus)
        return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}

    def scheduling(self) -> dict:
        """Pod-spec fields that place the pod: node selector and tolerations."""
        placement: dict = {}
        if self.node_selector:
            placement["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            placement["tolerations"] = [t.to_k8s() for t in self.tolerations]
        return placement


class UnknownName(ValueError):
    """A template or profile name that the catalog does not hold."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")


class Catalog(_Model):
    templates: dict[str, Template] = Field(min_length=1)
    profiles: dict[str, ComputeProfile] = Field(min_length=1, alias="computeProfiles")

    def template(self, name: str) -> Template:
        if name not in self.templates:
            raise UnknownName("template", name, sorted(self.templates))
        return self.templates[name]

    def profile(self, name: str) -> ComputeProfile:
        if name not in self.profiles:
            raise UnknownName("compute profile", name, sorted(self.profiles))
        return self.profiles[name]


DEFAULT_CATALOG = Catalog(
    templates={
        "snowflake": Template(
            description="JupyterLab with PyTorch, transformers and Snowpark, "
            "for fine-tuning and deploying into Snowflake.",
            workspaceImage=WORKSPACE_IMAGE,
            trainerImage=TRAINER_IMAGE,
            packages=(
                "torch",
                "transformers",
                "sentencepiece",
                "rouge-score",
                "snowflake-snowpark-python",
            ),
        ),
        "pytorch": Template(
            description="JupyterLab with PyTorch and transformers.",
            workspaceImage=WORKSPACE_IMAGE,
            trainerImage=TRAINER_IMAGE,
            packages=("torch", "transformers", "sentencepiece"),
        ),
    },
    computeProfiles={
        "gpu": ComputeProfile(
            description="One NVIDIA GPU.",
            gpus=1,
            resources=Resources(requests={"cpu": "4", "memory": "32Gi"}, limits={"memory": "32Gi"}),
            tolerations=(Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"),),
        ),
        "cpu": ComputeProfile(
            description="General-purpose CPU.",
            resources=Resources(requests={"cpu": "2", "memory": "8Gi"}, limits={"memory": "8Gi"}),
        ),
        "memory-optimized": ComputeProfile(
            description="Large memory for data preparation.",
            resources=Resources(requests={"cpu": "4", "memory": "64Gi"}, limits={"memory": "64Gi"}),
        ),
    },
)


class CatalogError(ValueError):
    """The catalog file is missing or invalid; the message names the file and the field."""


def parse_catalog(text: str, source: str = "catalog") -> Catalog:
    try:
        data = yaml.safe_load(text)
        return Catalog.model_validate(data)
    except yaml.YAMLError as error:
        raise CatalogError(f"{source}: not valid YAML: {error}") from error
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise CatalogError(f"{source}: {problems}") from error


def load_catalog(path: str | None = None) -> Catalog:
    """The catalog from ``path`` (default: ``$FLOE_CATALOG``), else the built-in default.

    Parsed once per version of the file (metrics read it on every FineTuneJob event), and again when it
    changes, so an edited ConfigMap takes effect without a restart.
    """
    path = path or os.environ.get(CATALOG_ENV)
    if not path:
        return DEFAULT_CATALOG
    try:
        version = os.stat(path)
    except OSError as error:
        raise CatalogError(f"{path}: cannot read the catalog: {error}") from error
    return _parse_file(path, version.st_mtime_ns, version.st_size)


@functools.lru_cache(maxsize=4)
def _parse_file(path: str, mtime_ns: int, size: int) -> Catalog:
    """``path``'s catalog; the file's modification time and size key the cache."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise CatalogError(f"{path}: cannot read the catalog: {error}") from error
    return parse_catalog(text, source=path)
