"""The informer the operator follows trainer Jobs and pods with, against the real API server (on ConfigMaps here:
the informer is the same for any kind). What a reconcile relies on: everything that existed is in the store once
it says it is synced; every later change arrives, deletions too; and a resourceVersion the server no longer
keeps ends in a new listing, not in a watch that never resumes."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from floe_operator import informer as informer_module
from floe_operator.informer import Expired, Informer, Store

LABEL = "floe.dev/informer-test"
TIMEOUT_S = 30


def configmap(name: str, namespace: str, key: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: key}}, "data": {"value": "1"}}


def key_of(obj: dict) -> tuple[str, str] | None:
    meta = obj["metadata"]
    return (meta["namespace"], meta["labels"][LABEL]) if LABEL in (meta.get("labels") or {}) else None


def summary_of(obj: dict) -> dict:
    return {"name": obj["metadata"]["name"], "data": obj.get("data") or {}}


@pytest.fixture
def namespace(cluster):
    name = f"informer-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name, check=True)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


class Following:
    """An informer on the namespace's ConfigMaps, and the keys it reported changed, in order."""

    def __init__(self, cluster, namespace: str):
        self.changed: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.store = Store(key_of, summary_of)
        self.informer = Informer(cluster.api(), f"/api/v1/namespaces/{namespace}/configmaps", LABEL, self.store,
                                 self.changed.put_nowait)

    async def next_change(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.changed.get(), TIMEOUT_S)

    def names(self, key: tuple[str, str]) -> list[str]:
        return sorted(s["name"] for s in self.store.get(key))


def test_listing_then_every_change(cluster, namespace):
    cluster.apply(configmap("before", namespace, "a"))
    kubectl = cluster.kubectl

    async def scenario():
        following = Following(cluster, namespace)
        following.informer.start()
        try:
            await asyncio.wait_for(following.informer.synced.wait(), TIMEOUT_S)
            assert following.names((namespace, "a")) == ["before"]  # existed before: there once synced
            assert await following.next_change() == (namespace, "a")

            await asyncio.to_thread(kubectl, "create", "configmap", "later", "-n", namespace, "--from-literal=value=1")
            # unlabelled: not selected, so the next change reported is the label's
            await asyncio.to_thread(kubectl, "label", "configmap", "later", "-n", namespace, f"{LABEL}=b")
            assert await following.next_change() == (namespace, "b")
            assert following.names((namespace, "b")) == ["later"]

            # an update the summary does not keep (an annotation) wakes nothing; the data change after it does
            await asyncio.to_thread(kubectl, "annotate", "configmap", "later", "-n", namespace, "note=x")
            await asyncio.to_thread(kubectl, "patch", "configmap", "later", "-n", namespace, "-p",
                                    '{"data":{"value":"2"}}')
            assert await following.next_change() == (namespace, "b")
            assert [s["data"] for s in following.store.get((namespace, "b"))] == [{"value": "2"}]

            await asyncio.to_thread(kubectl, "delete", "configmap", "before", "-n", namespace)
            assert await following.next_change() == (namespace, "a")
            assert following.names((namespace, "a")) == []
            assert following.changed.empty()
        finally:
            following.informer.stop()

    asyncio.run(scenario())


def test_a_watch_ends_and_resumes_and_an_expired_one_lists_again(cluster, namespace, monkeypatch):
    """The API server ends each watch after its timeout: the next resumes from the last resourceVersion seen,
    missing nothing. When the server no longer keeps that version (410 Gone: an ERROR event, which
    test_informer_store decodes), only a new listing can say what changed meanwhile: here the first watch
    ends as expired, before anything is created."""
    monkeypatch.setattr(informer_module, "WATCH_TIMEOUT_S", 1)
    lists, watches = [], []
    second_watch = threading.Event()
    listed, watched = Informer._list, Informer._watch

    def counted_list(self, api):
        lists.append(1)
        return listed(self, api)

    def watch_expiring_first(self, api, version):
        watches.append(version)
        if len(watches) == 1:
            raise Expired("too old resource version")
        if len(watches) == 3:  # the second watch (after the new listing) ended: a resumed one runs
            second_watch.set()
        return watched(self, api, version)

    monkeypatch.setattr(Informer, "_list", counted_list)
    monkeypatch.setattr(Informer, "_watch", watch_expiring_first)
    following = Following(cluster, namespace)

    async def scenario():
        following.informer.start()
        try:
            assert await asyncio.to_thread(second_watch.wait, TIMEOUT_S)
            assert len(lists) == 2  # listed again after the expired watch
            await asyncio.to_thread(cluster.apply, configmap("after", namespace, "c"))
            assert await following.next_change() == (namespace, "c")
            assert following.names((namespace, "c")) == ["after"]
            assert watches[2] == watches[1]  # resumed where the ended watch was
        finally:
            following.informer.stop()

    asyncio.run(scenario())
