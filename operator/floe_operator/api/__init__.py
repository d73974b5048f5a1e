"""Typed models of floe's custom resources (group floe.dev, version v1alpha1).

KINDS is the one list of floe's kinds: the CRDs in helm/floe/crds, the operator ClusterRole's floe.dev rules,
the Argo CD health snippets (``python -m hack.sync_manifests``) and the CLI's kinds are generated from it.
"""

from floe_operator.api.common import ResourceKind
from floe_operator.api.finetunejob import FINETUNEJOB
from floe_operator.api.project import PROJECT
from floe_operator.api.snowflakedeployment import SNOWFLAKEDEPLOYMENT
from floe_operator.api.workspace import WORKSPACE

KINDS: tuple[ResourceKind, ...] = (PROJECT, WORKSPACE, FINETUNEJOB, SNOWFLAKEDEPLOYMENT)

__all__ = ["KINDS", "ResourceKind", "PROJECT", "WORKSPACE", "FINETUNEJOB", "SNOWFLAKEDEPLOYMENT"]
