"""Typed models of floe's custom resources (group floe.dev, version v1alpha1).

The CRDs in crds/ are generated from these models by ``python -m floe_operator.crdgen``.
"""

from floe_operator.api.common import ResourceKind
from floe_operator.api.finetunejob import FINETUNEJOB
from floe_operator.api.project import PROJECT
from floe_operator.api.snowflakedeployment import SNOWFLAKEDEPLOYMENT
from floe_operator.api.workspace import WORKSPACE

KINDS: tuple[ResourceKind, ...] = (PROJECT, WORKSPACE, FINETUNEJOB, SNOWFLAKEDEPLOYMENT)

__all__ = ["KINDS", "ResourceKind", "PROJECT", "WORKSPACE", "FINETUNEJOB", "SNOWFLAKEDEPLOYMENT"]
