"""Project builders: the namespace and what it holds."""

from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import owner_reference
from floe_operator.builders.project import project_objects

OWNER = owner_reference("floe.dev/v1alpha1", "Project", "team-a", "uid-1")


def objects(spec=None):
    return {o["kind"]: o for o in project_objects("team-a", ProjectSpec.model_validate(spec or {}), OWNER)}


def test_namespace_is_restricted_and_labelled_with_the_project():
    ns = objects()["Namespace"]
    assert ns["metadata"]["name"] == "team-a"
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["floe.dev/project"] == "team-a"


def test_every_object_is_owned_by_the_project():
    built = objects()
    assert list(built) == ["Namespace", "ResourceQuota", "LimitRange", "ServiceAccount"]
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
