"""The Argo CD health script, run by a real Lua interpreter on recorded floe statuses."""

from pathlib import Path

import lupa
import pytest
import yaml

from hack.chart import CHART, REPO

HEALTH_LUA = (CHART / "files" / "argocd" / "health.lua").read_text()
CASES = yaml.safe_load((Path(__file__).parent / "health_cases.yaml").read_text())


def argocd_health(obj: dict) -> dict:
    """Run the script as Argo CD does: `obj` global, the returned table is the health."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA)
    return dict(result.items())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_health_of_recorded_status(case):
    health = argocd_health(case["object"])
    assert health["status"] == case["health"]
    if "message" in case:
        assert health["message"] == case["message"]


def test_every_argocd_status_floe_can_report_is_covered():
    assert {c["health"] for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}
    assert {c["object"]["kind"] for c in CASES} == {"Project", "Workspace", "FineTuneJob", "SnowflakeDeployment"}


def test_argocd_cm_snippet_carries_the_script_for_all_four_kinds():
    snippet = yaml.safe_load((REPO / "manifests" / "gitops" / "argocd-cm-health.yaml").read_text())
    for kind in ("Project", "Workspace", "FineTuneJob", "SnowflakeDeployment"):
        assert snippet["data"][f"resource.customizations.health.floe.dev_{kind}"] == HEALTH_LUA
