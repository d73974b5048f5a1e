"""The Project's repository, really cloned: the pod runner runs the clone init container's git against a Git
server on loopback (smart HTTP over TLS) that takes only the token in the Project's credentials Secret."""

from __future__ import annotations

import base64
import secrets
import uuid

import pytest

from dev.cluster import secret_data
from dev.controlplane import free_port
from tests.gitserver import GitServer, git, served_repository

API = "floe.dev/v1alpha1"
PROJECT = f"clone-{uuid.uuid4().hex[:6]}"
REPOSITORY, SECRET, USER = "models.git", "git-token", "floe-bot"
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    """A repository with a main and a feature branch, each saying which it is in BRANCH.txt."""
    if cluster.local is None:
        pytest.skip("the clone runs on the local pod runner's machine")
    served = served_repository(tmp_path_factory.mktemp("git"), REPOSITORY,
                               {branch: {"BRANCH.txt": f"{branch}\n"} for branch in ("main", "feature")})
    cert, key = cluster.local.pki.issue("git-server", "git-server", server=True)
    with GitServer(served, USER, TOKEN, cert, key) as running:
        yield running


@pytest.fixture(scope="module")
def project(cluster, floe_operator, server):
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": PROJECT},
                   "spec": {"repository": {"url": server.url(REPOSITORY), "branch": "main",
                                           "credentialsSecretRef": {"name": SECRET}}}}).check_returncode()
    cluster.wait_for(lambda: cluster.get("namespace", PROJECT), 60, "the project namespace")
    set_token(cluster, TOKEN)
    yield PROJECT
    cluster.kubectl("delete", "project", PROJECT, "--wait=false")


def set_token(cluster, token: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": PROJECT},
                   "data": secret_data({"username": USER, "password": token})}).check_returncode()


def code_job(name: str, branch: str | None = None) -> dict:
    code = {"command": ["sh", "-c", "cat BRANCH.txt"], **({"branch": branch} if branch else {})}
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": PROJECT},
            "spec": {"model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "/data/news.csv"}},
                     "resources": {"gpus": 0, "cpu": "500m", "memory": "1Gi"}, "backoffLimit": 0, "code": code}}


def finished(cluster, name: str) -> dict:
    status = cluster.wait_for(
        lambda: (s := (cluster.get("ftj", name, "-n", PROJECT) or {}).get("status") or {}).get("phase")
        in ("Succeeded", "Failed") and s, 120, f"FineTuneJob {name} to finish")
    return status


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def assert_clone_failed(status: dict, *cause: str) -> None:
    assert status["phase"] == "Failed"
    failed = condition(status, "Failed")
    assert failed["reason"] == "RepositoryCloneFailed", failed
    for words in cause:
        assert words in status["message"] and words in failed["message"], status["message"]


def test_workspace_clones_the_projects_branch_into_its_home(cluster, project):
    cluster.apply({"apiVersion": API, "kind": "Workspace", "metadata": {"name": "nb", "namespace": PROJECT},
                   "spec": {"computeProfile": "cpu"}}).check_returncode()
    cluster.wait_for(lambda: ((cluster.get("pod", "nb-0", "-n", PROJECT) or {}).get("status") or {}).get("phase")
                     == "Running", 120, "the notebook pod to start after its clone")
    checkout = cluster.runner_state / "pvcs" / PROJECT / "nb-home" / "models"
    assert (checkout / "BRANCH.txt").read_text() == "main\n"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=checkout) == "main"
    assert checkout.stat().st_uid == 1000, "cloned as the notebook's user"
    seen = cluster.kubectl("exec", "-n", PROJECT, "nb-0", "--", "cat", "/home/floe/models/BRANCH.txt", check=True)
    assert seen.stdout == "main\n", "the notebook sees the checkout in its home"


def test_finetunejob_runs_code_from_its_branch(cluster, project):
    cluster.apply(code_job("on-feature", branch="feature")).check_returncode()
    assert finished(cluster, "on-feature")["phase"] == "Succeeded"
    logs = cluster.kubectl("logs", "-n", PROJECT, "job/on-feature-train", check=True).stdout
    assert logs.strip() == "feature"


def test_unknown_branch_fails_the_job_naming_the_branch(cluster, project):
    cluster.apply(code_job("no-branch", branch="no-such-branch")).check_returncode()
    assert_clone_failed(finished(cluster, "no-branch"), "no-such-branch", "not found")


def test_wrong_token_fails_the_job_with_authentication_failed(cluster, project):
    set_token(cluster, "not-the-token")
    try:
        cluster.apply(code_job("bad-token")).check_returncode()
        assert_clone_failed(finished(cluster, "bad-token"), "Authentication failed")
    finally:
        set_token(cluster, TOKEN)


def test_unreachable_repository_fails_the_job_naming_the_host(cluster, project, server):
    closed = f"https://127.0.0.1:{free_port()}/{REPOSITORY}"
    patch = {"spec": {"repository": {"url": closed}}}
    cluster.kubectl("patch", "project", PROJECT, "--type=merge", "-p", str(patch).replace("'", '"'), check=True)
    try:
        cluster.apply(code_job("unreachable")).check_returncode()
        assert_clone_failed(finished(cluster, "unreachable"), closed, "connect")
    finally:
        patch = {"spec": {"repository": {"url": server.url(REPOSITORY)}}}
        cluster.kubectl("patch", "project", PROJECT, "--type=merge", "-p", str(patch).replace("'", '"'), check=True)


def verdict(cluster, workspace: str) -> dict | None:
    """The Workspace's Ready condition once it says more than that the notebook is on its way."""
    status = (cluster.get("ws", workspace, "-n", PROJECT) or {}).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return ready if ready.get("reason") not in (None, "Creating", "Starting") else None


def test_a_notebook_whose_clone_fails_says_why(cluster, project):
    set_token(cluster, "not-the-token")
    try:
        cluster.apply({"apiVersion": API, "kind": "Workspace", "metadata": {"name": "nb-denied", "namespace": PROJECT},
                       "spec": {"computeProfile": "cpu"}}).check_returncode()
        ready = cluster.wait_for(lambda: verdict(cluster, "nb-denied"), 120,
                                 "the notebook's Ready condition to say why it does not start")
        assert (ready["status"], ready["reason"]) == ("False", "RepositoryCloneFailed"), ready
        assert "Authentication failed" in ready["message"]
    finally:
        cluster.kubectl("delete", "ws", "nb-denied", "-n", PROJECT, "--wait=false")
        set_token(cluster, TOKEN)


def test_the_token_is_in_no_spec_status_event_or_log(cluster, project, floe_operator):
    encoded = base64.b64encode(TOKEN.encode()).decode()
    secret = cluster.kubectl("get", "secret", SECRET, "-n", PROJECT, "-o", "yaml", check=True).stdout
    assert encoded in secret, "the search below finds the token where it is"
    objects = cluster.kubectl("get", "project,ws,ftj,statefulsets,jobs,pods,configmaps,events", "-n", PROJECT,
                              "-o", "yaml", check=True).stdout
    objects += cluster.kubectl("get", "project", PROJECT, "-o", "yaml", check=True).stdout
    logs = [floe_operator.log_path, cluster.local.logs / "podrunner.log",
            *(cluster.runner_state / "pods" / PROJECT).rglob("*.log"),
            *(cluster.runner_state / "pods" / PROJECT).rglob("*.termination-log")]
    assert len(logs) > 4, logs
    for text in [objects, *(path.read_text(errors="replace") for path in logs)]:
        assert TOKEN not in text and encoded not in text
