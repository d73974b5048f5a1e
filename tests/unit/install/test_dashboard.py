"""The Grafana dashboard queries only series the operator exports, and every query parses."""

import json
import re
import subprocess

import yaml
from floe_operator import metrics
from prometheus_client.metrics import MetricWrapperBase

from hack.chart import CHART
from hack.floe_tools import ensure

DASHBOARD = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
# Series Prometheus itself adds for every target.
SCRAPE_SERIES = {"up"}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def exported_series() -> set[str]:
    """Sample names of the operator's metrics (counters get _total, histograms _bucket/_sum/_count)."""
    names = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label matchers, ranges and
    grouping clauses that are not function calls or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    identifiers = re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(\s*\()?", expr)
    return {m.group(1) for m in identifiers if not m.group(2) and m.group(1) not in PROMQL_KEYWORDS}


def test_the_name_scanner_finds_metrics_and_skips_the_rest():
    assert series_in('sum by (kind, le) (rate(floe_x_bucket{a="b",c=~"d"}[5m])) / on(kind) floe_y') == {
        "floe_x_bucket",
        "floe_y",
    }
    assert series_in('count(m{phase="Failed"} == 1) or vector(0)') == {"m"}


def test_every_panel_queries_only_exported_series():
    allowed = exported_series() | SCRAPE_SERIES
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            used = series_in(target["expr"])
            assert used, f"panel {panel['title']!r}: no series in {target['expr']!r}"
            assert used <= allowed, f"panel {panel['title']!r} uses unknown series {sorted(used - allowed)}"


def test_every_exported_series_is_on_the_dashboard():
    used = set().union(*(series_in(e) for e in dashboard_exprs()))
    assert exported_series() - used == set()


def test_template_variable_queries_exported_series():
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            series = re.match(r"label_values\((\w+),", variable["query"]["query"]).group(1)
            assert series in exported_series()


def test_every_query_parses(tmp_path):
    """promtool parses each query as a recording rule (Grafana's $variables replaced by a regex)."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr.replace("$namespace", ".*")}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([str(ensure("promtool")), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
