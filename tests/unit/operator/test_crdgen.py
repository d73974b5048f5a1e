"""The generated CRDs: in sync with the models, structural, with the columns and rules users rely on."""

import re
from pathlib import Path

import pytest
import yaml
from floe_operator import crdgen
from floe_operator.api import KINDS

CRDS = Path(__file__).resolve().parents[3] / "helm" / "floe" / "crds"
RENDERED = crdgen.render_all()
BY_KIND = {kind.kind: crdgen.crd(kind) for kind in KINDS}


def test_crds_directory_is_up_to_date_with_the_models():
    stale = [name for name, text in RENDERED.items() if not (CRDS / name).exists() or (CRDS / name).read_text() != text]
    assert not stale, f"helm/floe/crds is stale ({', '.join(stale)}): run `python -m hack.sync_manifests`"
    assert sorted(p.name for p in CRDS.glob("*.floe.dev.yaml")) == sorted(RENDERED)


def test_check_mode_reports_stale_files(tmp_path, capsys):
    assert crdgen.main([str(tmp_path)]) == 0
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "finetunejobs.floe.dev.yaml").write_text("stale\n")
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    assert "finetunejobs.floe.dev.yaml" in capsys.readouterr().out


def schema_nodes(node, path="openAPIV3Schema"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_schema_is_structural(kind):
    schema = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "$defs" not in text and "title:" not in text and "null" not in text
    for path, node in schema_nodes(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node and "allOf" not in node and "oneOf" not in node, path
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object" and "properties" not in node and path != "openAPIV3Schema.metadata":
            assert node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}.{bound} must be a boolean in OpenAPI v3"


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_every_crd_has_status_columns_names_and_category(kind):
    crd = BY_KIND[kind]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[0] == "Phase" and columns[-1] == "Age"
    assert crd["spec"]["names"]["categories"] == ["floe"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "conditions", "observedGeneration"} <= set(status)
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {"type", "status", "lastTransitionTime"}
    assert {"reason", "message", "observedGeneration"} <= set(condition["properties"])
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_every_kind_shows_ready_and_no_second_namespace_column(kind):
    # `kubectl get floe -A` prints its own NAMESPACE column, so a column of that name would show twice.
    columns = [c["name"] for c in BY_KIND[kind]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Ready" in columns
    assert "namespace" not in {c.lower() for c in columns}


def stated(value) -> str:
    """A default as a description writes it: true/false, 0.0001, 10 (not 10.0), 16Gi."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_every_default_is_stated_in_its_description(kind):
    """`kubectl explain` shows descriptions and not defaults, so each description names its default. An empty
    object's default only lets its fields' defaults apply; each of those is stated where it is."""
    schema = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    unstated = []
    for path, node in schema_nodes(schema):
        if "default" not in node or node["default"] == {}:
            continue
        said = rf"\bdefaults to {re.escape(stated(node['default']))}(\W|$)"
        if not re.search(said, node.get("description", ""), re.IGNORECASE):
            unstated.append(f"{path} (default {node['default']!r}): {node.get('description')!r}")
    assert not unstated, "descriptions that do not say 'defaults to <value>':\n" + "\n".join(unstated)


def test_quantities_give_an_example():
    examples = {
        path: node.get("description", "")
        for kind in BY_KIND.values()
        for path, node in schema_nodes(kind["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if node.get("x-kubernetes-int-or-string") and ".spec." in path
    }
    assert examples and all("e.g." in text for text in examples.values()), examples


def test_short_names_and_scopes():
    names = {k: (c["spec"]["names"]["shortNames"], c["spec"]["scope"]) for k, c in BY_KIND.items()}
    assert names == {
        "Project": (["proj"], "Cluster"),
        "Workspace": (["ws"], "Namespaced"),
        "FineTuneJob": (["ftj"], "Namespaced"),
        "SnowflakeDeployment": (["sfd"], "Namespaced"),
    }


def ftj_schema():
    return BY_KIND["FineTuneJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def rules(node):
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_finetunejob_columns_show_progress_loss_and_rouge():
    columns = {
        c["name"]: c["jsonPath"] for c in BY_KIND["FineTuneJob"]["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Progress%"] == ".status.progress.percent"  # the unit in the header: 3 means 3%
    assert columns["Loss"] == ".status.progress.loss"
    assert columns["RougeL"] == ".status.metrics.rougeL"


def test_finetunejob_spec_is_immutable_but_suspend():
    # Root rules, so that setting a field left unset is refused too (a rule on the field would not run).
    immutable = {r["fieldPath"]: r for r in ftj_schema()["x-kubernetes-validations"] if "oldSelf" in r["rule"]}
    spec = ftj_schema()["properties"]["spec"]["properties"]
    assert set(immutable) == {f".spec.{field}" for field in spec} - {".spec.suspend"}
    assert immutable[".spec.image"]["message"] == "spec.image is immutable once created"
    assert "has(self.spec.image) == has(oldSelf.spec.image)" in immutable[".spec.image"]["rule"]
    assert spec["suspend"]["default"] is False


def test_finetunejob_exactly_one_rules_are_attached():
    spec = ftj_schema()["properties"]["spec"]["properties"]
    assert any("has(self.hub)" in r and "has(self.scratch)" in r for r in rules(spec["model"]))
    dataset = spec["dataset"]
    assert any("has(self.file)" in r and "has(self.snowflake)" in r for r in rules(dataset))
    assert any("has(self.uri)" in r for r in rules(dataset["properties"]["file"]))
    assert any("has(self.query)" in r for r in rules(dataset["properties"]["snowflake"]))


def test_finetunejob_defaults_and_bounds_reach_the_schema():
    spec = ftj_schema()["properties"]["spec"]["properties"]
    training = spec["training"]
    assert training["default"] == {}
    assert training["properties"]["epochs"] == {
        "description": "Passes over the training data; defaults to 3.",
        "type": "integer",
        "default": 3,
        "minimum": 1,
        "maximum": 1000,
    }
    fraction = spec["dataset"]["properties"]["validationFraction"]
    assert (fraction["minimum"], fraction["exclusiveMinimum"], fraction["maximum"]) == (0, True, 1)
    assert spec["resources"]["properties"]["workers"]["minimum"] == 1
    assert spec["resources"]["properties"]["gpus"]["minimum"] == 0
    assert ftj_schema()["required"] == ["spec"]


def test_free_form_status_parts_keep_unknown_fields():
    status = ftj_schema()["properties"]["status"]["properties"]
    assert status["metrics"]["x-kubernetes-preserve-unknown-fields"] is True
    assert status["progress"]["x-kubernetes-preserve-unknown-fields"] is True
    assert status["progress"]["properties"]["samplesPerSecond"]["type"] == "number"


def test_project_name_rule_and_repository_pattern():
    schema = BY_KIND["Project"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert any("self.metadata.name" in r for r in rules(schema))
    assert "pattern" in schema["properties"]["spec"]["properties"]["repository"]["properties"]["url"]
    assert schema["properties"]["spec"]["default"] == {}


def test_projects_cannot_take_over_system_namespaces():
    schema = BY_KIND["Project"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert any("startsWith('kube-')" in r and "'default'" in r for r in rules(schema))
