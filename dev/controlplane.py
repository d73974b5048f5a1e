"""A real Kubernetes control plane on loopback, for tests and the demo.

etcd, kube-apiserver (RBAC, PodSecurity and ValidatingAdmissionPolicy on), kube-controller-manager
(Job, garbage collector, quota, ...), kube-scheduler and kwok (simulated GPU nodes and pod lifecycles),
all built from source by build.sh. No container runtime is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dev.pki import PKI

HERE = Path(__file__).resolve().parent
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def build_binaries() -> Path:
    out = subprocess.run([str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def kubectl(binary: str, kubeconfig: Path, *args: str, input: str | None = None, as_user: str | None = None,
            as_groups=(), check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [binary, f"--kubeconfig={kubeconfig}"]
    if as_user:
        cmd.append(f"--as={as_user}")
    cmd += [f"--as-group={g}" for g in as_groups]
    result = subprocess.run(cmd + list(args), input=input, text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Polls `predicate` until it returns a truthy value; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "floe-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "floe-test", "context": {"cluster": "floe-test", "user": user}}],
        "current-context": "floe-test",
    }


def gpu_node(name: str, gpus: int = 8) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "floe.dev/node-pool": "gpu",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)},
            "capacity": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)},
        },
    }


def local_volume(index: int) -> dict:
    """A statically provisioned volume; the pod runner keeps a claim's files under its own state dir."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"local-pv-{index}", "labels": {"floe.dev/test-volume": "true"}},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": f"/var/lib/floe-podrunner/volumes/pv-{index}", "type": "DirectoryOrCreate"},
        },
    }


@dataclass
class ControlPlane:
    """Starts and stops the components; `workdir` keeps certificates, data and logs."""

    workdir: Path
    gpu_nodes: int = 4
    volumes: int = 24
    bin_dir: Path | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    pki: PKI | None = None
    server: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def start(self) -> ControlPlane:
        """Start every component; if one fails, stop those already running before raising."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.bin_dir = self.bin_dir or build_binaries()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs.mkdir(parents=True)
        pki = self.pki = PKI(self.workdir / "pki")
        etcd_port, api_port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "etcd",
            [
                self.bin("etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",  # test data: durability is not worth the disk latency
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                self.bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.dir / 'apiserver.crt'}",
                f"--tls-private-key-file={pki.dir / 'apiserver.key'}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,"
                "ResourceQuota,DefaultTolerationSeconds,ValidatingAdmissionPolicy,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        admin_cert, admin_key = pki.issue("admin", "floe-admin", ("system:masters",))
        self._write_kubeconfig(self.kubeconfig, pki.ca_cert, admin_cert, admin_key, "admin")
        wait_until(self._ready, 90, "kube-apiserver /readyz")
        for component, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
            ("kwok", "kwok"),
        ):
            orgs = ("system:masters",) if component == "kwok" else ()
            cert, key = pki.issue(component, user, orgs)
            self._write_kubeconfig(self.workdir / f"{component}.kubeconfig", pki.ca_cert, cert, key, user)
        self._spawn(
            "kube-controller-manager",
            [
                self.bin("kube-controller-manager"),
                f"--kubeconfig={self.workdir / 'kube-controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'kube-controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'kube-controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=true",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "--concurrent-job-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                self.bin("kube-scheduler"),
                f"--kubeconfig={self.workdir / 'kube-scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'kube-scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'kube-scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self._spawn(
            "kwok",
            [
                self.bin("kwok"),
                f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
                f"--config={self.bin_dir.parent / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-label-selector=type=kwok",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        for i in range(self.gpu_nodes):
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump(gpu_node(f"gpu-node-{i}")), check=True)
        volumes = [local_volume(i) for i in range(self.volumes)]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(volumes), check=True)
        wait_until(self._gpu_nodes_ready, 60, "kwok to mark the GPU nodes Ready")
        wait_until(self._default_service_account, 60, "the default ServiceAccount (controller-manager up)")

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def kubectl(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        return kubectl(self.bin("kubectl"), self.kubeconfig, *args, input=input, check=check)

    def failed_components(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _write_kubeconfig(self, path: Path, ca: Path, cert: Path, key: Path, user: str) -> None:
        path.write_text(yaml.safe_dump(kubeconfig(self.server, ca, cert, key, user)))

    def _ready(self) -> bool:
        dead = self.failed_components()
        if dead:
            raise RuntimeError(f"{dead} exited; see {self.logs}")
        return self.kubectl("get", "--raw=/readyz").returncode == 0

    def _gpu_nodes_ready(self) -> bool:
        out = self.kubectl(
            "get", "nodes", "-l", "type=kwok", "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        ).stdout.split()
        return len(out) == self.gpu_nodes and all(s == "True" for s in out)

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0


def env_with_kubeconfig(path: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(path)}
