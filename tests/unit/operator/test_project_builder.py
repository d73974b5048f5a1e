"""Project builders: the namespace and what it holds."""

from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import ServiceAccountName, owner_reference
from floe_operator.builders.project import project_objects

OWNER = owner_reference("floe.dev/v1alpha1", "Project", "team-a", "uid-1")
OPERATOR = ServiceAccountName("floe-system", "floe-operator")
IMAGE = "registry.example/trainer:2"


def objects(spec=None, operator=OPERATOR):
    built = project_objects("team-a", ProjectSpec.model_validate(spec or {}), OWNER, operator, IMAGE)
    return {o["kind"]: o for o in built}


def test_namespace_is_restricted_and_labelled_with_the_project():
    ns = objects()["Namespace"]
    assert ns["metadata"]["name"] == "team-a"
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["floe.dev/project"] == "team-a"


def test_every_object_is_owned_by_the_project():
    built = objects()
    assert list(built) == ["Namespace", "RoleBinding", "ResourceQuota", "LimitRange", "ServiceAccount"]
    for obj in built.values():
        assert obj["metadata"]["ownerReferences"] == [OWNER]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "team-a"


def test_quota_includes_gpus_and_workspaces():
    quota = objects({"quota": {"gpus": 8, "cpu": 64, "memory": "256Gi", "storage": "1Ti", "maxWorkspaces": 5}})
    assert quota["ResourceQuota"]["spec"]["hard"] == {
        "requests.cpu": "64",
        "requests.memory": "256Gi",
        "requests.nvidia.com/gpu": "8",
        "requests.storage": "1Ti",
        "count/workspaces.floe.dev": "5",
    }


def test_limit_range_gives_containers_default_requests():
    (limits,) = objects()["LimitRange"]["spec"]["limits"]
    assert limits["type"] == "Container"
    assert set(limits["defaultRequest"]) == {"cpu", "memory"}


def test_trainer_service_account_has_no_token_by_default():
    sa = objects()["ServiceAccount"]
    assert sa["metadata"]["name"] == "floe-trainer"
    assert sa["automountServiceAccountToken"] is False


def test_the_operator_gets_its_rights_in_this_namespace_only_when_it_runs_as_a_service_account():
    binding = objects()["RoleBinding"]
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "floe-operator-project"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "floe-operator", "namespace": "floe-system"}]
    assert "RoleBinding" not in objects(operator=None)


def test_namespace_names_the_secrets_each_use_may_read():
    ns = objects({"snowflake": {"connectionSecretRef": {"name": "deploy"},
                                "trainingConnectionSecretRef": {"name": "reader"}},
                  "repository": {"url": "https://git.example/team.git", "credentialsSecretRef": {"name": "git"}}})
    assert ns["Namespace"]["metadata"]["annotations"] == {
        "floe.dev/training-secrets": "reader", "floe.dev/deploy-secrets": "deploy", "floe.dev/repository-secret": "git",
        "floe.dev/deploy-image": IMAGE}
    # Without them every Secret annotation is written empty, so a removed Secret stops being readable.
    annotations = objects()["Namespace"]["metadata"]["annotations"]
    assert {key: value for key, value in annotations.items() if key.endswith(("-secrets", "-secret"))} == {
        "floe.dev/training-secrets": "", "floe.dev/deploy-secrets": "", "floe.dev/repository-secret": ""}


def test_namespace_names_the_image_predict_jobs_run():
    # The operator's own deploy image, which the floe-predict-jobs policy pins a user's predict Job to.
    assert objects()["Namespace"]["metadata"]["annotations"]["floe.dev/deploy-image"] == IMAGE
