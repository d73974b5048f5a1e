"""Leader election on a coordination.k8s.io/v1 Lease: of several operator replicas, only the one holding the
Lease runs kopf (watches, handlers, timers); the others wait and take the Lease over once it expires.

The decisions are pure functions of the Lease and a monotonic clock (`observe`, `may_acquire`,
`must_step_down`, `lease_spec`); `Elector` and `lead` are the I/O around them. Like client-go, a standby
judges expiry by when *it* last saw the Lease change, never by the leader's timestamps, so clock skew
between nodes does not matter. A leader that cannot renew within RENEW_DEADLINE exits at once, before any
standby may take over (LEASE_DURATION), so two replicas never reconcile together.
"""

from __future__ import annotations

import http.server
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from floe_contract.paths import SERVICE_ACCOUNT_NAMESPACE
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from floe_operator import kube

DEFAULT_LEASE_NAME = "floe-operator-leader"
# The process's exit status when it lost the Lease: Kubernetes restarts it, and it comes back as a standby.
EXIT_LOST_LEASE = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Handover after a leader dies is at most lease_duration + 2 x retry_period: the standby saw the last
    renewal up to one retry period late, and looks again at most one retry period after expiry."""

    lease_duration: float = 8.0  # a standby takes the Lease this long after it last saw it change
    renew_deadline: float = 6.0  # the leader exits when it has not renewed for this long
    retry_period: float = 2.0  # between renewals, and between a standby's looks at the Lease

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, as read; any change (a renewal changes renew_time) restarts a standby's wait."""

    holder: str
    lease_duration_seconds: int
    transitions: int
    acquire_time: str | None
    renew_time: str | None

    @classmethod
    def from_lease(cls, lease: client.V1Lease) -> LeaseRecord:
        spec = lease.spec
        return cls(
            holder=spec.holder_identity or "",
            lease_duration_seconds=spec.lease_duration_seconds or 0,
            transitions=spec.lease_transitions or 0,
            acquire_time=_micro_time(spec.acquire_time),
            renew_time=_micro_time(spec.renew_time),
        )


@dataclass(frozen=True)
class Observed:
    """A Lease record and the (monotonic) time this replica first saw it in that form."""

    record: LeaseRecord | None
    since: float


def observe(previous: Observed | None, record: LeaseRecord | None, now: float) -> Observed:
    if previous is not None and previous.record == record:
        return previous
    return Observed(record, now)


def may_acquire(observed: Observed, identity: str, now: float) -> bool:
    """No Lease, a released one, our own, or one nobody renewed for its whole duration since we saw it."""
    record = observed.record
    if record is None or not record.holder or record.holder == identity:
        return True
    return now >= observed.since + record.lease_duration_seconds


def must_step_down(last_renewed: float, now: float, timing: Timing) -> bool:
    return now - last_renewed >= timing.renew_deadline


def renewal_wait(last_renewed: float, now: float, timing: Timing) -> float:
    """Until the next renewal, but never past the renew deadline (a slow request shortens the wait)."""
    return min(timing.retry_period, max(0.0, last_renewed + timing.renew_deadline - now))


def lease_spec(record: LeaseRecord | None, identity: str, wall_now: datetime, timing: Timing) -> dict:
    """The Lease's spec after this replica acquires or renews it."""
    now = format_micro_time(wall_now)
    renewing = record is not None and record.holder == identity
    transitions = 0 if record is None else record.transitions + (0 if renewing else 1)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": math.ceil(timing.lease_duration),
        "acquireTime": record.acquire_time if renewing else now,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord) -> dict:
    """Given up on shutdown: no holder, so a standby takes over at its next look instead of after expiry."""
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquire_time,
        "renewTime": record.renew_time,
        "leaseTransitions": record.transitions,
    }


def format_micro_time(moment: datetime) -> str:
    """MicroTime as the API server parses it (RFC 3339 with exactly six fractional digits)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micro_time(value: datetime | str | None) -> str | None:
    return format_micro_time(value) if isinstance(value, datetime) else value


class LostLease(Exception):
    """Another replica holds the Lease."""


class Elector:
    """Reads and writes one Lease. Every write carries the resourceVersion it was computed from, so of two
    replicas writing at once, one is refused (409) and loses."""

    def __init__(
        self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str, timing: Timing = Timing()
    ):
        self.api, self.namespace, self.name, self.identity, self.timing = api, namespace, name, identity, timing
        self.record: LeaseRecord | None = None  # as last read or written
        self.resource_version: str | None = None
        self.stopped = threading.Event()

    def read(self) -> LeaseRecord | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout())
        except ApiException as error:
            if error.status != 404:
                raise
            self.record, self.resource_version = None, None
        else:
            self.record, self.resource_version = LeaseRecord.from_lease(lease), lease.metadata.resource_version
        return self.record

    def write(self, spec: dict) -> bool:
        """False when another replica changed the Lease first."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if self.resource_version is None:
                lease = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout())
            else:
                body["metadata"]["resourceVersion"] = self.resource_version
                lease = self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout()
                )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self.record, self.resource_version = LeaseRecord.from_lease(lease), lease.metadata.resource_version
        return True

    def acquire(self) -> None:
        """Blocks until this replica holds the Lease."""
        observed: Observed | None = None
        waiting_for = None
        while True:
            try:
                record = self.read()
                observed = observe(observed, record, time.monotonic())
                if may_acquire(observed, self.identity, time.monotonic()) and self.write(
                    lease_spec(record, self.identity, datetime.now(UTC), self.timing)
                ):
                    log.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)
                    return
                if record is not None and record.holder != waiting_for:
                    waiting_for = record.holder
                    log.info("standing by: Lease %s/%s is held by %s", self.namespace, self.name, waiting_for)
            except (ApiException, OSError) as error:  # unreachable or refused for now: look again
                log.warning("acquiring Lease %s/%s failed: %s", self.namespace, self.name, error)
            time.sleep(self.timing.retry_period)

    def renew(self) -> None:
        """Raises LostLease when another replica took the Lease."""
        if self.write(lease_spec(self.record, self.identity, datetime.now(UTC), self.timing)):
            return
        if self.read() is None or self.record.holder != self.identity:
            raise LostLease(f"Lease {self.namespace}/{self.name} is held by {self.record and self.record.holder}")
        # Our own Lease changed under us (an admin's edit): the next renewal writes the version just read.

    def keep_renewing(self, step_down: Callable[[str], None]) -> None:
        last_renewed = time.monotonic()
        while not self.stopped.wait(renewal_wait(last_renewed, time.monotonic(), self.timing)):
            # Before the renewal: a process frozen past its deadline must not wait for a request first.
            if must_step_down(last_renewed, time.monotonic(), self.timing):
                return step_down(f"Lease {self.namespace}/{self.name} not renewed for {self.timing.renew_deadline} s")
            try:
                self.renew()
                last_renewed = time.monotonic()
            except LostLease as lost:
                return step_down(str(lost))
            except (ApiException, OSError) as error:
                log.warning("renewing Lease %s/%s failed: %s", self.namespace, self.name, error)

    def release(self) -> None:
        if self.record is None or self.record.holder != self.identity:
            return
        try:
            self.write(released_spec(self.record))
        except (ApiException, OSError) as error:  # the standby takes over when the Lease expires instead
            log.warning("releasing Lease %s/%s failed: %s", self.namespace, self.name, error)

    def _timeout(self) -> float:
        # A request that hangs must not carry the leader past its renew deadline.
        return self.timing.retry_period


def exit_now(reason: str) -> None:
    """The leader lost the Lease: stop reconciling at once (no cleanup that could still write)."""
    log.critical("stepping down: %s", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEASE)


def own_namespace() -> str:
    """The namespace the operator runs in: the pod's (downward API or its ServiceAccount's), else the
    kubeconfig context's."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip()
    _, context = config.list_kube_config_contexts()
    namespace = context["context"].get("namespace")
    if not namespace:
        raise SystemExit("leader election: set POD_NAMESPACE or --lease-namespace (the operator's own namespace)")
    return namespace


def own_identity() -> str:
    """The pod's name (downward API); outside a pod, host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def standby_health(liveness_endpoint: str | None) -> Iterator[None]:
    """A standby runs no kopf, so no kopf liveness endpoint: it answers the same probe itself until then."""
    if not liveness_endpoint:
        yield
        return
    url = urlsplit(liveness_endpoint)

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == url.path else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # probes every few seconds are not news
            pass

    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Healthy)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def lead(
    run: Callable[[], None],
    *,
    name: str,
    namespace: str,
    identity: str,
    liveness_endpoint: str | None,
    timing: Timing = Timing(),
) -> None:
    """Runs `run` (kopf) only while this replica holds the Lease; exits the process if it loses it."""
    kube.load_config()
    elector = Elector(client.CoordinationV1Api(client.ApiClient()), namespace, name, identity, timing)
    log.info("leader election on Lease %s/%s as %s", namespace, name, identity)
    with standby_health(liveness_endpoint):
        elector.acquire()
    renewer = threading.Thread(target=elector.keep_renewing, args=(exit_now,), name="lease-renewer", daemon=True)
    renewer.start()
    try:
        run()
    finally:
        elector.stopped.set()
        renewer.join()
        elector.release()
