"""Shared fixtures: the real control plane (or an existing cluster) and the operator running on it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dev import cluster as fixture

_failed = False


def pytest_runtest_logreport(report):
    global _failed
    if report.failed:
        _failed = True


@pytest.fixture(scope="session")
def cluster_workdir():
    path = Path(tempfile.mkdtemp(prefix="floe-cluster-"))
    yield path
    if _failed:
        print(f"\nfloe: tests failed; control-plane and operator logs kept in {path / 'plane' / 'logs'}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(cluster_workdir):
    """A real Kubernetes API server with the floe CRDs installed."""
    kubeconfig = os.environ.get("FLOE_TEST_KUBECONFIG")
    runner = None
    if kubeconfig:
        c = fixture.existing(kubeconfig)
    else:
        c, runner = fixture.start_local(cluster_workdir / "plane")
    try:
        fixture.install_crds(c)
        yield c
    finally:  # also when the CRDs fail to install: nothing started here outlives the session
        survivors = fixture.stop_local(c, runner) if runner else []
        if c.runner_state and not _failed:
            shutil.rmtree(c.runner_state, ignore_errors=True)
        # A pod's processes end with the node that runs them (a notebook's kernels too).
        assert not survivors, f"processes of the pod runner's containers outlived it: {survivors}"


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster, cluster_workdir):
    return fixture.install_operator_rbac(cluster, cluster_workdir)


@pytest.fixture(scope="session")
def floe_operator(cluster, operator_kubeconfig, cluster_workdir):
    """The operator, running as its own least-privilege ServiceAccount (never cluster-admin)."""
    logdir = cluster_workdir / "plane" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    op = fixture.OperatorProcess(operator_kubeconfig, logdir).start()
    yield op
    op.stop()
