"""The admission policy that guards a SnowflakeDeployment's review fields covers the whole spec."""

from pathlib import Path

import yaml
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec

REPO = Path(__file__).resolve().parents[3]


def policy():
    docs = yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "ValidatingAdmissionPolicy")


def test_every_spec_field_is_guarded_by_some_rule():
    # A new spec field that no rule compares could be changed by a reviewer: fail here instead.
    expressions = " ".join(v["expression"] for v in policy()["spec"]["variables"])
    fields = [f.alias or name for name, f in SnowflakeDeploymentSpec.model_fields.items()]
    unguarded = [f for f in fields if f"object.spec.{f} != oldObject.spec.{f}" not in expressions]
    assert unguarded == []


def test_policy_is_bound_and_denies():
    docs = list(yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text()))
    binding = next(d for d in docs if d and d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy()["metadata"]["name"], "validationActions": ["Deny"]}
