"""The Workspace's notebook for real: the pod runner starts JupyterLab from the pod's own command, with the
Project's repository cloned into its home; a user reaches it as the README says (`kubectl port-forward`, the
token from the Workspace's token Secret) in headless Chromium, runs a cell and saves the notebook; stopping
the Workspace ends JupyterLab, and starting it again finds the notebook where it was saved. Then the README's
"From a notebook" cells run in a kernel of that notebook, as the notebook's own identity: they train a model,
plot its loss and call its deployed function; that identity can do no more than a data scientist, and cannot
change a Workspace."""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import websocket
import yaml

from dev.cluster import secret_data
from dev.controlplane import free_port, kubectl
from tests.gitserver import GitServer, served_repository

API = "floe.dev/v1alpha1"
PROJECT = f"lab-{uuid.uuid4().hex[:6]}"
WORKSPACE, REPOSITORY, SECRET, USER = "lab", "analysis.git", "git-token", "floe-bot"
GIT_TOKEN = secrets.token_urlsafe(24)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
NEWS_CSV = REPO / "tests/data/news_summary.csv"
MLOPS = "omar"


@pytest.fixture(scope="module")
def project(cluster, floe_operator, tmp_path_factory):
    if cluster.local is None:
        pytest.skip("the notebook runs on the local pod runner's machine")
    served = served_repository(tmp_path_factory.mktemp("git"), REPOSITORY, {"main": {"README.md": "analysis\n"}})
    cert, key = cluster.local.pki.issue("git-server", "git-server", server=True)
    with GitServer(served, USER, GIT_TOKEN, cert, key) as server:
        cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": PROJECT},
                       "spec": {"repository": {"url": server.url(REPOSITORY), "branch": "main",
                                               "credentialsSecretRef": {"name": SECRET}},
                                "members": [{"kind": "User", "name": MLOPS, "persona": "MLOpsEngineer"}]}}
                      ).check_returncode()
        cluster.wait_for(lambda: cluster.get("namespace", PROJECT), 60, "the project namespace")
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": PROJECT},
                       "data": secret_data({"username": USER, "password": GIT_TOKEN})}).check_returncode()
        yield PROJECT
        cluster.kubectl("delete", "project", PROJECT, "--wait=false")


@pytest.fixture(scope="module")
def workspace(cluster, project):
    """The Workspace, running; the tests below share it (a notebook's start is most of their time)."""
    cluster.apply({"apiVersion": API, "kind": "Workspace", "metadata": {"name": WORKSPACE, "namespace": PROJECT},
                   "spec": {"computeProfile": "cpu"}}).check_returncode()
    running(cluster)
    return WORKSPACE


def set_stopped(cluster, stopped: bool) -> None:
    cluster.kubectl("patch", "ws", WORKSPACE, "-n", PROJECT, "--type=merge",
                    "-p", json.dumps({"spec": {"stopped": stopped}}), check=True)


def running(cluster) -> None:
    cluster.wait_for(lambda: ((cluster.get("ws", WORKSPACE, "-n", PROJECT) or {}).get("status") or {})
                     .get("phase") == "Running", 120, "the Workspace to be Running")


class PortForward:
    """`kubectl port-forward svc/<workspace> <local>:8888`, as the README tells the user."""

    def __init__(self, cluster):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [cluster.kubectl_bin, f"--kubeconfig={cluster.kubeconfig}", "port-forward", "-n", PROJECT,
             f"svc/{WORKSPACE}", f"{self.port}:8888"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = self.proc.stdout.readline()  # "Forwarding from 127.0.0.1:<port> -> 8888" once it listens
        assert "Forwarding from" in first, first + self.proc.stdout.read()

    def get(self, path: str, token: str, body: dict | None = None) -> dict:
        """GET ``path`` of the Jupyter server's REST API (POST with a ``body``)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *_) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def login_token(cluster) -> str:
    """The README's step: the token from the Workspace's token Secret."""
    encoded = cluster.kubectl("get", "secret", f"{WORKSPACE}-jupyter", "-n", PROJECT,
                              "-o", "jsonpath={.data.token}", check=True).stdout
    return base64.b64decode(encoded).decode()


def jupyter_pid(cluster) -> int:
    """JupyterLab's process, from the server file it writes in its home."""
    runtime = cluster.runner_state / "pvcs" / PROJECT / f"{WORKSPACE}-home" / ".local/share/jupyter/runtime"
    (server_file,) = runtime.glob("jpserver-*.json")
    return json.loads(server_file.read_text())["pid"]


def chromium(downloads: Path):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), (
        "headless Chromium is needed: apt-get install chromium chromium-driver (make setup does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                 f"--user-data-dir={downloads / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def run_a_cell_in_the_browser(url: str, token: str, screenshot: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium(screenshot.parent)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(f"{url}/lab")  # no token yet: the login page
        wait.until(seen.presence_of_element_located((By.ID, "password_input"))).send_keys(token + Keys.ENTER)
        listing = "//*[contains(@class,'jp-DirListing-itemText')]"
        wait.until(seen.presence_of_element_located((By.XPATH, f"{listing}//*[text()='analysis']")))
        wait.until(seen.element_to_be_clickable(
            (By.CSS_SELECTOR, ".jp-LauncherCard[data-category='Notebook']"))).click()
        editor = wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")))
        # A cell run before the kernel is connected is not sent: wait for the status bar's "Idle".
        wait.until(seen.presence_of_element_located(
            (By.XPATH, "//*[contains(@class,'jp-StatusBar-Widget')]//*[contains(text(),'| Idle')]")))
        editor.click()
        editor.send_keys("print(6 * 7)")
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, ".jp-OutputArea-output"), "42"))
        ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
        unsaved = (By.CSS_SELECTOR, ".lm-TabBar-tab.jp-mod-dirty")
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, ".jp-Dialog")
                   or not page.find_elements(*unsaved))
        for keep_the_name in browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog button.jp-mod-accept"):
            keep_the_name.click()  # the first save of an untitled notebook offers to rename it
        wait.until(seen.invisibility_of_element_located(unsaved))
    finally:
        browser.save_screenshot(str(screenshot))
        browser.quit()


def test_notebook_opens_in_a_browser_runs_a_cell_and_keeps_it_across_a_restart(cluster, workspace, tmp_path):
    token = login_token(cluster)
    with PortForward(cluster) as forward:
        # Running only once JupyterLab answers: the first request through the tunnel is served.
        assert forward.get("/api/contents/analysis", token)["type"] == "directory"
        run_a_cell_in_the_browser(f"http://127.0.0.1:{forward.port}", token, tmp_path / "notebook.png")
    assert (tmp_path / "notebook.png").stat().st_size > 0
    pid = jupyter_pid(cluster)

    set_stopped(cluster, True)
    cluster.wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "JupyterLab to end")
    set_stopped(cluster, False)
    running(cluster)
    assert jupyter_pid(cluster) != pid
    with PortForward(cluster) as forward:
        saved = forward.get("/api/contents/Untitled.ipynb", token)["content"]
    outputs = [o for cell in saved["cells"] for o in cell.get("outputs", [])]
    assert [o["text"] for o in outputs] == ["42\n"], saved


# --- the Python API in a kernel of the notebook, as the README's "From a notebook" shows it ---------------

TRAIN_TIMEOUT = 900  # a shared 2-core machine: the trainer's imports, 20 steps of a tiny T5, ROUGE on 8 rows
DEPLOY_TIMEOUT = 600


class Kernel:
    """A kernel of the notebook's Jupyter server, driven as JupyterLab drives it: started through the REST
    API, cells sent as execute requests on its websocket, outputs read from the replies."""

    def __init__(self, forward: PortForward, token: str):
        kernel = forward.get("/api/kernels", token, body={"name": "python3"})["id"]
        self.socket = websocket.create_connection(f"ws://127.0.0.1:{forward.port}/api/kernels/{kernel}/channels",
                                                  header=[f"Authorization: token {token}"])
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float) -> dict:
        """Runs one cell; returns its stdout, stderr, results (mime type -> data) and error, if any."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                       "username": "test", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        cell: dict = {"stdout": "", "stderr": "", "results": {}, "error": None}
        deadline = time.monotonic() + timeout
        while True:
            self.socket.settimeout(max(deadline - time.monotonic(), 0.1))
            message = json.loads(self.socket.recv())  # a timeout raises: the cell did not finish in time
            if message.get("channel") != "iopub" or message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "stream":
                cell[content["name"]] += content["text"]
            elif kind in ("execute_result", "display_data"):
                cell["results"].update(content["data"])
            elif kind == "error":
                cell["error"] = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                return cell

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *_) -> None:
        self.socket.close()


def readme_cells() -> list[str]:
    """The Python cells of the README's "From a notebook", as a user copies them."""
    section = (REPO / "README.md").read_text().split("\n## From a notebook\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def example(kind: str) -> dict:
    """An object of examples/notebook.yaml, in this test's Project."""
    found = next(d for d in yaml.safe_load_all((REPO / "examples/notebook.yaml").read_text()) if d["kind"] == kind)
    found["metadata"]["namespace"] = PROJECT
    return found


def claim(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": PROJECT},
            "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


# What the notebook's identity may not do, as a data scientist may not: approve a deployment, create a Job
# other than a predict Job (a ServiceAccount of the Project's namespace meets the predict policy too), read a
# Secret (not even the notebook's own login token); and unlike a data scientist, change what a Workspace runs
# (its own included: code in one notebook must not choose another's image).
IDENTITY_CHECKS = """
import json
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

def answer(call):
    try:
        call()
    except ApiException as err:
        return f"{err.status} {json.loads(err.body)['message']}"
    return "allowed"

miner = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "miner-"},
         "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
             {"name": "miner", "image": "busybox:1.36", "command": ["sh", "-c", "id"]}]}}}}
print(json.dumps({
    "whoami": client.whoami(),
    "approve": answer(lambda: client.approve("summarize-notebook")),
    "job": answer(lambda: k8s.BatchV1Api(client.api).create_namespaced_job(client.namespace, miner, dry_run="All")),
    "secret": answer(lambda: k8s.CoreV1Api(client.api).read_namespaced_secret("TOKEN_SECRET", client.namespace)),
    "workspace": answer(lambda: k8s.CustomObjectsApi(client.api).patch_namespaced_custom_object(
        "floe.dev", "v1alpha1", client.namespace, "workspaces", "WORKSPACE", {"spec": {"image": "miner:1"}},
        dry_run="All")),
}))
""".replace("TOKEN_SECRET", f"{WORKSPACE}-jupyter").replace("WORKSPACE", WORKSPACE)


def deployed(cluster, name: str) -> bool:
    status = (cluster.get("snowflakedeployments.floe.dev", name, "-n", PROJECT) or {}).get("status") or {}
    assert status.get("phase") != "Failed", status.get("message")
    return status.get("phase") == "Deployed"


def test_the_readme_cells_train_plot_and_predict_in_the_notebook_as_a_data_scientist(cluster, workspace):
    import floe

    started = time.monotonic()
    for name in ("news-data", "news-models"):
        cluster.apply(claim(name)).check_returncode()
    data = cluster.runner_state / "pvcs" / PROJECT / "news-data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(NEWS_CSV, data / "news_summary.csv")
    deployment = example("SnowflakeDeployment")  # as an ML engineer would, outside the notebook
    cluster.apply(deployment).check_returncode()
    train, plot, predict = readme_cells()

    with PortForward(cluster) as forward, Kernel(forward, login_token(cluster)) as kernel:
        trained = kernel.run(train, TRAIN_TIMEOUT)
        assert trained["error"] is None, trained["error"]
        assert "Succeeded" in trained["stdout"] and "100.0%" in trained["stdout"], trained["stdout"]
        assert "rougeL" in trained["results"]["text/plain"]  # the final metrics

        # The governance officer approves, outside the notebook; the deploy Job starts meanwhile.
        governance = floe.Client(PROJECT, kubeconfig=str(cluster.kubeconfig), as_user="gwen",
                                 as_group="floe:governance-officers")
        assert governance.approve(deployment["metadata"]["name"])["approvedBy"] == "gwen"

        plotted = kernel.run(plot, 120)
        assert plotted["error"] is None, plotted["error"]
        assert base64.b64decode(plotted["results"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"

        checks = kernel.run(IDENTITY_CHECKS, 60)
        assert checks["error"] is None, checks["error"]
        answers = json.loads(checks["stdout"])
        assert answers["whoami"] == f"system:serviceaccount:{PROJECT}:{WORKSPACE}-notebook"
        assert answers["approve"].startswith("403 "), answers
        assert answers["job"].startswith("403 ") and "may create only predict Jobs here" in answers["job"], answers
        assert answers["secret"].startswith("403 "), answers
        assert answers["workspace"].startswith("403 ") and "cannot patch" in answers["workspace"], answers

        cluster.wait_for(lambda: deployed(cluster, deployment["metadata"]["name"]), DEPLOY_TIMEOUT,
                         "the notebook's model to be deployed")
        predicted = kernel.run(predict, DEPLOY_TIMEOUT)
        assert predicted["error"] is None, predicted["error"]
        assert "summary" in predicted["results"]["text/plain"]
        summaries = kernel.run("print(json.dumps(_['summary'].tolist()))", 30)
        assert [bool(s.strip()) for s in json.loads(summaries["stdout"])] == [True, True], summaries
    print(f"\nthe README's notebook cells, trained, deployed and called: {time.monotonic() - started:.0f} s")


def test_an_mlops_engineer_stops_a_notebook_but_cannot_change_what_it_runs(cluster, workspace):
    # The notebook runs with a data scientist's rights but Workspace writes: a persona without them (MLOps
    # engineers hold patch on Workspaces, to stop idle ones) must not choose its image.
    cluster.wait_for(lambda: cluster.kubectl("auth", "can-i", "patch", "workspaces.floe.dev", "-n", PROJECT,
                                             as_user=MLOPS).stdout.strip() == "yes", 60, "the MLOps engineer's role")

    def patch(spec: dict):
        return cluster.kubectl("patch", "ws", WORKSPACE, "-n", PROJECT, "--type=merge", "--dry-run=server",
                               "-p", json.dumps({"spec": spec}), as_user=MLOPS)

    stop = patch({"stopped": True})
    assert stop.returncode == 0, stop.stderr
    for spec in ({"image": "registry.example/miner:1"}, {"template": "pytorch"}):
        swapped = patch(spec)
        assert swapped.returncode != 0 and f"may only stop or start Workspace {WORKSPACE}" in swapped.stderr, spec


def test_the_operator_grants_the_notebook_role_to_a_notebooks_own_account_only(cluster, project,
                                                                               operator_kubeconfig):
    """What the operator's identity may bind for notebooks (floe-operator-workloads), tried as the operator."""
    def binding(name: str, role: str = "floe-notebook", account: str | None = None, namespace: str = PROJECT):
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": PROJECT,
                             "labels": {"app.kubernetes.io/managed-by": "floe-operator"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account or name, "namespace": namespace}]}

    def as_operator(obj: dict):
        return kubectl(cluster.kubectl_bin, operator_kubeconfig, "create", "--dry-run=server", "-f", "-",
                       input=json.dumps(obj))

    allowed = as_operator(binding("probe-notebook"))
    assert allowed.returncode == 0, allowed.stderr
    for forged in (binding("probe-notebook", account="floe-trainer"),  # a trainer's account: its code is the user's
                   binding("probe-notebook", role="floe-ml-engineer"),  # more than a data scientist
                   binding("probe-notebook", role="floe-data-scientist"),  # more than a notebook: Workspace writes
                   binding("probe-notebook", namespace="default"),  # an account of another namespace
                   binding("probe-train")):  # not a notebook's name
        refused = as_operator(forged)
        assert refused.returncode != 0 and "floe-notebook to a notebook's own ServiceAccount" in refused.stderr
