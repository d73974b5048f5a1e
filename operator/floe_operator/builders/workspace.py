"""Workspace → StatefulSet (JupyterLab), Service, home PVC, token Secret and the notebook's identity. Pure
functions.

The home directory is a PVC of its own rather than a volumeClaimTemplate so its lifetime follows
``spec.storage.retain``: without an ownerReference it outlives the Workspace, and a Workspace created
again under the same name finds its files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from floe_contract.paths import SERVICE_ACCOUNT_DIR, SNOWFLAKE_DIR

from floe_operator.api.project import ProjectMember, Repository
from floe_operator.api.workspace import WorkspaceSpec
from floe_operator.builders.common import APP_NAME_LABEL, MANAGED_BY
from floe_operator.builders.project_members import RBAC_GROUP
from floe_operator.builders.repository import (
    GIT_IMAGE,
    RESTRICTED_CONTAINER,
    clone_container,
    credentials_volume,
    repo_dir,
)
from floe_operator.catalog import ComputeProfile, Template

JUPYTER_PORT = 8888
HOME = "/home/floe"
UID = 1000
TOKEN_KEY = "token"
TOKEN_LIFETIME_SECONDS = 3600  # the kubelet renews a projected token before it expires
# What code in a notebook may do in its Project (personas.yaml): a data scientist's work, no Workspace writes.
NOTEBOOK_ROLE = "floe-notebook"
WORKSPACE_APP = "floe-workspace"  # the APP_NAME_LABEL of notebook StatefulSets and pods

@dataclass(frozen=True)
class WorkspaceNames:
    workspace: str

    @property
    def statefulset(self) -> str:
        return self.workspace

    @property
    def service(self) -> str:
        return self.workspace

    @property
    def pod(self) -> str:
        return f"{self.workspace}-0"

    @property
    def home(self) -> str:
        return f"{self.workspace}-home"

    @property
    def token(self) -> str:
        return f"{self.workspace}-jupyter"

    @property
    def identity(self) -> str:
        """The notebook's ServiceAccount and its RoleBinding. The suffix keeps it apart from every trainer's
        (<job>-train) and from a workload's own name."""
        return f"{self.workspace}-notebook"


@dataclass(frozen=True)
class WorkspaceInputs:
    """Everything a Workspace's objects depend on, resolved by the handler."""

    name: str
    namespace: str
    spec: WorkspaceSpec
    template: Template
    profile: ComputeProfile
    owner: dict  # ownerReference to the Workspace
    repository: Repository | None = None
    snowflake_secret: str | None = None
    git_image: str = GIT_IMAGE

    @property
    def names(self) -> WorkspaceNames:
        return WorkspaceNames(self.name)

    @property
    def labels(self) -> dict[str, str]:
        return {
            **MANAGED_BY,
            APP_NAME_LABEL: WORKSPACE_APP,
            "app.kubernetes.io/instance": self.name,
            "floe.dev/workspace": self.name,
        }


def url(names: WorkspaceNames, namespace: str) -> str:
    return f"http://{names.service}.{namespace}.svc:{JUPYTER_PORT}/lab"


def _metadata(inputs: WorkspaceInputs, name: str, owned: bool = True) -> dict:
    metadata = {"name": name, "namespace": inputs.namespace, "labels": dict(inputs.labels)}
    if owned:
        metadata["ownerReferences"] = [inputs.owner]
    return metadata


def home_claim(inputs: WorkspaceInputs) -> dict:
    """The home PVC; owned by the Workspace (deleted with it) only when it is not retained."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(inputs, inputs.names.home, owned=not inputs.spec.storage.retain),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": inputs.spec.storage.size}},
        },
    }


def token_secret(inputs: WorkspaceInputs, token: str) -> dict:
    """The JupyterLab token; the Project's data scientists and ML engineers read it (token_reader_role)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(inputs, inputs.names.token),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


# Who may read a notebook's login token: the personas that work in notebooks.
TOKEN_READER_PERSONAS = ("DataScientist", "MLEngineer")


def token_reader_role(inputs: WorkspaceInputs) -> dict:
    """Read access to this notebook's token Secret and no other (the admission guard lets the operator write
    no broader Role)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(inputs, inputs.names.token),
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [inputs.names.token],
                   "verbs": ["get"]}],
    }


def token_reader_binding(workspace: str, namespace: str, owner: dict, members: Iterable[ProjectMember]) -> dict:
    """The Project's data scientists and ML engineers may read the token (kept in sync as members change)."""
    name = WorkspaceNames(workspace).token
    subjects = sorted({(m.kind, m.name) for m in members if m.persona in TOKEN_READER_PERSONAS})
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner],
                     "labels": {**MANAGED_BY, "floe.dev/workspace": workspace}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}
                     for kind, subject in subjects],
    }


def notebook_service_account(inputs: WorkspaceInputs) -> dict:
    """The notebook's identity; its token reaches only the notebook container (a projected volume)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(inputs, inputs.names.identity),
        "automountServiceAccountToken": False,
    }


def notebook_role_binding(inputs: WorkspaceInputs) -> dict:
    """The notebook role for the notebook's ServiceAccount, in the Project namespace only: code in the notebook
    can do what a data scientist does with `import floe`, and cannot change a Workspace."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(inputs, inputs.names.identity),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": NOTEBOOK_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": inputs.names.identity, "namespace": inputs.namespace}],
    }


def _service_account_volume() -> dict:
    """A short-lived token bound to the pod, the cluster's CA and the namespace, where in-cluster clients look."""
    return {
        "name": "service-account",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_LIFETIME_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }


def service(inputs: WorkspaceInputs) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(inputs, inputs.names.service),
        "spec": {
            "type": "ClusterIP",
            "selector": {"floe.dev/workspace": inputs.name},
            "ports": [{"name": "http", "port": JUPYTER_PORT, "targetPort": "http"}],
        },
    }


def _volumes(inputs: WorkspaceInputs) -> list[dict]:
    volumes = [
        {"name": "home", "persistentVolumeClaim": {"claimName": inputs.names.home}},
        {"name": "tmp", "emptyDir": {}},
        _service_account_volume(),
    ]
    if inputs.snowflake_secret:
        volumes.append({"name": "snowflake", "secret": {"secretName": inputs.snowflake_secret, "defaultMode": 0o440}})
    if inputs.repository and (credentials := credentials_volume(inputs.repository)):
        volumes.append(credentials)
    return volumes


def _jupyter_container(inputs: WorkspaceInputs) -> dict:
    env = [
        {"name": "HOME", "value": HOME},
        {
            "name": "JUPYTER_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": inputs.names.token, "key": TOKEN_KEY}},
        },
        {"name": "FLOE_WORKSPACE", "value": inputs.name},
        {"name": "FLOE_TEMPLATE", "value": inputs.spec.template},
        {"name": "FLOE_TEMPLATE_PACKAGES", "value": " ".join(inputs.template.packages)},
    ]
    mounts = [
        {"name": "home", "mountPath": HOME},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "service-account", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
    ]
    if inputs.snowflake_secret:
        env.append({"name": "FLOE_SNOWFLAKE_DIR", "value": SNOWFLAKE_DIR})
        mounts.append({"name": "snowflake", "mountPath": SNOWFLAKE_DIR, "readOnly": True})
    if inputs.repository:
        env += [
            {"name": "FLOE_REPO_URL", "value": inputs.repository.url},
            {"name": "FLOE_REPO_BRANCH", "value": inputs.repository.branch},
            {"name": "FLOE_REPO_DIR", "value": f"{HOME}/{repo_dir(inputs.repository.url)}"},
        ]
    return {
        "name": "jupyter",
        "image": inputs.spec.image or inputs.template.workspace_image,
        "command": ["jupyter", "lab"],
        "args": [
            "--ip=0.0.0.0",
            f"--port={JUPYTER_PORT}",
            "--no-browser",
            f"--ServerApp.root_dir={HOME}",
        ],
        "ports": [{"name": "http", "containerPort": JUPYTER_PORT}],
        "env": env,
        "resources": inputs.profile.container_resources(),
        "securityContext": RESTRICTED_CONTAINER,
        # /api answers without the token, so the probe needs no secret.
        "readinessProbe": {
            "httpGet": {"path": "/api", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": mounts,
    }


def statefulset(inputs: WorkspaceInputs) -> dict:
    """One JupyterLab pod (none while stopped) with the home PVC mounted, running as the notebook's
    ServiceAccount (its token in the notebook container only, not in the repository clone)."""
    pod_spec: dict = {
        "serviceAccountName": inputs.names.identity,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_jupyter_container(inputs)],
        "volumes": _volumes(inputs),
        **inputs.profile.scheduling(),
    }
    if inputs.repository:
        pod_spec["initContainers"] = [
            clone_container(inputs.repository, image=inputs.git_image, volume="home", root=HOME)
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(inputs, inputs.names.statefulset),
        "spec": {
            "replicas": 0 if inputs.spec.stopped else 1,
            "serviceName": inputs.names.service,
            "selector": {"matchLabels": {"floe.dev/workspace": inputs.name}},
            "template": {"metadata": {"labels": dict(inputs.labels)}, "spec": pod_spec},
        },
    }


@dataclass(frozen=True)
class WorkspaceState:
    phase: str
    ready: bool
    reason: str
    message: str


def workspace_state(stopped: bool, statefulset_status: dict | None, clone_failed: str | None = None) -> WorkspaceState:
    """Phase and readiness from the StatefulSet's status and, while the notebook is not ready, why its pod
    cannot start (the repository clone failed: git's message)."""
    status = statefulset_status or {}
    pods = status.get("replicas", 0)
    if stopped:
        if pods:
            return WorkspaceState("Stopped", False, "Stopping", "stopping the notebook; the home volume is kept")
        return WorkspaceState("Stopped", True, "Stopped", "stopped; the home volume is kept")
    if status.get("readyReplicas", 0) >= 1:
        return WorkspaceState("Running", True, "Running", "JupyterLab is serving")
    if clone_failed:
        message = f"cloning the Project's repository failed (retried with back-off): {clone_failed}"
        return WorkspaceState("Pending", False, "RepositoryCloneFailed", message)
    if pods:
        return WorkspaceState("Pending", False, "Starting", "waiting for the notebook pod to become ready")
    return WorkspaceState("Pending", False, "Creating", "waiting for the notebook pod to be created")
