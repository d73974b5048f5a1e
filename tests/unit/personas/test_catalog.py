"""The template catalog: the built-in default, the file the chart ships, and clear errors."""

from pathlib import Path

import pytest
import yaml
from floe_operator.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    CatalogError,
    UnknownName,
    load_catalog,
    parse_catalog,
)

REPO = Path(__file__).resolve().parents[3]


def test_default_has_the_seed_templates_and_profiles():
    assert set(DEFAULT_CATALOG.templates) == {"snowflake", "pytorch"}
    assert set(DEFAULT_CATALOG.profiles) == {"gpu", "cpu", "memory-optimized"}


def test_default_equals_the_catalog_the_helm_chart_ships():
    values = yaml.safe_load((REPO / "helm/floe/values.yaml").read_text())
    assert Catalog.model_validate(values["catalog"]) == DEFAULT_CATALOG


def test_gpu_profile_requests_and_limits_gpus_and_tolerates_the_gpu_taint():
    gpu = DEFAULT_CATALOG.profile("gpu")
    resources = gpu.container_resources()
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert gpu.scheduling()["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cpu_profile_asks_for_no_gpu_and_needs_no_toleration():
    cpu = DEFAULT_CATALOG.profile("cpu")
    assert "nvidia.com/gpu" not in cpu.container_resources()["requests"]
    assert cpu.scheduling() == {}


@pytest.mark.parametrize(
    ("lookup", "name", "valid"),
    [
        ("template", "tensorflow", "pytorch, snowflake"),
        ("profile", "tpu", "cpu, gpu, memory-optimized"),
    ],
)
def test_unknown_name_lists_the_valid_ones(lookup, name, valid):
    with pytest.raises(UnknownName) as error:
        getattr(DEFAULT_CATALOG, lookup)(name)
    assert f"{name!r}" in str(error.value)
    assert str(error.value).endswith(f"valid: {valid}")


CUSTOM = """
templates:
  r:
    workspaceImage: example.org/r-notebook:1
    trainerImage: example.org/trainer:1
computeProfiles:
  big-gpu:
    gpus: 4
    resources: {requests: {cpu: "32", memory: 256Gi}}
    nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
"""


def test_file_from_floe_catalog_replaces_the_default(tmp_path, monkeypatch):
    path = tmp_path / "catalog.yaml"
    path.write_text(CUSTOM)
    monkeypatch.setenv("FLOE_CATALOG", str(path))
    catalog = load_catalog()
    assert catalog.template("r").workspace_image == "example.org/r-notebook:1"
    assert catalog.profile("big-gpu").scheduling()["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }


def test_without_floe_catalog_the_default_applies(monkeypatch):
    monkeypatch.delenv("FLOE_CATALOG", raising=False)
    assert load_catalog() == DEFAULT_CATALOG


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (CUSTOM.replace('cpu: "32"', "cpu: lots"), "computeProfiles.big-gpu.resources.requests"),
        (CUSTOM.replace("gpus: 4", "gpus: -1"), "computeProfiles.big-gpu.gpus"),
        (CUSTOM.replace("workspaceImage", "image"), "templates.r.workspaceImage"),
        ("templates: {}\ncomputeProfiles: {}\n", "templates"),
        ("templates: [", "not valid YAML"),
    ],
)
def test_bad_catalog_is_refused_naming_the_field(text, field):
    with pytest.raises(CatalogError) as error:
        parse_catalog(text, source="catalog.yaml")
    assert str(error.value).startswith("catalog.yaml: ")
    assert field in str(error.value)


def test_missing_catalog_file_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(str(tmp_path / "absent.yaml"))
