"""Building blocks of floe's resource models beyond the contract's (floe_contract.base): conditions, quantities,
Kubernetes names and metadata, immutability rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from floe_contract.base import FloeModel, cel
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema

from floe_operator import GROUP

# The API server's own pattern for resource.Quantity, less the minus sign: every floe quantity is an
# amount of something (CPU, memory, storage), never negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1035 label: what a Service's name must be (it starts with a letter).
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes' syntax of label and annotation keys: a name of at most 63 characters, optionally prefixed by a
# DNS subdomain of at most 253 characters and '/' (k8s.io/apimachinery's IsQualifiedName), and of label values.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
KEY_PREFIX_LENGTH_PATTERN = r"^([^/]{1,253}/)?[^/]*$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
INT32_MAX = 2**31 - 1
# An image reference has no spaces; only a pod's validation says so, long after its Job or StatefulSet was accepted.
IMAGE_PATTERN = r"^\S+$"


def _quantity_to_str(value: Any) -> Any:
    # YAML turns `cpu: 4` into an int; Kubernetes accepts both, so do we.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes resource quantity (e.g. 500m, 4, 16Gi)")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


def immutable_fields(model: type[BaseModel], at: str, mutable: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    """Root rules keeping each field of ``model`` (found at ``at``, e.g. spec) as created, set or unset, but the
    ``mutable`` ones (JSON names): a rule on the field itself would not run when an unset field is set."""
    rules = []
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if alias not in mutable:
            path = f"{at}.{alias}"
            rules.append(
                cel(
                    f"has(self.{path}) == has(oldSelf.{path}) && (!has(self.{path}) || self.{path} == oldSelf.{path})",
                    f"{path} is immutable once created",
                    fieldPath=f".{path}",
                )
            )
    return tuple(rules)


def metadata_key_errors(keys: Iterable[str]) -> list[str]:
    """The keys that are not Kubernetes label/annotation keys (checked by CEL at admission too)."""
    return [
        key for key in keys if not (re.match(QUALIFIED_NAME_PATTERN, key) and re.match(KEY_PREFIX_LENGTH_PATTERN, key))
    ]


# CEL of metadata_key_errors.
METADATA_KEY_RULE = cel(
    f"self.all(k, k.matches('{QUALIFIED_NAME_PATTERN}') && k.matches('{KEY_PREFIX_LENGTH_PATTERN}'))",
    "keys must be Kubernetes label keys: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit, optionally prefixed by a DNS subdomain and '/' (e.g. example.com/team)",
)


def root_name_rule(max_length: int, why: str, service: bool = False) -> dict[str, str]:
    """A root rule on metadata.name: children are named after it, so it must fit their names' limits; a name
    that also names a Service (``service``) must start with a letter."""
    pattern, start = (DNS_1035_PATTERN, "a letter") if service else (DNS_LABEL_PATTERN, "a letter or digit")
    return cel(
        f"self.metadata.name.matches('{pattern}') && size(self.metadata.name) <= {max_length}",
        f"metadata.name must start with {start}, hold only lower-case letters, digits and '-', and have at most "
        f"{max_length} characters ({why})",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(FloeModel):
    """One aspect of the object's current state (Kubernetes condition conventions)."""

    type: str = Field(description="Condition type, e.g. Ready.", min_length=1, max_length=316)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="Machine-readable CamelCase reason for the last transition.")
    message: str | None = Field(default=None, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When the condition last changed status.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was computed from."
    )


class BaseStatus(FloeModel):
    """Fields every floe status has."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions (kstatus conventions): Ready is True when the resource is fully reconciled, "
        "Reconciling while the operator works towards that, Stalled (with the reason) when it failed for good.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation last acted upon by the operator."
    )


def column(name: str, json_path: str, type_: str = "string", description: str = "", priority: int = 0) -> dict:
    """An additionalPrinterColumns entry."""
    entry: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if description:
        entry["description"] = description
    if priority:
        entry["priority"] = priority
    return entry


AGE_COLUMN = column("Age", ".metadata.creationTimestamp", "date")
PHASE_COLUMN = column("Phase", ".status.phase", description="Lifecycle phase.")


@dataclass(frozen=True)
class ResourceKind:
    """Everything the CRD generator needs to know about one custom resource."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[dict, ...]
    root_rules: tuple[dict[str, str], ...] = field(default=())
    categories: tuple[str, ...] = ("floe",)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
