"""floe-predict-jobs pins a user's Job to the one `floe predict` builds: the environment and mounts it allows
are the builder's own, so neither can drift from the other."""

import json
from pathlib import Path

import yaml
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders import snowflakedeployment as b

REPO = Path(__file__).resolve().parents[3]
POLICY = next(d for d in yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text())
              if d and d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "floe-predict-jobs")


def variable(name):
    return json.loads(next(v["expression"] for v in POLICY["spec"]["variables"] if v["name"] == name))


def built_predict_job():
    target = b.DeployTarget("team-a", "news", "uid", "registry/floe-trainer:1", None)
    spec = SnowflakeDeploymentSpec.model_validate({
        "source": {"modelUri": "pvc://models/m"},
        "snowflake": {"mode": "local", "database": "ML", "schema": "PUBLIC", "stage": "S", "functionName": "F"}})
    _, (_, deploy_job) = b.deploy_objects(target, spec, b.ModelLocation("models", "m", "uri:m"))
    return b.predict_job(deploy_job, ["A storm hit the coast."])


def test_the_policy_allows_exactly_the_environment_and_mounts_of_a_predict_job():
    (container,) = built_predict_job()["spec"]["template"]["spec"]["containers"]
    assert variable("env") == {e["name"]: e["value"] for e in container["env"]}
    assert variable("mounts") == {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
