"""Persona RoleBindings from Project members, checked with impersonated users on a real API server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dev import cluster as fixture

REPO = Path(__file__).resolve().parents[2]
PROJECT = "persona-lab"

MEMBERS = {
    "ana": "DataScientist",
    "eli": "MLEngineer",
    "quinn": "ModelQualityController",
    "omar": "MLOpsEngineer",
    "gwen": "GovernanceOfficer",
}

SFD = "snowflakedeployments.floe.dev"
# (verb, resource, subresource) → who may: every cell of persona × action is asserted, outsiders included.
ACTIONS = {
    ("create", "workspaces.floe.dev", ""): {"ana", "eli"},
    ("create", "finetunejobs.floe.dev", ""): {"ana", "eli"},
    ("delete", "finetunejobs.floe.dev", ""): {"ana", "eli", "omar"},
    ("patch", "workspaces.floe.dev", ""): {"ana", "eli", "omar"},
    ("get", "finetunejobs.floe.dev", ""): {"ana", "eli", "quinn", "omar", "gwen"},
    ("create", SFD, ""): {"eli", "omar"},
    ("patch", SFD, ""): {"eli", "quinn", "omar", "gwen"},
    ("approve", SFD, ""): {"gwen"},
    ("assess-quality", SFD, ""): {"quinn"},
    ("get", "pods", "log"): {"ana", "eli", "quinn", "omar"},
    ("create", "pods", "portforward"): {"ana", "eli"},
    ("create", "jobs.batch", ""): {"ana", "eli"},  # predict Jobs only: the floe-predict-jobs policy
    ("create", "pods", ""): set(),
    ("create", "cronjobs.batch", ""): set(),
    ("create", "deployments.apps", ""): set(),
    # Deploy pods hold the Snowflake deploy Secret: nobody execs, attaches or adds a debug container there.
    ("create", "pods", "exec"): set(),
    ("create", "pods", "attach"): set(),
    ("patch", "pods", "ephemeralcontainers"): set(),
    ("list", "events", ""): {"ana", "eli", "quinn", "omar", "gwen"},
    ("get", "resourcequotas", ""): {"ana", "eli", "omar"},
    ("get", "secrets", ""): set(),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""): set(),
}
USERS = [*MEMBERS, "outsider"]


def can(cluster, user, verb, resource, subresource="", groups=()) -> bool:
    args = ["auth", "can-i", verb, resource, "-n", PROJECT]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = cluster.kubectl(*args, as_user=user, as_groups=groups)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def project(members: dict[str, str]) -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": PROJECT},
        "spec": {"members": [{"kind": "User", "name": n, "persona": p} for n, p in members.items()]},
    }


def bindings(cluster) -> dict[str, list[str]]:
    found = cluster.get("rolebindings", "-n", PROJECT, "-l", "floe.dev/persona") or {"items": []}
    return {b["metadata"]["name"]: sorted(s["name"] for s in b.get("subjects") or ()) for b in found["items"]}


@pytest.fixture(scope="module")
def personas(cluster):
    cluster.kubectl("apply", "-f", str(REPO / "helm/floe/files/personas.yaml"), check=True)


@pytest.fixture(scope="module")
def lab(cluster, personas, floe_operator):
    cluster.apply(project(MEMBERS)).check_returncode()
    cluster.wait_for(lambda: len(bindings(cluster)) == 5, 60, "the five persona RoleBindings")
    yield
    cluster.kubectl("delete", "project", PROJECT, "--wait=false")


@pytest.mark.parametrize("user", USERS)
def test_persona_table(cluster, lab, user):
    got = {action: can(cluster, user, *action) for action in ACTIONS}
    expected = {action: user in allowed for action, allowed in ACTIONS.items()}
    assert got == expected


def sfd(name: str, **spec) -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "SnowflakeDeployment",
        "metadata": {"name": name, "namespace": PROJECT},
        "spec": {
            "source": {"modelUri": "pvc://models/t5"},
            "snowflake": {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"},
            **spec,
        },
    }


def patch_sfd(cluster, name, user, patch, groups=()):
    return cluster.kubectl(
        "patch",
        f"{SFD}/{name}",
        "-n",
        PROJECT,
        "--type=merge",
        "-p",
        yaml.safe_dump(patch),
        as_user=user,
        as_groups=groups,
    )


DIGEST = "sha256:" + "a" * 64


def approval(user: str, **changes) -> dict:
    """The approval a governance officer writes (floe approve fills it in the same way)."""
    return {"spec": {"approval": {"approved": True, "approvedBy": user, "modelDigest": DIGEST,
                                  "target": "ML.PUBLIC.SUMMARIZE", **changes}}}


def test_only_governance_officers_approve(cluster, lab):
    refused = cluster.apply(sfd("self-approved", **approval("eli")["spec"]), as_user="eli")
    assert refused.returncode != 0
    assert "spec.approval: only a governance officer may approve" in refused.stderr

    cluster.apply(sfd("summarizer"), as_user="eli").check_returncode()
    for user in ("eli", "omar", "quinn"):
        result = patch_sfd(cluster, "summarizer", user, approval(user))
        assert result.returncode != 0 and "spec.approval" in result.stderr, (user, result.stderr)
    assert patch_sfd(cluster, "summarizer", "gwen", approval("gwen")).returncode == 0
    assert cluster.get(SFD, "summarizer", "-n", PROJECT)["spec"]["approval"]["approved"] is True


def test_organisation_governance_group_approves_everywhere(cluster, lab):
    cluster.apply(sfd("org-approved"), as_user="eli").check_returncode()
    assert patch_sfd(cluster, "org-approved", "carol", approval("carol")).returncode != 0
    assert patch_sfd(cluster, "org-approved", "carol", approval("carol"),
                     groups=["floe:governance-officers"]).returncode == 0


def test_an_approval_is_the_approvers_own_and_names_the_model_and_function(cluster, lab):
    cluster.apply(sfd("bound"), as_user="eli").check_returncode()
    forged = patch_sfd(cluster, "bound", "gwen", approval("the-cto"))
    assert forged.returncode != 0 and "must be the approver's own user name, gwen" in forged.stderr
    elsewhere = patch_sfd(cluster, "bound", "gwen", approval("gwen", target="ML.PUBLIC.OTHER"))
    assert elsewhere.returncode != 0 and "the approval is for ML.PUBLIC.OTHER" in elsewhere.stderr
    unnamed = {"spec": {"approval": {"approved": True, "approvedBy": "gwen"}}}
    assert "names approvedBy, modelDigest and target" in patch_sfd(cluster, "bound", "gwen", unnamed).stderr
    assert patch_sfd(cluster, "bound", "gwen", approval("gwen")).returncode == 0

    # Moving the approved deployment to another function, or to another model, needs the approval cleared.
    moved = patch_sfd(cluster, "bound", "eli", {"spec": {"snowflake": {"functionName": "EXFILTRATE"}}})
    assert moved.returncode != 0 and "clear spec.approval in the same change" in moved.stderr
    swapped = patch_sfd(cluster, "bound", "eli", {"spec": {"source": {"modelUri": "pvc://models/other"}}})
    assert swapped.returncode != 0 and "a new model needs a new approval" in swapped.stderr
    cleared = {"spec": {"source": {"modelUri": "pvc://models/other"}, "approval": {
        "approved": False, "approvedBy": None, "modelDigest": None, "target": None}}}
    assert patch_sfd(cluster, "bound", "eli", cleared).returncode == 0
    assert cluster.get(SFD, "bound", "-n", PROJECT)["spec"]["approval"] == {"approved": False}


def test_quality_gate_belongs_to_quality_controllers(cluster, lab):
    cluster.apply(sfd("gated"), as_user="eli").check_returncode()
    lower = {"spec": {"qualityGate": {"minRougeL": 0.05}}}
    refused = patch_sfd(cluster, "gated", "eli", lower)
    assert refused.returncode != 0 and "spec.qualityGate: only a model quality controller" in refused.stderr
    assert patch_sfd(cluster, "gated", "quinn", lower).returncode == 0


def test_reviewers_change_nothing_but_their_field(cluster, lab):
    cluster.apply(sfd("reviewed"), as_user="eli").check_returncode()
    for user in ("gwen", "quinn"):
        result = patch_sfd(cluster, "reviewed", user, {"spec": {"sampleRows": 2}})
        assert result.returncode != 0 and "may change only the review fields" in result.stderr, user
    assert patch_sfd(cluster, "reviewed", "omar", {"spec": {"sampleRows": 2}}).returncode == 0


def test_member_changes_follow_into_rolebindings(cluster, lab):
    changed = dict(MEMBERS, ana="MLEngineer")
    del changed["gwen"]
    cluster.apply(project(changed)).check_returncode()
    cluster.wait_for(lambda: "floe-governance-officer" not in bindings(cluster), 60, "gwen's binding to go")
    assert bindings(cluster)["floe-ml-engineer"] == ["ana", "eli"]
    assert "floe-data-scientist" not in bindings(cluster)
    assert can(cluster, "ana", "create", SFD)
    assert not can(cluster, "gwen", "approve", SFD)
    assert not can(cluster, "gwen", "get", SFD)
    cluster.apply(project(MEMBERS)).check_returncode()
    cluster.wait_for(lambda: bindings(cluster).get("floe-governance-officer") == ["gwen"], 60, "gwen back")
    assert not can(cluster, "ana", "create", SFD)


# A Project's quota lives on the cluster-scoped Project: its MLOps engineers edit it through a
# ClusterRole the operator keeps for them, and an admission policy keeps them to spec.quota.
OTHER = "persona-other"
EDITOR = f"floe-project-{PROJECT}-mlops"


def patch_project(cluster, name, user, patch, groups=(), dry_run=False):
    args = ["patch", "project", name, "--type=merge", "-p", yaml.safe_dump(patch)]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, as_user=user, as_groups=groups)


def refused_by_rbac(result) -> bool:
    # kubectl patch reads the object first, so a user without access is stopped at get or at patch.
    return result.returncode != 0 and re.search(r'cannot (get|patch) resource "projects"', result.stderr) is not None


def may_patch_project(cluster, user, name) -> bool:
    answer = cluster.kubectl("auth", "can-i", "patch", f"projects.floe.dev/{name}", as_user=user).stdout.strip()
    return answer == "yes"


@pytest.fixture(scope="module")
def other_project(cluster, lab):
    other = {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": OTHER},
        "spec": {"members": [{"name": "mia", "persona": "MLOpsEngineer"}]},
    }
    cluster.apply(other).check_returncode()
    cluster.wait_for(lambda: may_patch_project(cluster, "mia", OTHER), 60, "mia's access to her project")
    cluster.wait_for(lambda: may_patch_project(cluster, "omar", PROJECT), 60, "omar's access to his project")
    # The policy is live once it refuses a (dry-run) change of members.
    cluster.wait_for(
        lambda: (
            "may change only spec.quota"
            in patch_project(cluster, PROJECT, "omar", {"spec": {"members": []}}, dry_run=True).stderr
        ),
        30,
        "the Project policy to take effect",
    )
    yield
    cluster.kubectl("delete", "project", OTHER, "--wait=false")


def test_mlops_engineer_raises_the_quota_of_their_own_project(cluster, other_project):
    assert patch_project(cluster, PROJECT, "omar", {"spec": {"quota": {"gpus": 7}}}).returncode == 0
    cluster.wait_for(
        lambda: (
            cluster.get("resourcequota", "floe-quota", "-n", PROJECT)["spec"]["hard"]["requests.nvidia.com/gpu"] == "7"
        ),
        60,
        "the raised quota in the namespace",
    )
    refused = patch_project(cluster, OTHER, "omar", {"spec": {"quota": {"gpus": 7}}})
    assert refused_by_rbac(refused), refused.stderr
    assert cluster.get("project", OTHER)["spec"]["quota"]["gpus"] != 7


@pytest.mark.parametrize(
    "change",
    [
        {"members": [{"name": "omar", "persona": "GovernanceOfficer"}]},
        {"repository": {"url": "https://git.example.org/elsewhere.git"}},
        {"displayName": "Omar's lab"},
    ],
    ids=["members", "repository", "displayName"],
)
def test_mlops_engineer_changes_nothing_but_the_quota(cluster, other_project, change):
    before = cluster.get("project", PROJECT)["spec"]
    refused = patch_project(cluster, PROJECT, "omar", {"spec": {**change, "quota": {"gpus": 8}}})
    assert refused.returncode != 0
    assert f"omar may change only spec.quota of Project {PROJECT}" in refused.stderr
    assert cluster.get("project", PROJECT)["spec"] == before


def test_only_mlops_engineers_change_the_quota(cluster, other_project):
    for user in ("ana", "eli", "quinn", "gwen", "outsider"):
        refused = patch_project(cluster, PROJECT, user, {"spec": {"quota": {"gpus": 9}}})
        assert refused_by_rbac(refused), (user, refused.stderr)
    assert cluster.get("project", PROJECT)["spec"]["quota"]["gpus"] != 9


def test_project_access_follows_the_mlops_members(cluster, other_project):
    cluster.apply(project(dict(MEMBERS, omar="DataScientist", ana="MLOpsEngineer"))).check_returncode()
    cluster.wait_for(lambda: may_patch_project(cluster, "ana", PROJECT), 60, "ana's access to the project")
    cluster.wait_for(lambda: not may_patch_project(cluster, "omar", PROJECT), 60, "omar's access to go")
    assert [s["name"] for s in cluster.get("clusterrolebinding", EDITOR)["subjects"]] == ["ana"]

    without_mlops = {n: p for n, p in MEMBERS.items() if p != "MLOpsEngineer"}
    cluster.apply(project(without_mlops)).check_returncode()
    cluster.wait_for(lambda: cluster.get("clusterrole", EDITOR) is None, 60, "the project's MLOps ClusterRole to go")
    assert cluster.get("clusterrolebinding", EDITOR) is None
    assert not may_patch_project(cluster, "ana", PROJECT)

    cluster.apply(project(MEMBERS)).check_returncode()
    cluster.wait_for(lambda: may_patch_project(cluster, "omar", PROJECT), 60, "omar's access back")


def test_project_access_goes_with_the_project(cluster, other_project):
    role = cluster.get("clusterrole", f"floe-project-{OTHER}-mlops")
    assert [o["kind"] for o in role["metadata"]["ownerReferences"]] == ["Project"]
    cluster.kubectl("delete", "project", OTHER, "--wait=false", check=True)
    cluster.wait_for(lambda: cluster.get("clusterrole", f"floe-project-{OTHER}-mlops") is None, 60, "GC of the role")
    cluster.wait_for(
        lambda: cluster.get("clusterrolebinding", f"floe-project-{OTHER}-mlops") is None, 60, "GC of the binding"
    )


@pytest.mark.parametrize(
    ("as_operator", "args", "allowed"),
    [
        (True, ("create", "clusterrole", "floe-guard-probe"), False),
        (True, ("delete", "clusterrolebinding", "cluster-admin"), False),
        (True, ("create", "clusterrole", "floe-project-guard-probe-mlops"), True),
        (False, ("create", "clusterrole", "floe-guard-probe"), True),
    ],
    ids=["operator-creates-another-name", "operator-deletes-cluster-admin", "operator-creates-its-own", "admin"],
)
def test_operator_writes_only_its_own_cluster_roles(cluster, operator_kubeconfig, as_operator, args, allowed):
    """RBAC grants the operator these verbs on every name; the chart's admission policy narrows them.
    Server-side dry runs: admission runs, nothing is written (the probes would pass RBAC alone)."""
    verb, kind, name = args
    if verb == "create":
        command = ["create", kind, name, "--verb=get", "--resource=projects.floe.dev", "--resource-name=guard-probe",
                   "--dry-run=server"]
    else:
        command = [verb, kind, name, "--dry-run=server"]
    operator = f"system:serviceaccount:{fixture.OPERATOR_NAMESPACE}:{fixture.OPERATOR_ACCOUNT}"
    result = cluster.kubectl(*command, as_user=operator if as_operator else None)
    if allowed:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert (
            f"writes only ClusterRoles and ClusterRoleBindings named floe-project-<project>-mlops, not {name}"
            in result.stderr
        )
