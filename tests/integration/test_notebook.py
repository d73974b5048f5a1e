"""The Workspace's notebook for real: the pod runner starts JupyterLab from the pod's own command, with the
Project's repository cloned into its home; a user reaches it as the README says (`kubectl port-forward`, the
token from the Workspace's token Secret) in headless Chromium, runs a cell and saves the notebook; stopping
the Workspace ends JupyterLab, and starting it again finds the notebook where it was saved."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from dev.cluster import secret_data
from dev.controlplane import free_port
from tests.gitserver import GitServer, served_repository

API = "floe.dev/v1alpha1"
PROJECT = f"lab-{uuid.uuid4().hex[:6]}"
WORKSPACE, REPOSITORY, SECRET, USER = "lab", "analysis.git", "git-token", "floe-bot"
GIT_TOKEN = secrets.token_urlsafe(24)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def project(cluster, floe_operator, tmp_path_factory):
    if cluster.local is None:
        pytest.skip("the notebook runs on the local pod runner's machine")
    served = served_repository(tmp_path_factory.mktemp("git"), REPOSITORY, {"main": {"README.md": "analysis\n"}})
    cert, key = cluster.local.pki.issue("git-server", "git-server", server=True)
    with GitServer(served, USER, GIT_TOKEN, cert, key) as server:
        cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": PROJECT},
                       "spec": {"repository": {"url": server.url(REPOSITORY), "branch": "main",
                                               "credentialsSecretRef": {"name": SECRET}}}}).check_returncode()
        cluster.wait_for(lambda: cluster.get("namespace", PROJECT), 60, "the project namespace")
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": PROJECT},
                       "data": secret_data({"username": USER, "password": GIT_TOKEN})}).check_returncode()
        yield PROJECT
        cluster.kubectl("delete", "project", PROJECT, "--wait=false")


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

    def get(self, path: str, token: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
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


def test_notebook_opens_in_a_browser_runs_a_cell_and_keeps_it_across_a_restart(cluster, project, tmp_path):
    cluster.apply({"apiVersion": API, "kind": "Workspace", "metadata": {"name": WORKSPACE, "namespace": PROJECT},
                   "spec": {"computeProfile": "cpu"}}).check_returncode()
    running(cluster)
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
