"""A Project never takes the operator's own namespace, whatever it is called (the CRD refuses floe-system and the
cluster's system names; an operator installed elsewhere is refused here, before the cluster is asked anything)."""

from floe_operator.builders.common import ServiceAccountName
from floe_operator.handlers.project import _adoption_refusal


def test_the_operators_own_namespace_is_never_adopted():
    refusal = _adoption_refusal("platform-ops", ServiceAccountName("platform-ops", "floe-operator"))
    assert refusal == "namespace platform-ops is the floe operator's own; a Project cannot use it"
