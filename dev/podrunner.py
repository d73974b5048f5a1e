"""Plays the kubelet for one simulated node, so pods can run without a container runtime.

For each pod bound to the node it runs the containers of floe's trainer image and the repository clone
init container as local processes, with the pod's own command, args and env, its volumes (ConfigMap,
Secret, emptyDir, PVC, downward API, projected service account token) bind-mounted at their mount paths in a private
mount namespace, and reports phase, exit code and termination message back through the API, as a kubelet
would. The "image" of those containers is this machine: its tools (git, sh), this Python environment
(JupyterLab included, for the workspace image), and the local cluster's CA as the trust store for Git over
HTTPS (as an image built for a private Git server carries that server's CA). Containers of other images are
simulated the way kwok does (running until deleted; init containers complete at once). A pod whose executed
container declares ports (a notebook) gets a network namespace of its own, so two notebooks can both serve
on their port; its readiness is its HTTP readiness probe's answer, and its ports are reached only through
port-forward. Like a kubelet it serves the containers' logs, exec and port-forward to the API server, so
`kubectl logs`, `kubectl exec`, `kubectl cp` and `kubectl port-forward` work: an exec runs its command as a
local process with the container's volumes, user, env, working directory and network, in any running
container (a simulated one too: its volumes are real).

It is test and demo infrastructure and supports only what floe's pods use: no restarts (a failed init
container of a pod that would restart leaves it Pending in CrashLoopBackOff, with the failure as the last
state), HTTP readiness probes only (tried every PROBE_INTERVAL seconds, for a quick start), no TTY for exec.
It needs root (mount and network namespaces, bind mounts and switching to the pod's runAsUser).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import errno
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
from floe_operator.builders.repository import GIT_IMAGE
from floe_operator.catalog import WORKSPACE_IMAGE
from kubernetes import client, config, watch

from dev import spdyexec, spdyportforward

log = logging.getLogger("podrunner")
REPO = Path(__file__).resolve().parents[1]
LEASE_SECONDS = 40
PROBE_INTERVAL = 0.5  # seconds between readiness probes (a kubelet waits the probe's period)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "floe.dev/node-pool": "cpu",
                "floe.dev/local-runner": "true",
            },
        },
    }


def node_status() -> dict:
    resources = {"cpu": "8", "memory": "32Gi", "pods": "20", "ephemeral-storage": "100Gi"}
    stamp = now()
    return {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "LocalRunnerReady", "message": "local pod runner",
             "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
        ],
        "nodeInfo": {"kubeletVersion": "local-runner", "containerRuntimeVersion": "local://processes",
                     "architecture": "amd64", "operatingSystem": "linux", "kernelVersion": "", "osImage": "",
                     "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }


class PodRunner:
    def __init__(self, node: str, state_dir: Path, api_host: str, api_port: int, ca_file: Path,
                 execute_images: str, kubelet_port: int):
        self.node = node
        self.state = state_dir
        self.api_host, self.api_port, self.ca_file = api_host, api_port, ca_file
        # Inside the pods' mount namespaces, where an emptyDir may cover the CA's own directory.
        self.image_ca = state_dir / "image-ca.crt"
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca_file, self.image_ca)
        self.image_ca.chmod(0o644)
        self.execute_images = re.compile(execute_images)
        self.kubelet_port = kubelet_port
        self.core = client.CoreV1Api()
        self.coordination = client.CoordinationV1Api()
        self.running: dict[str, subprocess.Popen | None] = {}
        self.terminating: list[subprocess.Popen] = []  # containers of deleted pods, signalled to end
        self.admitted: set[str] = set()  # pod uids: a pod runs once (a new one of the same name runs anew)
        self.killed: set[str] = set()  # pod uids deleted while running: their exit is not reported
        self.started: dict[str, tuple] = {}  # pod key → (pod, sandbox, volumes) once its containers run
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # -- node ------------------------------------------------------------------------------
    def register(self) -> None:
        try:
            self.core.create_node(node_object(self.node))
        except client.ApiException as e:
            if e.status != 409:
                raise
        status = {**node_status(), "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}}}
        self.core.patch_node_status(self.node, {"status": status})

    def heartbeat(self) -> None:
        while not self.stopping.wait(10):
            try:
                self.core.patch_node_status(self.node, {"status": {"conditions": node_status()["conditions"]}})
                self._renew_lease()
            except Exception:  # the control plane may be stopping; keep trying until told to stop
                log.exception("heartbeat failed")

    def _renew_lease(self) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": self.node},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": stamp}}
        try:
            self.coordination.patch_namespaced_lease(self.node, "kube-node-lease", body)
        except client.ApiException as e:
            if e.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    # -- pods ------------------------------------------------------------------------------
    def serve(self) -> None:
        self.register()
        self._renew_lease()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        while not self.stopping.is_set():
            stream = watch.Watch().stream(
                self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={self.node}",
                timeout_seconds=60,
            )
            for event in stream:
                self.on_pod(event["type"], event["object"])

    def on_pod(self, kind: str, pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if kind == "DELETED":
            self._kill(key, pod.metadata.uid)
            return
        if pod.metadata.deletion_timestamp:
            self._kill(key, pod.metadata.uid)
            try:
                self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            except client.ApiException as e:
                if e.status != 404:
                    raise
            return
        with self.lock:
            if pod.metadata.uid in self.admitted or pod.status.phase in ("Succeeded", "Failed"):
                return
            self.admitted.add(pod.metadata.uid)
            self.running[key] = None
        threading.Thread(target=self._run_pod, args=(pod,), daemon=True).start()

    def is_running(self, key: str) -> bool:
        with self.lock:
            proc = self.running.get(key)
        return proc is not None and proc.poll() is None

    def _kill(self, key: str, uid: str) -> None:
        with self.lock:
            if uid not in self.admitted:
                return
            self.killed.add(uid)
            proc = self.running.pop(key, None)
            self.started.pop(key, None)
            if proc:
                self.terminating = [*(p for p in self.terminating if p.poll() is None), proc]
        if proc and proc.poll() is None:
            _signal_tree(proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        """The node goes away: every container still running ends with it, and all that it started, those of a
        deleted pod still shutting down too (a notebook takes seconds to stop its kernels)."""
        with self.lock:
            self.stopping.set()
            procs = [*self.running.values(), *self.terminating]
        for proc in procs:
            if proc and proc.poll() is None:
                _signal_tree(proc.pid, signal.SIGKILL)

    def network_pid(self, key: str) -> int | None:
        """A process in the pod's own network namespace; None for a pod on the node's network."""
        with self.lock:
            pod = (self.started.get(key) or (None,))[0]
            proc = self.running.get(key)
        if pod is None or not _own_network(self._executed(pod)) or proc is None or proc.poll() is not None:
            return None
        try:
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
                return None  # started, but not yet in a namespace of its own
        except FileNotFoundError:
            return None  # ended meanwhile
        return proc.pid

    def connect(self, namespace: str, pod_name: str, port: int) -> socket.socket:
        """A connection to a port of a running pod, in its network."""
        key = f"{namespace}/{pod_name}"
        with self.lock:
            pod = (self.started.get(key) or (None,))[0]
        if pod is None:
            raise OSError(f"pod {key} is not running on this node")
        if _own_network(self._executed(pod)):
            pid = self.network_pid(key)
            if pid is None:
                raise OSError(f"pod {key} has no network yet")
            return _connect_in(pid, port)
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.settimeout(None)
        return conn

    def _executed(self, pod) -> list:
        return [c for c in pod.spec.containers if self.execute_images.search(c.image or "")]

    def _run_pod(self, pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        sandbox = self.state / "pods" / pod.metadata.namespace / pod.metadata.name
        try:
            mounts = self._prepare_volumes(pod, sandbox)
            for init in pod.spec.init_containers or []:
                code, message = self._run_container(pod, init, sandbox, mounts, key)
                if self.stopping.is_set():
                    return
                if code != 0:
                    if (pod.spec.restart_policy or "Always") == "Never":
                        self._report_terminated(pod, init.name, code, message, init=True)
                    else:
                        self._report_init_backoff(pod, init.name, code, message)
                    return
            executed = self._executed(pod)
            with self.lock:
                self.started[key] = (pod, sandbox, mounts)
            probe = executed[0].readiness_probe if executed else None
            started_at = now()
            self._report_running(pod, started_at, ready=not (probe and probe.http_get))
            if not executed:
                return  # simulated: stays Running until deleted, like kwok's pods
            container = executed[0]
            if probe and probe.http_get:
                threading.Thread(target=self._probe_until_ready, args=(pod, container, started_at),
                                 daemon=True).start()
            code, message = self._run_container(pod, container, sandbox, mounts, key,
                                                own_network=_own_network(executed))
            with self.lock:
                if (self.started.get(key) or (None,))[0] is pod:
                    self.started.pop(key)  # nothing left to exec into
            if self.stopping.is_set() or pod.metadata.uid in self.killed:
                return
            self._report_terminated(pod, container.name, code, message)
        except Exception as e:
            log.exception("pod %s failed to start", key)
            self._report_terminated(pod, pod.spec.containers[0].name, 128, f"local runner: {e}")

    def _prepare_volumes(self, pod, sandbox: Path) -> dict[str, Path]:
        """Materialises each volume as a local directory; returns volume name → directory."""
        ns = pod.metadata.namespace
        dirs: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            target = sandbox / "volumes" / volume.name
            if volume.persistent_volume_claim:
                target = self.state / "pvcs" / ns / volume.persistent_volume_claim.claim_name
            target.mkdir(parents=True, exist_ok=True)
            if volume.config_map:
                cm = self.core.read_namespaced_config_map(volume.config_map.name, ns)
                for k, v in (cm.data or {}).items():
                    (target / k).write_text(v)
            elif volume.secret:
                secret = self.core.read_namespaced_secret(volume.secret.secret_name, ns)
                for k, v in (secret.data or {}).items():
                    (target / k).write_bytes(base64.b64decode(v))
                    (target / k).chmod(0o640)
            elif volume.projected:
                self._project(pod, volume.projected, target)
            elif volume.downward_api:
                for item in volume.downward_api.items or []:
                    (target / item.path).write_text(self._field(pod, item.field_ref.field_path), encoding="utf-8")
            dirs[volume.name] = target
        owner = _run_as(pod, None)
        if owner:
            for d in dirs.values():
                _share_with(d, owner[1])
        return dirs

    def _project(self, pod, projected, target: Path) -> None:
        ns = pod.metadata.namespace
        for source in projected.sources or []:
            if source.service_account_token:
                token = self.core.create_namespaced_service_account_token(
                    pod.spec.service_account_name or "default", ns,
                    {"spec": {"audiences": None, "expirationSeconds": 3600,
                              "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                                 "uid": pod.metadata.uid}}},
                )
                (target / source.service_account_token.path).write_text(token.status.token)
            if source.config_map:  # kube-root-ca.crt
                for item in source.config_map.items or []:
                    shutil.copy(self.ca_file, target / item.path)
            if source.downward_api:
                for item in source.downward_api.items or []:
                    (target / item.path).write_text(self._field(pod, item.field_ref.field_path), encoding="utf-8")

    def _env(self, pod, container) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "GIT_SSL_CAINFO": str(self.image_ca),
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            "HOSTNAME": pod.metadata.name,
        }
        ns = pod.metadata.namespace
        for source in container.env_from or []:
            if source.config_map_ref:
                env.update(self.core.read_namespaced_config_map(source.config_map_ref.name, ns).data or {})
            if source.secret_ref:
                data = self.core.read_namespaced_secret(source.secret_ref.name, ns).data or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _expand(var.value or "", env)
            elif var.value_from.field_ref:
                env[var.name] = self._field(pod, var.value_from.field_ref.field_path)
            elif var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                data = self.core.read_namespaced_secret(ref.name, ns).data or {}
                env[var.name] = base64.b64decode(data.get(ref.key, "")).decode()
            elif var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                env[var.name] = (self.core.read_namespaced_config_map(ref.name, ns).data or {}).get(ref.key, "")
        return env

    def _field(self, pod, path: str) -> str:
        """A downward API fieldRef's value: the pod's name, namespace, node, account, IP, or one of its
        annotations or labels (metadata.annotations['key'])."""
        if match := re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", path):
            return (getattr(pod.metadata, match.group(1)) or {}).get(match.group(2), "")
        return {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
                "spec.nodeName": self.node, "spec.serviceAccountName": pod.spec.service_account_name or "",
                "status.podIP": "127.0.0.1"}.get(path, "")

    def _probe_until_ready(self, pod, container, started_at: str) -> None:
        """Reports the pod ready once its container's HTTP readiness probe answers with a success."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        get = container.readiness_probe.http_get
        port = _port_number(container, get.port)
        request = f"GET {get.path or '/'} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
        while not self.stopping.wait(PROBE_INTERVAL):
            with self.lock:
                if (self.started.get(key) or (None,))[0] is not pod:
                    return  # ended or deleted
            pid = self.network_pid(key)
            if pid is None:
                continue  # the container's process is not there yet
            try:
                with _connect_in(pid, port) as conn:
                    conn.settimeout(container.readiness_probe.timeout_seconds or 1)
                    conn.sendall(request)
                    status_line = conn.makefile("rb").readline().split()
            except OSError:
                continue  # not listening yet
            if len(status_line) > 1 and status_line[1].isdigit() and 200 <= int(status_line[1]) < 400:
                self._report_running(pod, started_at, ready=True)
                return

    def _run_container(self, pod, container, sandbox: Path, volumes: dict[str, Path], key: str,
                       own_network: bool = False):
        """Runs one container to completion; returns (exit code, termination message)."""
        if not self.execute_images.search(container.image or ""):
            return 0, ""
        message_path = container.termination_message_path or "/dev/termination-log"
        message_file = sandbox / f"{container.name}.termination-log"
        message_file.write_text("")
        if _run_as(pod, container):
            message_file.chmod(0o666)
        env = self._env(pod, container)
        argv = [_expand(a, env) for a in list(container.command or []) + list(container.args or [])]
        network_ready = sandbox / "network-ready" if own_network else None
        if network_ready:
            network_ready.unlink(missing_ok=True)
            os.mkfifo(network_ready, 0o600)
        command = self._in_container(pod, container, sandbox, volumes, argv, [(message_file, message_path)],
                                     network=["unshare", "--net"] if own_network else [],
                                     network_ready=network_ready)
        logfile = sandbox / f"{container.name}.log"
        api = None
        with open(logfile, "wb") as out:
            # Started and registered under the lock stop() takes: a container starting while the node stops
            # would otherwise escape its kill and outlive the node.
            with self.lock:
                if self.stopping.is_set():
                    return 137, ""  # as if killed with the node
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                self.running[key] = proc
            if network_ready:
                api = self._serve_api_in(proc, network_ready)
            code = proc.wait()
        if api:
            api.close()
        message = message_file.read_text()[:4096]
        policy = container.termination_message_policy or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = logfile.read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        log.info("%s/%s exited %d", key, container.name, code)
        return code, message

    def _serve_api_in(self, proc: subprocess.Popen, network_ready: Path) -> socket.socket | None:
        """Makes the API server reachable at the address the pod is given (KUBERNETES_SERVICE_HOST:PORT,
        loopback) from inside its own network namespace, as a cluster's Service network does: a listener
        there, each connection piped to the API server. Returns the listener (None if the container ended
        first)."""
        while True:  # a FIFO opens for writing once the container opened it for reading: in its namespace
            try:
                ready = os.open(network_ready, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or proc.poll() is not None:
                    return None
                time.sleep(0.02)
        try:
            with open("/proc/thread-self/ns/net") as own, open(f"/proc/{proc.pid}/ns/net") as pods:
                _setns(pods.fileno())
                try:
                    listener = socket.create_server((self.api_host, self.api_port))
                finally:
                    _setns(own.fileno())
            os.write(ready, b"\n")
        except BaseException:
            _signal_tree(proc.pid, signal.SIGKILL)  # it would wait for the line forever
            raise
        finally:
            os.close(ready)
        threading.Thread(target=_forward_connections, args=(listener, (self.api_host, self.api_port)),
                         daemon=True).start()
        return listener

    def running_pod(self, namespace: str, pod_name: str):
        """The running pod of that name on this node, else None."""
        with self.lock:
            return (self.started.get(f"{namespace}/{pod_name}") or (None,))[0]

    def exec_target(self, namespace: str, pod_name: str, container_name: str):
        """(pod, container, sandbox, volumes) of a running container of this node, else None."""
        with self.lock:
            pod, sandbox, volumes = self.started.get(f"{namespace}/{pod_name}") or (None, None, None)
        container = next((c for c in pod.spec.containers if c.name == container_name), None) if pod else None
        return (pod, container, sandbox, volumes) if container else None

    def exec(self, pod, container, sandbox: Path, volumes: dict[str, Path], argv: list[str],
             with_stdin: bool) -> subprocess.Popen:
        """Starts `argv` in a running container, as `kubectl exec` does."""
        pid = self.network_pid(f"{pod.metadata.namespace}/{pod.metadata.name}")
        network = ["nsenter", f"--net=/proc/{pid}/ns/net"] if pid else []
        command = self._in_container(pod, container, sandbox, volumes, argv, network=network)
        return subprocess.Popen(command, env=self._env(pod, container),
                                stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def _in_container(self, pod, container, sandbox: Path, volumes: dict[str, Path], argv: list[str],
                      extra_binds: list[tuple[Path, str]] = (), network: list[str] = (),
                      network_ready: Path | None = None) -> list[str]:
        """The command line that runs `argv` as the container (in its environment, from _env): its volumes
        bind-mounted at their mount paths in a private mount namespace, its user and working directory;
        `network` is the command that puts it in the pod's network (none: the node's); `network_ready`, a
        FIFO it reads a line from before it starts (see _serve_api_in)."""
        binds = [(volumes[m.name] / (m.sub_path or ""), m.mount_path) for m in container.volume_mounts or []]
        binds += extra_binds
        binds.sort(key=lambda bind: bind[1])  # a parent mount point before the ones nested in it
        owner = _run_as(pod, container)
        if owner:
            _share_with(sandbox, owner[1])
        script = ["set -e", "mount --make-rprivate /"]
        if "--net" in network:
            script.append("ip link set lo up")  # a new network namespace starts with its loopback down
        if network_ready:  # opening it tells the runner the namespace exists; the line, that the API is there
            script.append(f"read -r _ < {shlex.quote(str(network_ready))}")
        # The "image" is this Python environment and the repository it is installed from. A volume mounted
        # over one of their parents (an emptyDir at /tmp, say) would hide them: keep a view of each from
        # before the volume mounts and bind it back afterwards. The interpreter the environment links to
        # may lie under a directory only root may enter (/root): for the pod's user that directory is an
        # empty one, through which only the interpreter is bound back.
        image = (Path(sys.prefix), REPO, Path(sys.base_prefix))
        host_views = [(shlex.quote(str(path)), shlex.quote(str(sandbox / "host" / str(i))))
                      for i, path in enumerate(image)]
        for path, view in host_views:
            script += [f"mkdir -p {view}", f"mount --bind {path} {view}"]
        closed = _closed_ancestor(Path(sys.base_prefix))
        if owner and closed:
            script.append(f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(closed))}")
        for source, target in binds:
            target = shlex.quote(target)
            if source.is_dir():
                make = f"mkdir -p {target}"
            else:  # a file mount point must exist as a file
                make = f"mkdir -p $(dirname {target}); [ -e {target} ] || touch {target}"
            script += [make, f"mount --bind {shlex.quote(str(source))} {target}"]
        for path, view in host_views:
            script += [f"mkdir -p {path}", f"mount --bind {view} {path}"]
        if owner:
            uid, gid = owner
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}", "--"] + argv
        workdir = container.working_dir or "/"
        script.append(f"cd {shlex.quote(workdir)}")
        script.append("exec " + shlex.join(argv))
        return [*network, "unshare", "--mount", "sh", "-c", "\n".join(script)]

    def _report_running(self, pod, started_at: str, ready: bool) -> None:
        stamp = now()
        statuses = [{"name": c.name, "image": c.image, "imageID": "", "ready": ready, "restartCount": 0,
                     "started": True, "state": {"running": {"startedAt": started_at}}} for c in pod.spec.containers]
        readiness = [{"type": t, "status": str(ready), "lastTransitionTime": stamp}
                     for t in ("ContainersReady", "Ready")]
        self._patch_status(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started_at,
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started_at}
                           for t in ("PodScheduled", "Initialized")] + readiness,
            "containerStatuses": statuses,
        })

    def _report_terminated(self, pod, name: str, code: int, message: str, init: bool = False) -> None:
        stamp = now()
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": stamp, "finishedAt": stamp}
        if message:
            terminated["message"] = message
        statuses = [{"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                     "started": False,
                     "state": {"terminated": terminated} if c.name == name else
                     {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": stamp, "finishedAt": stamp}}}
                    for c in pod.spec.containers]
        body = {"phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": t, "status": "False", "lastTransitionTime": stamp, "reason": "PodCompleted"}
                               for t in ("ContainersReady", "Ready")]}
        if init:
            body["initContainerStatuses"] = [{"name": name, "image": "", "imageID": "", "ready": False,
                                              "restartCount": 0, "state": {"terminated": terminated}}]
        else:
            body["containerStatuses"] = statuses
        self._patch_status(pod, body)

    def _report_init_backoff(self, pod, name: str, code: int, message: str) -> None:
        """What a kubelet reports while it backs off restarting a failed init container (this runner does not
        restart it): the pod Pending, the container waiting in CrashLoopBackOff with the failure as last state."""
        stamp = now()
        terminated = {"exitCode": code, "reason": "Error", "startedAt": stamp, "finishedAt": stamp}
        if message:
            terminated["message"] = message
        self._patch_status(pod, {
            "phase": "Pending",
            "conditions": [{"type": "Initialized", "status": "False", "lastTransitionTime": stamp,
                            "reason": "ContainersNotInitialized",
                            "message": f"containers with incomplete status: [{name}]"}],
            "initContainerStatuses": [{
                "name": name, "image": "", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"back-off restarting failed container {name}"}},
                "lastState": {"terminated": terminated}}],
        })

    def _patch_status(self, pod, status: dict) -> None:
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        except client.ApiException as e:
            if e.status != 404:  # deleted meanwhile
                raise


class KubeletEndpoints(BaseHTTPRequestHandler):
    """The kubelet's endpoints that the API server proxies to:
    GET /containerLogs/<namespace>/<pod>/<container>[?tailLines=N&follow=true] for `kubectl logs`, and
    POST /exec/<namespace>/<pod>/<container>?command=...&input=1&output=1&error=1, upgraded to SPDY/3.1,
    for `kubectl exec` and `kubectl cp`; and /portForward/<namespace>/<pod>, upgraded to SPDY/3.1, for
    `kubectl port-forward`."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server hook's name)
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "portForward":
            self._port_forward(parts)
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container> is served")
            return
        _, namespace, pod, container = parts
        runner: PodRunner = self.server.runner
        path = runner.state / "pods" / namespace / pod / f"{container}.log"
        if not path.exists():
            self.send_error(404, f"no logs of container {container} in pod {namespace}/{pod}")
            return
        query = parse_qs(url.query)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        with open(path, "rb") as logs:
            data = logs.read()
            if "tailLines" in query:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[len(lines) - int(query["tailLines"][0]):])
            self.wfile.write(data)
            while query.get("follow") == ["true"] and runner.is_running(f"{namespace}/{pod}"):
                chunk = logs.read()
                self.wfile.write(chunk)
                self.wfile.flush()
                if not chunk:
                    time.sleep(0.5)  # like `tail -f`: poll the growing file
            self.wfile.write(logs.read())

    def do_POST(self) -> None:  # noqa: N802 (the http.server hook's name)
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "portForward":
            self._port_forward(parts)
            return
        if len(parts) not in (4, 5) or parts[0] != "exec":  # 5: /exec/<namespace>/<pod>/<uid>/<container>
            self.send_error(404, "only /exec/<namespace>/<pod>/<container> is served")
            return
        namespace, pod, container = parts[1], parts[2], parts[-1]
        query = parse_qs(url.query)
        offered = [p.strip() for value in self.headers.get_all("X-Stream-Protocol-Version", [])
                   for p in value.split(",")]
        if query.get("tty") in (["1"], ["true"]):
            self.send_error(400, "the local pod runner runs exec without a TTY (leave out -t)")
            return
        if spdyexec.PROTOCOL not in offered or "spdy/3.1" not in self.headers.get("Upgrade", "").lower():
            self.send_error(400, f"exec needs an upgrade to SPDY/3.1 with {spdyexec.PROTOCOL}")
            return
        runner: PodRunner = self.server.runner
        target = runner.exec_target(namespace, pod, container)
        if target is None:
            self.send_error(404, f"container {container} of pod {namespace}/{pod} is not running on this node")
            return
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                         b"X-Stream-Protocol-Version: " + spdyexec.PROTOCOL.encode() + b"\r\n\r\n")
        self.close_connection = True

        def start(with_stdin: bool) -> subprocess.Popen:
            return runner.exec(*target, query.get("command", []), with_stdin)

        spdyexec.serve_exec(spdyexec.Connection(self.rfile, self.wfile), spdyexec.streams_requested(query), start)

    def _port_forward(self, parts: list[str]) -> None:
        if len(parts) not in (3, 4):  # 4: /portForward/<namespace>/<pod>/<uid>
            self.send_error(404, "only /portForward/<namespace>/<pod> is served")
            return
        namespace, pod = parts[1], parts[2]
        offered = [p.strip() for value in self.headers.get_all("X-Stream-Protocol-Version", [])
                   for p in value.split(",")]
        if spdyportforward.PROTOCOL not in offered or "spdy/3.1" not in self.headers.get("Upgrade", "").lower():
            self.send_error(400, f"port-forward needs an upgrade to SPDY/3.1 with {spdyportforward.PROTOCOL}")
            return
        runner: PodRunner = self.server.runner
        if runner.running_pod(namespace, pod) is None:
            self.send_error(404, f"pod {namespace}/{pod} is not running on this node")
            return
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                         b"X-Stream-Protocol-Version: " + spdyportforward.PROTOCOL.encode() + b"\r\n\r\n")
        self.close_connection = True
        spdyportforward.serve_port_forward(spdyexec.Connection(self.rfile, self.wfile),
                                           lambda port: runner.connect(namespace, pod, port))

    def log_message(self, *_) -> None:
        pass


def kubelet_server(cert_file: str, key_file: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KubeletEndpoints)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that others may not enter, if any."""
    return next((p for p in reversed(path.parents) if not p.stat().st_mode & 0o001), None)


def _own_network(executed: list) -> bool:
    """Whether the pod gets a network namespace of its own: when what it runs serves ports."""
    return any(c.ports for c in executed)


def _port_number(container, port) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    return next(p.container_port for p in container.ports or [] if p.name == port)


def _connect_in(pid: int, port: int) -> socket.socket:
    """A TCP connection to loopback:port in the network namespace of process `pid` (the socket stays in
    the namespace it was made in; only this thread enters it, and leaves again)."""
    with open("/proc/thread-self/ns/net") as own, open(f"/proc/{pid}/ns/net") as pods:
        _setns(pods.fileno())
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        finally:
            _setns(own.fileno())
    conn.settimeout(None)  # the timeout was for connecting: a forwarded connection may idle (a kernel's websocket)
    return conn


def _forward_connections(listener: socket.socket, target: tuple[str, int]) -> None:
    """Pipes each connection accepted on `listener` to `target`, until the listener is closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            conn.close()
            continue
        upstream.settimeout(None)
        for source, sink in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copies one direction of a connection; at its end, half-closes the other side (both closed by the
    direction that ends last)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _run_as(pod, container) -> tuple[int, int] | None:
    pod_sc = pod.spec.security_context
    sc = container.security_context if container is not None else None
    uid = (sc and sc.run_as_user) or (pod_sc and pod_sc.run_as_user)
    if not uid:
        return None
    gid = (sc and sc.run_as_group) or (pod_sc and (pod_sc.run_as_group or pod_sc.fs_group)) or uid
    return int(uid), int(gid)


def _share_with(directory: Path, gid: int) -> None:
    """Gives the pod's group write access to a volume, as the kubelet does for fsGroup."""
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, -1, gid)
        path.chmod(path.stat().st_mode | 0o070 | (0o2000 if path.is_dir() else 0))


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def _signal_tree(pid: int, signum: int) -> None:
    """Signals a container's process and every process it started: a notebook's kernels run in sessions of
    their own, out of reach of its process group."""
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default="local-runner")
    parser.add_argument("--state-dir", required=True, type=Path)
    images = (GIT_IMAGE, WORKSPACE_IMAGE)
    parser.add_argument("--execute-images",
                        default="floe-trainer|" + "|".join(rf"^{re.escape(i.rsplit(':', 1)[0])}:" for i in images),
                        help="regex of images whose containers run for real; others are simulated")
    parser.add_argument("--tls-cert-file", required=True, help="serving certificate of the kubelet endpoints")
    parser.add_argument("--tls-key-file", required=True)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("podrunner: needs root (mount namespaces and bind mounts)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config.load_kube_config(args.kubeconfig)
    cfg = client.Configuration.get_default_copy()
    host, port = cfg.host.removeprefix("https://").rsplit(":", 1)
    kubelet = kubelet_server(args.tls_cert_file, args.tls_key_file)
    runner = PodRunner(args.node, args.state_dir, host, int(port), Path(cfg.ssl_ca_cert),
                       args.execute_images, kubelet.server_address[1])
    kubelet.runner = runner
    threading.Thread(target=kubelet.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (runner.stop(), sys.exit(0)))
    runner.serve()


if __name__ == "__main__":
    main()
