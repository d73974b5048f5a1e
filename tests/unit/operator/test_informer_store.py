"""The informer's pure parts. Its store: watch events and listings in, the keys whose summaries changed out; only a
change of what the reconcile reads may wake it, and a listing after a lost watch must tell every change it missed,
deletions too. Its decoding of a watch's lines: an expired resourceVersion must end the watch as such."""

from __future__ import annotations

import json

import pytest
from floe_operator.builders.finetunejob import JOB_LABEL, pod_summary
from floe_operator.handlers.trainer_workloads import _finetunejob_key
from floe_operator.informer import Expired, Store, WatchError, watch_events


def pod(uid: str, job: str | None = "t5", phase: str = "Pending", version: str = "1", namespace: str = "team") -> dict:
    labels = {JOB_LABEL: job} if job else {}
    return {
        "metadata": {"name": f"pod-{uid}", "namespace": namespace, "uid": uid, "labels": labels,
                     "resourceVersion": version, "managedFields": [{"manager": "kubelet", "time": version}]},
        "status": {"phase": phase},
    }


def store() -> Store:
    return Store(_finetunejob_key, pod_summary)


def test_events_change_the_summaries_under_their_key():
    pods = store()
    assert pods.apply("ADDED", pod("a")) == ("team", "t5")
    assert pods.apply("ADDED", pod("b")) == ("team", "t5")
    assert pods.apply("MODIFIED", pod("a", phase="Running")) == ("team", "t5")
    assert sorted(p["status"]["phase"] for p in pods.get(("team", "t5"))) == ["Pending", "Running"]
    assert pods.apply("DELETED", pod("a", phase="Running")) == ("team", "t5")
    assert [p["metadata"]["name"] for p in pods.get(("team", "t5"))] == ["pod-b"]
    assert pods.apply("DELETED", pod("b")) == ("team", "t5")
    assert pods.get(("team", "t5")) == () and len(pods) == 0


def test_a_change_the_summary_does_not_keep_wakes_nothing():
    pods = store()
    pods.apply("ADDED", pod("a"))
    assert pods.apply("MODIFIED", pod("a", version="2")) is None  # resourceVersion, managedFields only
    assert pods.apply("DELETED", pod("never-seen")) is None


def test_an_object_that_loses_its_key_label_leaves_its_key():
    pods = store()
    pods.apply("ADDED", pod("a"))
    assert pods.apply("MODIFIED", pod("a", job=None)) == ("team", "t5")
    assert pods.get(("team", "t5")) == ()
    assert pods.apply("MODIFIED", pod("a", job="other")) == ("team", "other")
    assert pods.apply("MODIFIED", pod("a", job="t5")) == ("team", "t5")  # moved: it is under one key only
    assert pods.get(("team", "other")) == () and len(pods.get(("team", "t5"))) == 1


def test_a_listing_tells_every_change_it_replaces_deletions_too():
    pods = store()
    pods.apply("ADDED", pod("kept"))
    pods.apply("ADDED", pod("gone", job="old"))
    pods.apply("ADDED", pod("changed", job="moving"))
    listed = [pod("kept", version="9"), pod("changed", job="moving", phase="Running"), pod("new", job="fresh")]
    assert pods.replace(listed) == {("team", "old"), ("team", "moving"), ("team", "fresh")}
    assert pods.get(("team", "old")) == ()
    assert len(pods) == 3
    assert pods.replace(listed) == set()


def test_the_trainer_pods_store_keys_by_finetunejob():
    assert _finetunejob_key(pod("a", job="summarize", namespace="ml")) == ("ml", "summarize")
    assert _finetunejob_key(pod("a", job=None)) is None


def test_watch_lines_decode_to_events_and_an_expired_version_ends_the_watch():
    bookmark = {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12"}}}
    gone = {"type": "ERROR", "object": {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
                                        "message": "too old resource version: 5 (12)"}}
    lines = [json.dumps({"type": "ADDED", "object": pod("a")}), json.dumps(bookmark), json.dumps(gone),
             json.dumps({"type": "ADDED", "object": pod("b")})]
    events = watch_events(lines)
    assert [next(events)[0], next(events)[0]] == ["ADDED", "BOOKMARK"]
    with pytest.raises(Expired, match="too old"):
        next(events)
    other = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "internal error"}}
    with pytest.raises(WatchError, match="internal error"):
        list(watch_events([json.dumps(other)]))
