"""A notebook runs as its own ServiceAccount with the Project's notebook role: the builder's objects, and the
admission rule that keeps that identity to those who already hold every right it has."""

from pathlib import Path

import yaml
from floe_operator.api.project import Repository
from floe_operator.api.workspace import WorkspaceSpec
from floe_operator.builders.project_members import PERSONA_ROLES
from floe_operator.builders.workspace import (
    NOTEBOOK_ROLE,
    SERVICE_ACCOUNT_DIR,
    WorkspaceInputs,
    notebook_role_binding,
    notebook_service_account,
    statefulset,
)
from floe_operator.catalog import DEFAULT_CATALOG

REPO = Path(__file__).resolve().parents[3]
DOCS = [d for d in yaml.safe_load_all((REPO / "helm/floe/files/personas.yaml").read_text()) if d]
OWNER = {"apiVersion": "floe.dev/v1alpha1", "kind": "Workspace", "name": "nb", "uid": "u1", "controller": True}


def inputs(**spec) -> WorkspaceInputs:
    ws = WorkspaceSpec.model_validate(spec)
    return WorkspaceInputs(name="nb", namespace="team-a", spec=ws, template=DEFAULT_CATALOG.template(ws.template),
                           profile=DEFAULT_CATALOG.profile(ws.compute_profile), owner=OWNER,
                           repository=Repository(url="https://git.example.org/team/models.git"))


def test_the_notebook_runs_as_its_own_account_bound_to_the_notebook_role_in_its_namespace():
    account, binding = notebook_service_account(inputs()), notebook_role_binding(inputs())
    assert account["metadata"]["name"] == "nb-notebook" and account["automountServiceAccountToken"] is False
    assert binding["metadata"] == {**account["metadata"]} and binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "floe-notebook"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nb-notebook", "namespace": "team-a"}]


def test_only_the_notebook_container_gets_a_short_lived_token():
    pod = statefulset(inputs())["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "nb-notebook" and pod["automountServiceAccountToken"] is False
    (volume,) = [v for v in pod["volumes"] if "projected" in v]
    token = next(s["serviceAccountToken"] for s in volume["projected"]["sources"] if "serviceAccountToken" in s)
    assert token == {"path": "token", "expirationSeconds": 3600}  # no audience: the API server's own
    (jupyter,) = pod["containers"]
    assert {"name": volume["name"], "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True} in jupyter["volumeMounts"]
    assert all(m["name"] != volume["name"] for c in pod["initContainers"] for m in c.get("volumeMounts", []))


def _grants(role: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_every_persona_that_may_create_workspaces_holds_every_right_of_the_notebook():
    # floe-workspace-identity lets only those who may create Workspaces decide what a notebook runs; that is
    # no escalation only while each of them already holds everything the notebook's identity holds.
    roles = {d["metadata"]["name"]: d for d in DOCS if d["kind"] == "ClusterRole"}
    notebook = _grants(roles[NOTEBOOK_ROLE])
    creators = [name for name, role in roles.items() if ("floe.dev", "workspaces", "create") in _grants(role)]
    assert creators == ["floe-data-scientist", "floe-ml-engineer"]
    assert all(notebook <= _grants(roles[name]) for name in creators)


def test_the_notebook_role_writes_no_workspace_and_is_a_data_scientists_rights_at_most():
    # Code in one notebook (a package it installed) must not change what another notebook runs or start one.
    roles = {d["metadata"]["name"]: d for d in DOCS if d["kind"] == "ClusterRole"}
    notebook = _grants(roles[NOTEBOOK_ROLE])
    assert {verb for group, resource, verb in notebook if resource == "workspaces"} == {"get", "list", "watch"}
    assert notebook < _grants(roles[PERSONA_ROLES["DataScientist"]])


def test_every_workspace_spec_field_but_stopped_needs_the_right_to_create_workspaces():
    policy = next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicy"
                  and d["metadata"]["name"] == "floe-workspace-identity")
    changed = next(v for v in policy["spec"]["variables"] if v["name"] == "beyondStoppedChanged")["expression"]
    fields = [f.alias or name for name, f in WorkspaceSpec.model_fields.items()]
    guarded = [f for f in fields if f"object.spec.?{f} != oldObject.spec.?{f}" in changed]
    assert sorted(guarded) == sorted(set(fields) - {"stopped"})
    assert "check('create')" in policy["spec"]["validations"][0]["expression"]
    binding = next(d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicyBinding"
                   and d["metadata"]["name"] == "floe-workspace-identity")
    assert binding["spec"] == {"policyName": "floe-workspace-identity", "validationActions": ["Deny"]}
