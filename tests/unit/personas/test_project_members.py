"""Project members become one RoleBinding per persona."""

from pathlib import Path

import yaml
from floe_operator.api.project import ProjectMember
from floe_operator.builders.project_members import (
    PERSONA_ROLES,
    mlops_project_access,
    persona_role_bindings,
    stale_bindings,
)
from floe_operator.builders.workspace import NOTEBOOK_ROLE

REPO = Path(__file__).resolve().parents[3]


def members(*entries):
    return [ProjectMember(kind=kind, name=name, persona=persona) for kind, name, persona in entries]


def subjects(binding):
    return [(s["kind"], s["name"]) for s in binding["subjects"]]


def test_one_binding_per_persona_with_all_its_members():
    bindings = persona_role_bindings(
        "team-a",
        members(
            ("User", "ana", "DataScientist"),
            ("Group", "scientists", "DataScientist"),
            ("User", "gus", "GovernanceOfficer"),
        ),
    )
    by_name = {b["metadata"]["name"]: b for b in bindings}
    assert set(by_name) == {"floe-data-scientist", "floe-governance-officer"}
    assert subjects(by_name["floe-data-scientist"]) == [("Group", "scientists"), ("User", "ana")]
    assert by_name["floe-governance-officer"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "floe-governance-officer",
    }
    assert all(b["metadata"]["namespace"] == "team-a" for b in bindings)


def test_duplicate_members_are_bound_once():
    bindings = persona_role_bindings("team-a", members(("User", "ana", "MLEngineer"), ("User", "ana", "MLEngineer")))
    assert subjects(bindings[0]) == [("User", "ana")]


def test_member_who_changes_persona_moves_and_the_empty_binding_goes_stale():
    before = persona_role_bindings("team-a", members(("User", "ana", "DataScientist")))
    after = persona_role_bindings("team-a", members(("User", "ana", "MLOpsEngineer")))
    assert [b["metadata"]["name"] for b in after] == ["floe-mlops-engineer"]
    assert stale_bindings(after, [b["metadata"]["name"] for b in before]) == ["floe-data-scientist"]


def test_no_members_no_bindings():
    assert persona_role_bindings("team-a", []) == []


def test_every_persona_and_the_notebook_have_a_clusterrole_in_the_chart():
    shipped = {
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text())
        if doc and doc["kind"] == "ClusterRole"
    }
    assert shipped == {*PERSONA_ROLES.values(), NOTEBOOK_ROLE}


def test_mlops_engineers_may_edit_their_own_project_only():
    owner = {"apiVersion": "floe.dev/v1alpha1", "kind": "Project", "name": "team-a", "uid": "u1"}
    role, binding = mlops_project_access(
        "team-a",
        members(("User", "omar", "MLOpsEngineer"), ("Group", "ops", "MLOpsEngineer"), ("User", "ana", "DataScientist")),
        owner,
    )
    assert role["kind"] == "ClusterRole" and binding["kind"] == "ClusterRoleBinding"
    assert role["metadata"]["name"] == binding["metadata"]["name"] == "floe-project-team-a-mlops"
    assert role["rules"] == [
        {"apiGroups": ["floe.dev"], "resources": ["projects"], "resourceNames": ["team-a"], "verbs": ["get", "patch"]}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert subjects(binding) == [("Group", "ops"), ("User", "omar")]
    # Cluster-scoped and owned by the cluster-scoped Project: deleting the Project deletes them.
    assert role["metadata"]["ownerReferences"] == binding["metadata"]["ownerReferences"] == [owner]


def test_no_mlops_engineer_no_project_access():
    assert mlops_project_access("team-a", members(("User", "ana", "DataScientist"))) == []


def test_operator_holds_what_it_grants_to_mlops_engineers():
    # The API server refuses a ClusterRole granting more than its creator holds (no `escalate`).
    rules = yaml.safe_load((REPO / "helm/floe/files/operator-clusterrole.yaml").read_text())["rules"]
    (role, _) = mlops_project_access("team-a", members(("User", "omar", "MLOpsEngineer")))
    for verb in role["rules"][0]["verbs"]:
        assert any(
            "floe.dev" in r["apiGroups"]
            and "projects" in r["resources"]
            and verb in r["verbs"]
            and "resourceNames" not in r
            for r in rules
        ), verb
