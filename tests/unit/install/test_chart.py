"""The Helm chart, rendered by a real helm: what it installs, and what it refuses."""

import pytest
import yaml
from floe_operator.builders.finetunejob import TRAINER_ROLE
from floe_operator.builders.project import OPERATOR_PROJECT_ROLE
from floe_operator.catalog import DEFAULT_CATALOG, parse_catalog

from hack.chart import BASE, CHART, KUBE_VERSION, RenderError, documents, helm_template, object_key, run


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def default_objects() -> list[dict]:
    return helm_template()


def test_lint_strict():
    out = run("helm", "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out


def test_default_install_objects(default_objects):
    kinds = sorted(o["kind"] for o in default_objects)
    assert kinds.count("Deployment") == 1
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service"} <= set(kinds)
    # Optional Prometheus Operator objects are off by default (their CRDs may not exist).
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(kinds)


def test_operator_pod_is_restricted_and_probed(default_objects):
    deployment = one(default_objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLOE_METRICS_PORT"] == "8000" and env["FLOE_HEALTH_PORT"] == "8080"
    assert container["resources"]["limits"]["memory"]
    # Replicas elect a leader: a rolling update's new pod stands by until the old one releases the Lease.
    assert "--leader-elect" in container["args"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    identity = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert identity == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert pod["serviceAccountName"] == one(default_objects, "ServiceAccount")["metadata"]["name"]


def test_operator_runs_under_the_shipped_least_privilege_role(default_objects):
    shipped = yaml.safe_load((CHART / "files" / "operator-clusterrole.yaml").read_text())
    role = next(o for o in by_kind(default_objects, "ClusterRole") if o["metadata"]["name"] == "floe-operator")
    assert role["rules"] == shipped["rules"]
    binding = next(o for o in by_kind(default_objects, "ClusterRoleBinding") if o["roleRef"]["name"] == "floe-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "floe", "namespace": "floe-system"}]


def test_persona_roles_and_approval_policy_are_installed(default_objects):
    names = {o["metadata"]["name"] for o in by_kind(default_objects, "ClusterRole")}
    assert {
        "floe-data-scientist",
        "floe-ml-engineer",
        "floe-model-quality-controller",
        "floe-mlops-engineer",
        "floe-governance-officer",
    } <= names
    assert by_kind(default_objects, "ValidatingAdmissionPolicy")
    without = helm_template(values={"rbac": {"personas": False}})
    assert "floe-data-scientist" not in {o["metadata"]["name"] for o in by_kind(without, "ClusterRole")}
    assert by_kind(without, "ValidatingAdmissionPolicy"), "the approval policy is not optional"


def test_catalog_configmap_is_what_the_operator_reads(default_objects):
    catalog_map = next(o for o in by_kind(default_objects, "ConfigMap") if o["metadata"]["name"] == "floe-catalog")
    assert parse_catalog(catalog_map["data"]["catalog.yaml"]) == DEFAULT_CATALOG
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "catalog")
    assert env["FLOE_CATALOG"] == f"{mount['mountPath']}/catalog.yaml"


def test_custom_catalog_is_rendered_and_rolls_the_pods():
    values = {
        "catalog": {
            "templates": {"tf": {"workspaceImage": "ws:1", "trainerImage": "tr:1"}},
            "computeProfiles": {"a100": {"gpus": 2, "nodeSelector": {"gpu": "a100"}}},
        }
    }
    objects = helm_template(values=values)
    catalog = parse_catalog(
        next(o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "floe-catalog")["data"][
            "catalog.yaml"
        ]
    )
    assert catalog.profile("a100").gpus == 2 and catalog.template("tf").trainer_image == "tr:1"
    checksum = "checksum/catalog"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    default_annotations = one(helm_template(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[checksum] != default_annotations[checksum]


@pytest.mark.parametrize("templates", [{}, {"tf": {"workspaceImage": "ws:1", "trainerImage": "tr:1"}}])
def test_catalog_policy_checks_the_names_the_operator_serves(templates):
    # The admission policy's parameter must list exactly the catalog the operator reads.
    objects = helm_template(values={"catalog": {"templates": templates}})
    configmaps = {o["metadata"]["name"]: o["data"] for o in by_kind(objects, "ConfigMap")}
    catalog = parse_catalog(configmaps["floe-catalog"]["catalog.yaml"])
    assert configmaps["floe-catalog-names"] == {
        "templates": ",".join(sorted(catalog.templates)),
        "computeProfiles": ",".join(sorted(catalog.profiles)),
    }
    bindings = {b["metadata"]["name"]: b for b in by_kind(objects, "ValidatingAdmissionPolicyBinding")}
    assert bindings["floe-catalog-names"]["spec"]["paramRef"]["name"] == "floe-catalog-names"


@pytest.mark.parametrize("account", [{}, {"name": "custom-operator"}])
def test_operator_guard_is_bound_to_the_account_the_operator_runs_as(account):
    objects = helm_template(values={"serviceAccount": account}, namespace="ops")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    bindings = {b["metadata"]["name"]: b for b in by_kind(objects, "ValidatingAdmissionPolicyBinding")}
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "ValidatingAdmissionPolicy")}
    for name in ("floe-operator-guard", "floe-operator-workloads"):
        guard = bindings[name]["spec"]
        assert guard["paramRef"] == {"name": pod["serviceAccountName"], "namespace": "ops",
                                     "parameterNotFoundAction": "Allow"}
        assert policies[guard["policyName"]]["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ServiceAccount"}


def test_the_chart_installs_the_tenancy_policy_and_the_roles_projects_and_jobs_bind():
    objects = helm_template()
    tenancy = yaml.safe_load_all((CHART / "files" / "tenancy.yaml").read_text())
    shipped = {o["metadata"]["name"]: o["spec"] for o in tenancy}
    rendered = {o["metadata"]["name"]: o["spec"] for o in objects
                if o["kind"].startswith("ValidatingAdmissionPolicy") and o["metadata"]["name"] in shipped}
    assert rendered == shipped
    project_role = yaml.safe_load((CHART / "files" / "operator-project-role.yaml").read_text())
    roles = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole")}
    # The operator binds it by the name its code declares.
    assert roles[OPERATOR_PROJECT_ROLE]["rules"] == project_role["rules"]
    trainer_role = yaml.safe_load((CHART / "files" / "trainer-role.yaml").read_text())
    assert roles[TRAINER_ROLE]["rules"] == trainer_role["rules"]


def test_two_replicas_by_default_with_a_disruption_budget_on_separate_nodes(default_objects):
    deployment = one(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert one(default_objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    single = helm_template(values={"replicaCount": 1})
    assert not by_kind(single, "PodDisruptionBudget")  # it would block every node drain
    assert "affinity" not in one(single, "Deployment")["spec"]["template"]["spec"]


def test_leader_election_role_is_the_operators_only_right_in_its_own_namespace(default_objects):
    shipped = yaml.safe_load((CHART / "files" / "operator-leader-role.yaml").read_text())
    (role,) = by_kind(default_objects, "Role")
    assert role["metadata"]["namespace"] == "floe-system" and role["rules"] == shipped["rules"]
    (binding,) = by_kind(default_objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "floe-system"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "floe", "namespace": "floe-system"}]


def test_monitoring_objects_select_the_metrics_endpoint():
    objects = helm_template(
        values={
            "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        }
    )
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(objects, "PodMonitor")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == shipped


def test_dashboard_configmap_carries_the_dashboard(default_objects):
    dashboard = next(o for o in by_kind(default_objects, "ConfigMap") if o["metadata"]["name"] == "floe-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["floe.json"].strip() == (CHART / "files" / "grafana-dashboard.json").read_text().strip()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": 2}, "replicas"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
        ({"catalog": {"templates": {"x": {"workspaceImage": "ws:1"}}}}, "trainerImage"),
        ({"catalog": {"computeProfiles": {"Big_GPU": {"gpus": 1}}}}, "Big_GPU"),
        ({"catalog": {"computeProfiles": {"gpu": {"gpus": -1}}}}, "gpus"),
        ({"catalog": {"computeProfiles": {"gpu": {"resources": {"requests": {"cpu": 4}}}}}}, "cpu"),
        ({"catalog": {"computeProfiles": {"gpu": {"tolerations": [{"operator": "Maybe"}]}}}}, "operator"),
        ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "often"}}}, "interval"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values, field):
    with pytest.raises(RenderError) as refused:
        helm_template(values=values)
    assert "values don't meet the specifications of the schema" in str(refused.value)
    assert field in str(refused.value)


def test_service_monitor_without_the_service_is_refused():
    with pytest.raises(RenderError, match="metrics.serviceMonitor.enabled needs metrics.service.enabled"):
        helm_template(values={"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_kustomize_base_equals_the_charts_default_output():
    base = documents(run("kustomize", "build", str(BASE)))
    chart = helm_template(include_crds=True)
    base_by_key = {object_key(o): o for o in base if o["kind"] != "Namespace"}
    chart_by_key = {object_key(o): o for o in chart}
    assert base_by_key == chart_by_key
    namespace = one(base, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
