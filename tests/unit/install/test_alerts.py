"""floe's alert rules, checked and unit-tested by Prometheus's own promtool."""

import subprocess
from pathlib import Path

import yaml

from hack.chart import REPO
from hack.floe_tools import ensure

RULES = REPO / "manifests" / "prometheus" / "floe-rules.yaml"
HERE = Path(__file__).parent


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ensure("promtool")), *args], cwd=HERE, capture_output=True, text=True)


def test_rules_are_valid_promql():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should_and_only_then():
    result = promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "FloeOperatorDown",
        "FloeReconcileErrors",
        "FloeFineTuneJobStuckPending",
        "FloeFineTuneJobFailed",
        "FloeSnowflakeDeploymentFailed",
    }
    tested = {
        t["alertname"]
        for case in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert tested == alerts
