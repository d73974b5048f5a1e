"""A pod that serves ports gets a network namespace of its own on the local pod runner (two trainers can both
serve metrics on 9090); like a pod on a cluster's Service network, it still reaches the API server at the
address it is given, so a trainer's progress reaches its FineTuneJob while it trains."""

from __future__ import annotations

import pytest

NAMESPACE = "pod-network"
# What a trainer does first: a request to the API server, with the pod's ServiceAccount token and CA.
CALL_THE_API = """
import os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
url = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/version"
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
print(urllib.request.urlopen(request, context=ssl.create_default_context(cafile=f"{sa}/ca.crt")).read().decode())
"""


@pytest.fixture
def namespace(cluster):
    if cluster.local is None:
        pytest.skip("the local pod runner's networking")
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def test_a_pod_with_its_own_network_reaches_the_api_server(cluster, namespace):
    cluster.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "calls-the-api", "namespace": namespace},
        "spec": {
            "nodeName": "local-runner", "restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": "ghcr.io/floe-dev/floe-trainer:0.1.0",
                            "command": ["python", "-c", CALL_THE_API],
                            "ports": [{"name": "metrics", "containerPort": 9090}]}],
        },
    })
    def phase():
        return ((cluster.get("pod", "calls-the-api", "-n", namespace) or {}).get("status") or {}).get("phase")

    ended = cluster.wait_for(lambda: (p := phase()) in ("Succeeded", "Failed") and p, 120, "the pod to end")
    log = cluster.kubectl("logs", "calls-the-api", "-n", namespace).stdout
    assert ended == "Succeeded", log
    assert '"gitVersion"' in log
