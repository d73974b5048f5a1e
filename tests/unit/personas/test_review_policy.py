"""The admission policies that guard review fields and Projects cover the whole spec."""

from pathlib import Path

import pytest
import yaml
from floe_operator.api.project import ProjectSpec
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec

REPO = Path(__file__).resolve().parents[3]
DOCS = [d for d in yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text()) if d]


def policy(name):
    return next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == name)


def spec_fields(model):
    return [f.alias or name for name, f in model.model_fields.items()]


def test_every_deployment_spec_field_is_guarded_by_some_rule():
    # A new spec field that no rule compares could be changed by a reviewer: fail here instead.
    expressions = " ".join(v["expression"] for v in policy("floe-snowflakedeployment-review")["spec"]["variables"])
    unguarded = [
        f for f in spec_fields(SnowflakeDeploymentSpec) if f"object.spec.{f} != oldObject.spec.{f}" not in expressions
    ]
    assert unguarded == []


def test_every_project_spec_field_but_quota_is_guarded():
    # A new Project field missing here could be changed by an MLOps engineer who may only set the quota.
    changed = next(v for v in policy("floe-project-quota")["spec"]["variables"] if v["name"] == "beyondQuotaChanged")
    guarded = [
        f for f in spec_fields(ProjectSpec) if f"object.?spec.?{f} != oldObject.?spec.?{f}" in changed["expression"]
    ]
    assert sorted(guarded) == sorted(set(spec_fields(ProjectSpec)) - {"quota"})


@pytest.mark.parametrize("name", ["floe-snowflakedeployment-review", "floe-project-quota"])
def test_policy_is_bound_and_denies(name):
    binding = next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicyBinding" and d["metadata"]["name"] == name)
    assert binding["spec"] == {"policyName": policy(name)["metadata"]["name"], "validationActions": ["Deny"]}
