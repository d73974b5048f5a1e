"""Every list of floe's kinds comes from floe_operator.api.KINDS: adding a kind there is enough for the CRDs,
the operator ClusterRole's floe.dev rules, the Argo CD health snippets, the chart's Artifact Hub annotation and
the CLI's kinds (test_generated_files checks that the committed files equal what is generated)."""

import dataclasses

import pytest
import yaml
from floe_operator import api, cli, crdgen

from hack import chart, sync_manifests

EXTRA = dataclasses.replace(api.FINETUNEJOB, kind="EvalRun", plural="evalruns", short_names=("er",))


@pytest.fixture(params=["today", "with a new kind"])
def kinds(request, monkeypatch):
    kinds = api.KINDS if request.param == "today" else (*api.KINDS, EXTRA)
    monkeypatch.setattr(sync_manifests, "KINDS", kinds)
    monkeypatch.setattr(crdgen, "KINDS", kinds)
    return kinds


def floe_resources(rules: list[dict]) -> set[str]:
    return {resource for rule in rules if rule["apiGroups"] == ["floe.dev"] for resource in rule["resources"]}


def test_operator_clusterrole_covers_exactly_the_kinds(kinds):
    role = yaml.safe_load(
        sync_manifests.with_generated_block(sync_manifests.OPERATOR_CLUSTERROLE, sync_manifests.operator_floe_rules())
    )
    expected = {kind.plural + suffix for kind in kinds for suffix in ("", "/status", "/finalizers")}
    assert floe_resources(role["rules"]) == expected


def test_argocd_health_snippets_cover_exactly_the_kinds(kinds):
    data = yaml.safe_load(sync_manifests.argocd_cm_snippet())["data"]
    assert set(data) == {f"resource.customizations.health.floe.dev_{kind.kind}" for kind in kinds}


def test_chart_annotation_and_crds_cover_exactly_the_kinds(kinds):
    chart_yaml = yaml.safe_load(
        sync_manifests.with_generated_block(sync_manifests.CHART_YAML, sync_manifests.artifacthub_crds_annotation())
    )
    listed = yaml.safe_load(chart_yaml["annotations"]["artifacthub.io/crds"])
    assert [entry["kind"] for entry in listed] == [kind.kind for kind in kinds]
    files = chart.crd_files()
    crds = sorted(f"{kind.crd_name}.yaml" for kind in kinds)
    assert sorted(name for name in files if name != chart.CRDS_KUSTOMIZATION) == crds
    assert yaml.safe_load(files[chart.CRDS_KUSTOMIZATION])["resources"] == crds


def test_cli_kinds_are_the_api_kinds():
    assert [(k.kind, k.plural, k.short, k.namespaced) for k in cli.KINDS] == [
        (k.kind, k.plural, k.short_names[0], k.scope == "Namespaced") for k in api.KINDS
    ]


def test_a_generated_block_without_its_markers_is_refused():
    path = sync_manifests.REPO / "helm" / "floe" / "values.yaml"
    with pytest.raises(sync_manifests.MissingMarkers, match="values.yaml"):
        sync_manifests.with_generated_block(path, "")
