"""Workspace objects from spec, template and profile."""

import pytest
from floe_operator.api.project import Repository
from floe_operator.api.workspace import WorkspaceSpec
from floe_operator.builders.common import APP_NAME_LABEL
from floe_operator.builders.repository import repo_dir
from floe_operator.builders.workspace import (
    WorkspaceInputs,
    home_claim,
    service,
    statefulset,
    workspace_state,
)
from floe_operator.catalog import DEFAULT_CATALOG
from floe_operator.handlers.startup import WATCHED_APPS

OWNER = {"apiVersion": "floe.dev/v1alpha1", "kind": "Workspace", "name": "nb", "uid": "u1", "controller": True}


def inputs(profile="cpu", repository=None, snowflake_secret="snowflake", **spec):
    ws = WorkspaceSpec.model_validate({"computeProfile": profile, **spec})
    return WorkspaceInputs(
        name="nb",
        namespace="team-a",
        spec=ws,
        template=DEFAULT_CATALOG.template(ws.template),
        profile=DEFAULT_CATALOG.profile(profile),
        owner=OWNER,
        repository=repository,
        snowflake_secret=snowflake_secret,
    )


def pod_spec(sts):
    return sts["spec"]["template"]["spec"]


def test_runs_jupyterlab_from_the_template_image_with_the_profile_resources():
    sts = statefulset(inputs("gpu"))
    jupyter = pod_spec(sts)["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert jupyter["image"] == DEFAULT_CATALOG.template("snowflake").workspace_image
    assert jupyter["command"] == ["jupyter", "lab"]
    assert jupyter["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec(sts)["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_image_in_the_spec_overrides_the_template():
    jupyter = pod_spec(statefulset(inputs(image="example.org/mine:1")))["containers"][0]
    assert jupyter["image"] == "example.org/mine:1"


def test_stopped_scales_to_zero_and_keeps_the_home_claim():
    sts = statefulset(inputs(stopped=True))
    assert sts["spec"]["replicas"] == 0
    assert pod_spec(sts)["volumes"][0] == {"name": "home", "persistentVolumeClaim": {"claimName": "nb-home"}}


def test_every_container_meets_the_restricted_pod_security_profile():
    spec = pod_spec(statefulset(inputs(repository=Repository(url="https://git.example.org/team/models.git"))))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False


def test_snowflake_connection_secret_is_mounted_read_only():
    jupyter = pod_spec(statefulset(inputs()))["containers"][0]
    mount = next(m for m in jupyter["volumeMounts"] if m["name"] == "snowflake")
    assert mount == {"name": "snowflake", "mountPath": "/var/run/floe/snowflake", "readOnly": True}


def test_without_a_snowflake_connection_nothing_is_mounted():
    spec = pod_spec(statefulset(inputs(snowflake_secret=None)))
    assert all(v["name"] != "snowflake" for v in spec["volumes"])


def test_repository_is_cloned_by_an_init_container_with_credentials_from_files():
    repository = Repository.model_validate(
        {"url": "git@github.com:team/models.git", "branch": "dev", "credentialsSecretRef": {"name": "git"}}
    )
    spec = pod_spec(statefulset(inputs(repository=repository)))
    clone = spec["initContainers"][0]
    env = {e["name"]: e["value"] for e in clone["env"]}
    assert env["FLOE_REPO_URL"] == "git@github.com:team/models.git"
    assert env["FLOE_REPO_BRANCH"] == "dev"
    assert env["FLOE_REPO_DIR"] == "models"
    assert {"name": "git-credentials", "secret": {"secretName": "git", "defaultMode": 0o440}} in spec["volumes"]
    assert all("password" not in arg for arg in clone["command"][:-1])


def test_no_repository_no_init_container():
    assert "initContainers" not in pod_spec(statefulset(inputs()))


@pytest.mark.parametrize(
    ("url", "directory"),
    [
        ("https://github.com/team/models.git", "models"),
        ("https://github.com/team/models/", "models"),
        ("git@github.com:team/models.git", "models"),
        ("ssh://git@host/models", "models"),
    ],
)
def test_repo_dir(url, directory):
    assert repo_dir(url) == directory


def test_retained_home_claim_is_not_owned_so_it_outlives_the_workspace():
    assert "ownerReferences" not in home_claim(inputs(storage={"retain": True}))["metadata"]
    assert home_claim(inputs(storage={"retain": False}))["metadata"]["ownerReferences"] == [OWNER]
    assert home_claim(inputs(storage={"size": "50Gi"}))["spec"]["resources"]["requests"]["storage"] == "50Gi"


def test_service_selects_the_notebook_pod():
    svc = service(inputs())
    assert svc["spec"]["selector"] == {"floe.dev/workspace": "nb"}
    assert svc["spec"]["ports"][0]["port"] == 8888


@pytest.mark.parametrize(
    ("stopped", "status", "phase", "ready"),
    [
        (False, None, "Pending", False),
        (False, {"replicas": 1}, "Pending", False),
        (False, {"replicas": 1, "readyReplicas": 1}, "Running", True),
        (True, {"replicas": 1, "readyReplicas": 1}, "Stopped", False),
        (True, {"replicas": 0}, "Stopped", True),
    ],
)
def test_state_follows_the_statefulset(stopped, status, phase, ready):
    state = workspace_state(stopped, status)
    assert (state.phase, state.ready) == (phase, ready)


def test_a_failed_clone_is_the_reason_a_starting_notebook_is_not_ready():
    state = workspace_state(False, {"replicas": 1}, "fatal: Authentication failed for 'https://git/models.git/'")
    assert (state.phase, state.ready, state.reason) == ("Pending", False, "RepositoryCloneFailed")
    assert "Authentication failed" in state.message
    assert workspace_state(False, {"replicas": 1, "readyReplicas": 1}, "fatal: old").reason == "Running"


def test_the_operators_watches_select_the_notebook_and_its_pod():
    """The API server sends the operator only the StatefulSets and pods it selects: a notebook outside the
    selection would never report Ready."""
    sts = statefulset(inputs())
    assert sts["metadata"]["labels"][APP_NAME_LABEL] in WATCHED_APPS["apps", "v1", "statefulsets"]
    assert sts["spec"]["template"]["metadata"]["labels"][APP_NAME_LABEL] in WATCHED_APPS["", "v1", "pods"]
