"""A cache of the objects of one kind that a label selector picks, kept current by the API server's list and
watch, as a client-go informer keeps one, and a callback with the key of each object whose summary changed.

Why not kopf for these: kopf takes every watch event through its whole machinery (a worker per object, body,
patch and logger objects, progress and diff-base storage, one invocation per handler), about 1.5 ms of the
operator's CPU an event, and the trainer Jobs and pods bring 7 of the ~10 watch events a FineTuneJob costs. Here
an event costs its JSON decoding, a summary and a comparison; an event that changes nothing a reconcile reads
(a pod's resourceVersion, managedFields) wakes nothing. JSON is decoded by orjson: trainer pods and Jobs carry
the trainer's config and managedFields, and the standard library's decoder took most of an event's cost.

`Store` is the pure part (events in, changed keys out); `Informer` is the I/O: one thread lists and watches with
the operator's Kubernetes client, and hands each decoded event to the event loop, where the store changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

Key = tuple[str, str]
KeyOf = Callable[[dict[str, Any]], Key | None]
SummaryOf = Callable[[dict[str, Any]], dict[str, Any]]

LIST_PAGE = 500
# The API server ends a watch after this long (it resumes from the last resourceVersion); the read timeout is
# longer, so a silent connection is noticed without cutting a live one.
WATCH_TIMEOUT_S = 300
READ_TIMEOUT_S = WATCH_TIMEOUT_S + 30
CONNECT_TIMEOUT_S = 10
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0

log = logging.getLogger(__name__)


class Store:
    """The summaries of the objects a list and watch showed, by key (several objects may share one: a Job's
    pods), each under its uid."""

    def __init__(self, key_of: KeyOf, summary_of: SummaryOf):
        self._key_of = key_of
        self._summary_of = summary_of
        self._by_key: dict[Key, dict[str, dict[str, Any]]] = {}
        self._key_by_uid: dict[str, Key] = {}

    def get(self, key: Key, default: Collection = ()) -> Collection[dict[str, Any]]:
        """The summaries under `key` (kopf.Index's reading, which the reconcile was written against)."""
        objects = self._by_key.get(key)
        return tuple(objects.values()) if objects else default

    def __len__(self) -> int:
        return len(self._key_by_uid)

    def apply(self, event_type: str, obj: dict[str, Any]) -> Key | None:
        """A watch event (ADDED, MODIFIED, DELETED); the key whose summaries it changed, if any."""
        uid = obj["metadata"]["uid"]
        if event_type == "DELETED":
            return self._remove(uid)
        key = self._key_of(obj)
        if key is None:  # its key label was removed: as good as gone for the reconcile
            return self._remove(uid)
        summary = self._summary_of(obj)
        old_key = self._key_by_uid.get(uid)
        if old_key == key and self._by_key[key][uid] == summary:
            return None
        if old_key is not None and old_key != key:
            self._remove(uid)
        self._by_key.setdefault(key, {})[uid] = summary
        self._key_by_uid[uid] = key
        return key

    def replace(self, objects: Iterable[dict[str, Any]]) -> set[Key]:
        """A full listing: what it shows becomes the store. The keys whose summaries differ from before."""
        before = {key: dict(objects_) for key, objects_ in self._by_key.items()}
        self._by_key.clear()
        self._key_by_uid.clear()
        for obj in objects:
            self.apply("ADDED", obj)
        keys = before.keys() | self._by_key.keys()
        return {key for key in keys if before.get(key) != self._by_key.get(key)}

    def _remove(self, uid: str) -> Key | None:
        key = self._key_by_uid.pop(uid, None)
        if key is None:
            return None
        objects = self._by_key[key]
        del objects[uid]
        if not objects:
            del self._by_key[key]
        return key


class Expired(Exception):
    """The resourceVersion to resume from is too old (410 Gone): only a new listing can tell what changed."""


class WatchError(Exception):
    """The API server ended a watch with an error other than an expired resourceVersion."""


class Informer:
    """Lists and watches `path` (e.g. /api/v1/pods) with `label_selector` into `store`, in a thread of its own;
    `on_change(key)` runs on the event loop after the store changed under `key`."""

    def __init__(self, api: client.ApiClient, path: str, label_selector: str, store: Store,
                 on_change: Callable[[Key], None]):
        self._api = api
        self.path = path
        self.label_selector = label_selector
        self.store = store
        self._on_change = on_change
        self.synced = asyncio.Event()  # set once the first listing is in the store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"informer {self.path}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._response is not None:
            self._response.shutdown()  # wakes the thread from its read

    def _run(self) -> None:
        api = self._api
        backoff = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            try:
                version = self._list(api)
                backoff = FIRST_BACKOFF_S
                while not self._stopping.is_set():
                    version = self._watch(api, version)
            except Expired:
                log.info("%s: resourceVersion expired, listing again", self.path)
            except Exception as error:  # noqa: BLE001 (a lost connection, a refused request: list again later)
                if self._stopping.is_set() or self._loop.is_closed():  # the operator is exiting
                    return
                log.warning("%s: %s; listing again in %.0f s", self.path, error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _list(self, api: client.ApiClient) -> str:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("labelSelector", self.label_selector), ("limit", LIST_PAGE)]
            if token:
                query.append(("continue", token))
            response = request(api, self.path, query, timeout=READ_TIMEOUT_S)
            try:
                page = orjson.loads(response.data)
            finally:
                response.release_conn()
            items.extend(page["items"])
            token = page["metadata"].get("continue") or ""
            if not token:
                break
        self._call(self._replace, items)
        return page["metadata"]["resourceVersion"]

    def _watch(self, api: client.ApiClient, version: str) -> str:
        """One watch, until the API server ends it; the resourceVersion to resume from."""
        query = [("labelSelector", self.label_selector), ("watch", "true"), ("resourceVersion", version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", WATCH_TIMEOUT_S)]
        self._response = request(api, self.path, query, timeout=READ_TIMEOUT_S)
        try:
            for event_type, obj in watch_events(_lines(self._response)):
                version = obj["metadata"]["resourceVersion"]
                if event_type != "BOOKMARK":
                    self._call(self._apply, event_type, obj)
        finally:
            self._response.release_conn()
            self._response = None
        return version

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(function, *args)

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        key = self.store.apply(event_type, obj)
        if key is not None:
            self._on_change(key)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        for key in self.store.replace(items):
            self._on_change(key)
        self.synced.set()


def request(api: client.ApiClient, path: str, query: list[tuple[str, Any]], accept: str = "application/json",
            timeout: float | None = None) -> Any:
    """GET on `path` with the client's credentials, its body unread (urllib3's response, streamed); raises
    ApiException for an answer other than 2xx."""
    serialized = api.param_serialize("GET", path, query_params=query, auth_settings=["BearerToken"],
                                     header_params={"Accept": accept})
    response = api.call_api(*serialized, _request_timeout=(CONNECT_TIMEOUT_S, timeout) if timeout else None)
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response.response)
    return response.response


def _lines(response: Any) -> Iterator[bytes]:
    """A watch response's lines (one event each), as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from filter(None, lines)


def watch_events(lines: Iterable[bytes | str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A watch's events (ADDED, MODIFIED, DELETED, BOOKMARK) from its lines; raises on an ERROR event."""
    for line in lines:
        event = orjson.loads(line)
        event_type, obj = event["type"], event["object"]
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise Expired(obj.get("message"))
            raise WatchError(obj.get("message"))
        yield event_type, obj
