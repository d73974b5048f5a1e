"""The README's data-loading steps, run as written with the real kubectl: `kubectl cp` and `kubectl exec` go
through the API server to the node (WebSocket from kubectl, SPDY from the API server to the kubelet)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "data" / "news_summary.csv"
NAMESPACE, LOADER, CLAIM = "news", "news-data-loader", "news-data"


def data_loading_steps() -> list[str]:
    """The commands of the README's usage block from applying data.yaml to deleting the loader pod."""
    usage = (REPO / "README.md").read_text().split("## Using floe", 1)[1]
    block = usage.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split(" #", 1)[0].strip() for line in block.splitlines()]
    first = next(i for i, c in enumerate(commands) if "manifests/examples/data.yaml" in c)
    last = next(i for i, c in enumerate(commands) if f"delete pod {LOADER}" in c)
    return commands[first:last + 1]


@pytest.fixture
def shell(cluster):
    """Runs a command line as a user would: this cluster's kubectl first on PATH, its kubeconfig."""
    # The README's namespace: an earlier test on this control plane (the notebook's) deletes its Project, whose
    # namespace the garbage collector deletes only once the Project is gone.
    def namespace_free() -> bool:
        namespace = cluster.get("namespace", NAMESPACE)
        owned_or_going = namespace and (namespace["metadata"].get("ownerReferences")
                                        or namespace["metadata"].get("deletionTimestamp"))
        return cluster.get("project", NAMESPACE) is None and not owned_or_going
    cluster.wait_for(namespace_free, 300, f"the Project {NAMESPACE} and its namespace to be gone")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{Path(cluster.kubectl_bin).parent}:{os.environ['PATH']}"}

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, timeout=300)

    yield run
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    if cluster.runner_state:  # the node's copy of the claim's files, so no later test finds them
        shutil.rmtree(cluster.runner_state / "pvcs" / NAMESPACE / CLAIM, ignore_errors=True)


def test_readme_data_loading_copies_the_sample_onto_the_volume(cluster, shell):
    *load, delete_loader = data_loading_steps()
    assert [c.split()[:4] for c in load[1:]] == [["kubectl", "-n", NAMESPACE, "wait"],
                                                ["kubectl", "-n", NAMESPACE, "cp"]]
    for command in load:
        done = shell(command)
        assert done.returncode == 0, f"{command}: {done.stderr.decode()}"

    listed = shell(f"kubectl -n {NAMESPACE} exec {LOADER} -- ls -l /data")
    assert listed.returncode == 0, listed.stderr.decode()
    assert SAMPLE.name in listed.stdout.decode()
    # The whole file back through stdout: 1.2 MB in many frames, byte for byte.
    copied = shell(f"kubectl -n {NAMESPACE} exec {LOADER} -- cat /data/{SAMPLE.name}")
    assert copied.stdout == SAMPLE.read_bytes()
    # The command runs as the pod's user, with stdin from kubectl.
    whoami = shell(f"echo hello | kubectl -n {NAMESPACE} exec -i {LOADER} -- sh -c 'id -u; cat'")
    assert whoami.stdout.decode().split() == ["1000", "hello"], whoami.stderr.decode()
    # A failing command's exit code and stderr reach the user.
    missing = shell(f"kubectl -n {NAMESPACE} exec {LOADER} -- ls /data/missing.csv")
    assert missing.returncode != 0
    assert "missing.csv" in missing.stderr.decode()
    unknown = shell(f"kubectl -n {NAMESPACE} exec {LOADER} -c nosuch -- ls")
    assert unknown.returncode != 0 and "nosuch" in unknown.stderr.decode()

    done = shell(delete_loader)
    assert done.returncode == 0, done.stderr.decode()
    if cluster.runner_state:
        volume = cluster.runner_state / "pvcs" / NAMESPACE / CLAIM
        assert (volume / SAMPLE.name).read_bytes() == SAMPLE.read_bytes(), "the file stays on the volume"
