"""The operator at cluster scale: N FineTuneJobs applied at once on the local control plane.

A fresh control plane per N (dev/: etcd, kube-apiserver, controller-manager, scheduler, kwok with
ceil(N/8) nodes of 8 GPUs each), the operator as a separate process under its own ServiceAccount, 10 Projects.
The API server writes an audit log of the operator's requests (and of the FineTuneJob creations), from which
the script reads CR->Job latency and requests; CPU and memory come from the operator's /proc entry.

Phases per N: burst (all FineTuneJobs created from 16 threads; until every Job exists and every FineTuneJob
reports Running), steady state (--steady-s of running jobs; kwok keeps the pods running), restart (the
operator stopped and started again; until it sends no request for --quiet-s).

    mkdir ../floe-b3f1120 && git archive b3f1120 operator helm/floe/files | tar -x -C ../floe-b3f1120
    .venv/bin/python bench/operator_scale.py --n 100 --n 1000 --baseline-dir ../floe-b3f1120/operator --timeout-s 300

b3f1120 is the operator before the reconcile core was rebuilt (a quota timer per job, module-global locks,
create-then-patch), the baseline of results/operator_scale.json. 1059d48 (label work-queue) is the operator with
the work-queue reconcile, before trainer Jobs and pods moved from kopf to informers of its own: the control
that says what the informers changed, measured in the same run (latencies swing by a third between runs on a
shared 2-core machine).

--baseline-dir measures the operator package of that checkout first (label --baseline-label, "before"), then this
checkout's (label --label, "after"), for each N back to back; --operator-dir runs another checkout's under --label
alone. Each operator runs under the RBAC and admission policies of its own checkout (helm/floe/files beside its
operator directory): this checkout's would refuse what an older operator creates. Rows are kept per (label, n) in
results/operator_scale.json; results/operator_scale.md is generated from it with the goals beside the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import orjson
import urllib3
import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from floe_operator import informer  # noqa: E402

from dev import cluster as fixture  # noqa: E402
from dev.controlplane import ControlPlane, gpu_node, wait_until  # noqa: E402

RESULTS = REPO / "bench" / "results"
API = "floe.dev/v1alpha1"
PROJECTS = 10
GPUS_PER_NODE = 8
CREATE_THREADS = 16
OPERATOR_USER = f"system:serviceaccount:{fixture.OPERATOR_NAMESPACE}:{fixture.OPERATOR_ACCOUNT}"
# kwok completes a Job's pod after this delay: the jobs keep running through the steady-state window.
KWOK_COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
KWOK_COMPLETE_JITTER = "pod-complete.stage.kwok.x-k8s.io/jitter-delay"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The goals, on a 2-core machine; each is (field, comparison, bound, which N it applies to).
GOALS = [
    ("p99_cr_to_job_s", "<=", 2.0, 100, "100 at once: p99 CR->Job <= 2 s"),
    ("all_jobs_s", "<=", 30.0, 1000, "1,000 at once: all Jobs within 30 s"),
    ("cpu_ms_per_cr", "<=", 20.0, None, "operator CPU <= 20 ms per FineTuneJob"),
    ("requests_per_cr", "<=", 8.0, None, "<= 8 requests per FineTuneJob"),
    ("steady_requests_per_job_min", "<=", 0.0, None, "0 requests per running job per minute"),
    ("restart_requests_per_job", "<=", 2.0, 1000, "a restart at 1,000 costs <= 2 requests per job"),
    ("rss_mib", "<=", 300.0, 5000, "RSS <= 300 MiB at 5,000 FineTuneJobs"),
]

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": [OPERATOR_USER]},
        {"level": "Metadata", "verbs": ["create"], "resources": [{"group": "floe.dev", "resources": ["finetunejobs"]}]},
        {"level": "None"},
    ],
}


class AuditedControlPlane(ControlPlane):
    """The test control plane with an audit log of the operator's requests."""

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        if name == "kube-apiserver":
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            cmd = [*cmd, f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                   "--audit-log-format=json", "--audit-log-maxsize=0"]
        super()._spawn(name, cmd)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def machine_cpu_s() -> tuple[float, float]:
    """All CPUs' busy and total seconds since boot (/proc/stat): what share of the machine a window used."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


def proc_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_audit(path: Path) -> list[dict]:
    """One entry per request (watches log a ResponseStarted and a ResponseComplete stage)."""
    seen: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        seen.setdefault(event["auditID"], event)
        if event["stage"] == "ResponseComplete":
            seen[event["auditID"]] = event
    return list(seen.values())


def request_kind(event: dict) -> str:
    ref = event.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    code = (event.get("responseStatus") or {}).get("code", "")
    return f"{event['verb']} {ref.get('resource', event['requestURI'])}{sub} {code}"


def finetunejob(name: str, namespace: str) -> dict:
    return {
        "apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"scratch": {"shape": "tiny"}},
            "dataset": {"file": {"path": "/data/news.csv"}},
            # Explicit batch sizes: the baseline operator (b3f1120) predates the `auto` default.
            "training": {"batchSize": 8},
            "evaluation": {"batchSize": 32},
            "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
            "podMetadata": {"annotations": {KWOK_COMPLETE_DELAY: "24h", KWOK_COMPLETE_JITTER: "24h"}},
        },
    }


def operator_quiet(audit: Path, since: float, quiet_s: float, timeout: float) -> float | None:
    """Waits until the operator, having sent a request since `since`, has sent none (watches aside) for quiet_s;
    returns its last request's time, None if it was still sending (or had sent none) after `timeout`."""
    def last_request() -> float | None:
        mine = [e for e in read_audit(audit)
                if e["user"]["username"] == OPERATOR_USER and timestamp(e["requestReceivedTimestamp"]) >= since]
        if not mine:
            return None  # not started yet
        return max([since, *(timestamp(e["requestReceivedTimestamp"]) for e in mine if e["verb"] != "watch")])

    try:
        return wait_until(lambda: (t := last_request()) is not None and t < time.time() - quiet_s and t, timeout,
                          "the operator to go quiet", interval=1.0)
    except TimeoutError:
        return None


def server_busy(err: client.ApiException) -> bool:
    """An API server saturated by the burst answers a large LIST with 504 or 429: count again later."""
    return err.status in (429, 500, 503, 504)


# A LIST of objects' metadata alone: the API server encodes less, the bench decodes less.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def listed(api: client.ApiClient, path: str, label_selector: str = "", accept: str = "application/json") -> list:
    """The items of a LIST, decoded as plain JSON (the client's models for 1,000 trainer Jobs took 1.1 s of the
    bench's CPU, on the 2-core machine it measures, once a second); none while the API server is too busy to
    answer (counted again later), or broke off its answer (a LIST of 1,000 FineTuneJobs in the burst once did)."""
    query = [("labelSelector", label_selector)] if label_selector else []
    try:
        body = informer.request(api, path, query, accept).data
    except client.ApiException as err:
        if server_busy(err):
            return []
        raise
    except urllib3.exceptions.ProtocolError:
        return []
    return orjson.loads(body)["items"] or []  # null when there are none


def count_jobs(api: client.ApiClient) -> int:
    return len(listed(api, "/apis/batch/v1/jobs", "floe.dev/finetunejob", METADATA_ONLY))


def count_running(api: client.ApiClient) -> int:
    items = listed(api, "/apis/floe.dev/v1alpha1/finetunejobs")
    return sum((item.get("status") or {}).get("phase") == "Running" for item in items)


def creates_job(event: dict) -> bool:
    """The operator's request that created a trainer Job: a POST, or (server-side apply) a PATCH answered 201."""
    ref = event.get("objectRef") or {}
    return (event["verb"] in ("create", "patch") and ref.get("resource") == "jobs" and not ref.get("subresource")
            and (event.get("responseStatus") or {}).get("code") == 201)


def chart_files(operator_dir: Path | None) -> Path:
    """The RBAC and policies of the checkout whose operator runs."""
    if operator_dir is None:
        return fixture.CHART_FILES
    files = operator_dir.resolve().parent / "helm/floe/files"
    if not files.is_dir():
        raise SystemExit(f"{files}: extract the checkout's helm/floe/files beside its operator directory")
    return files


def measure(n: int, label: str, operator_dir: Path | None, args: argparse.Namespace, workdir: Path) -> dict:
    plane = AuditedControlPlane(workdir / "plane")
    plane.start()
    operator = None
    try:
        extra_nodes = [gpu_node(f"gpu-node-{i}", GPUS_PER_NODE)
                       for i in range(plane.gpu_nodes, math.ceil(n / GPUS_PER_NODE))]
        if extra_nodes:
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(extra_nodes), check=True)
        cluster = fixture.Cluster(plane.kubeconfig, plane.bin("kubectl"), plane)
        fixture.install_crds(cluster)
        operator_kubeconfig = fixture.install_operator_rbac(cluster, workdir, chart_files(operator_dir))
        env = {"PYTHONPATH": str(operator_dir.resolve())} if operator_dir else {}
        started = time.time()
        operator = fixture.OperatorProcess(operator_kubeconfig, plane.logs, env).start()
        projects = [f"scale-{i}" for i in range(PROJECTS)]
        per_project = math.ceil(n / PROJECTS)
        cluster.apply(*[
            {"apiVersion": API, "kind": "Project", "metadata": {"name": p},
             "spec": {"quota": {"gpus": per_project, "cpu": str(per_project * 2), "memory": f"{per_project * 2}Gi"}}}
            for p in projects
        ]).check_returncode()
        wait_until(lambda: all(((cluster.get("project", p) or {}).get("status") or {}).get("phase") == "Ready"
                               for p in projects), 120, "the Projects to be Ready", interval=1.0)
        if operator_quiet(plane.audit_log, started, args.quiet_s, 120) is None:
            raise RuntimeError("the operator did not go quiet after the Projects were Ready")

        api = cluster.api()
        custom = client.CustomObjectsApi(api)
        pid = operator.proc.pid
        rss_before, cpu_before = proc_mib(pid, "VmRSS"), proc_cpu_s(pid)
        plane_before = {name: proc_cpu_s(proc.pid) for name, proc in plane.procs.items()}
        machine_before = machine_cpu_s()
        burst_start = time.time()
        names = [(f"job-{i:05d}", projects[i % PROJECTS]) for i in range(n)]

        def create(item: tuple[str, str]) -> None:
            name, namespace = item
            custom.create_namespaced_custom_object("floe.dev", "v1alpha1", namespace, "finetunejobs",
                                                   finetunejob(name, namespace))

        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, names))
        applied_s = time.time() - burst_start
        reached_jobs = reached_running = True
        try:
            wait_until(lambda: count_jobs(api) >= n, args.timeout_s, f"{n} Jobs", interval=1.0)
        except TimeoutError:
            reached_jobs = False
        try:
            remaining = max(1.0, args.timeout_s - (time.time() - burst_start))
            wait_until(lambda: count_running(api) >= n, remaining, f"{n} FineTuneJobs Running", interval=2.0)
        except TimeoutError:
            reached_running = False
        burst_end = time.time()
        cpu_burst = proc_cpu_s(pid) - cpu_before
        plane_cpu = {name: proc_cpu_s(proc.pid) - plane_before[name] for name, proc in plane.procs.items()}
        machine_after = machine_cpu_s()
        machine_busy = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
        rss_after = proc_mib(pid, "VmRSS")

        steady_start, cpu_steady = time.time(), proc_cpu_s(pid)
        time.sleep(args.steady_s)  # a measurement window, nothing to wait for
        steady_end = time.time()
        steady_core = (proc_cpu_s(pid) - cpu_steady) / (steady_end - steady_start)
        load_avg = os.getloadavg()

        operator.stop()
        restart_start = time.time()
        operator.start()
        restart_quiet = operator_quiet(plane.audit_log, restart_start, args.quiet_s, args.timeout_s)
        restart_end = time.time()
        restart_rss = proc_mib(operator.proc.pid, "VmRSS")

        events = read_audit(plane.audit_log)
        ops = [e for e in events if e["user"]["username"] == OPERATOR_USER]

        def window(start: float, end: float) -> list[dict]:
            return [e for e in ops if start <= timestamp(e["requestReceivedTimestamp"]) < end]

        created = {(e["objectRef"]["namespace"], e["objectRef"]["name"]): timestamp(e["stageTimestamp"])
                   for e in events if e["user"]["username"] != OPERATOR_USER and e["verb"] == "create"
                   and (e.get("responseStatus") or {}).get("code") == 201}
        job_created = {(e["objectRef"]["namespace"], e["objectRef"]["name"].removesuffix("-train")):
                       timestamp(e["stageTimestamp"])
                       for e in ops if creates_job(e)}
        latencies = sorted(job_created[key] - created[key] for key in created if key in job_created)
        burst_ops = window(burst_start, burst_end)
        steady_ops = window(steady_start, steady_end)
        restart_ops = window(restart_start, restart_end)
        quantiles = [math.nan] * 99
        if len(latencies) > 1:
            quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        return {
            "label": label,
            "n": n,
            "p50_cr_to_job_s": round(quantiles[49], 2),
            "p99_cr_to_job_s": round(quantiles[98], 2),
            "all_jobs_s": round(max(job_created.values()) - min(created.values()), 1) if job_created else None,
            "jobs_created": len(job_created),
            "all_jobs_reached": reached_jobs,
            "all_running_reached": reached_running,
            "apply_s": round(applied_s, 1),
            "burst_s": round(burst_end - burst_start, 1),
            "rss_mib": round(rss_after, 1),
            "rss_before_mib": round(rss_before, 1),
            "cpu_ms_per_cr": round(cpu_burst * 1000 / n, 1),
            # the rest of the machine in the same window: the control plane's components and how busy all CPUs were
            "control_plane_cpu_ms_per_cr": {name: round(cpu * 1000 / n, 1) for name, cpu in plane_cpu.items()},
            "machine_busy": round(machine_busy, 2),
            "requests_per_cr": round(len(burst_ops) / n, 2),
            "burst_requests": dict(Counter(map(request_kind, burst_ops)).most_common()),
            "steady_s": round(steady_end - steady_start, 1),
            "steady_requests_per_job_min": round(len(steady_ops) / n / ((steady_end - steady_start) / 60), 3),
            "steady_requests": dict(Counter(map(request_kind, steady_ops)).most_common()),
            "steady_cpu_core": round(steady_core, 3),
            "load_avg": [round(x, 2) for x in load_avg],
            "restart_requests_per_job": round(len(restart_ops) / n, 2),
            # None: still sending requests when --timeout-s ran out
            "restart_resync_s": round(restart_quiet - restart_start, 1) if restart_quiet else None,
            "restart_rss_mib": round(restart_rss, 1),
            "restart_requests": dict(Counter(map(request_kind, restart_ops)).most_common()),
            "machine": f"{platform.node()} {os.cpu_count()} CPUs",
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": " ".join(sys.argv),
        }
    finally:
        if operator:
            operator.stop()
        plane.stop()


def goal_verdict(row: dict, field: str, bound: float, goal_n: int | None) -> str:
    """The row's figure, marked met or not where the goal is for the row's N (else only shown)."""
    value = row.get(field)
    if value is None or (field.startswith("restart_") and not row["restart_requests"]):
        return "-"
    if goal_n not in (None, row["n"]):
        return f"{value} (the goal is for N={goal_n})"
    if field == "all_jobs_s" and not row["all_jobs_reached"]:
        return f"not all within {row['burst_s']} s ({row['jobs_created']} of {row['n']} by the end of the run) ✗"
    return f"{value} {'✓' if value <= bound else '✗'}"


def plane_cpu_text(row: dict) -> str:
    """The control plane's CPU per CR, in all and by its largest components ('-' for rows measured without)."""
    per_component = row.get("control_plane_cpu_ms_per_cr")
    if not per_component:
        return "-"
    largest = sorted(per_component.items(), key=lambda item: -item[1])[:2]
    return f"{sum(per_component.values()):.1f} ({', '.join(f'{name} {ms}' for name, ms in largest)})"


def report(rows: list[dict]) -> str:
    lines = [
        "# Operator at cluster scale",
        "",
        "Generated by `bench/operator_scale.py` from `operator_scale.json`. N FineTuneJobs created at once on the",
        "local control plane (kwok nodes with 8 GPUs each, 10 Projects), the operator as its own process under its",
        "ServiceAccount; requests from the API server's audit log of the operator's user. Latencies and CPU include",
        "what else ran on the machine (its CPUs under Commands; the load average beside each row); request counts",
        "do not. `(not all)`: not every Job existed when --timeout-s ran out (the Goals table says how many did);",
        "the latencies cover those that did. Control plane CPU: etcd, kube-apiserver, controller-manager, scheduler",
        "and kwok in the burst, per FineTuneJob; machine busy: the share of all CPUs in use during the burst.",
        "",
        "| label | N | CR->Job p50 / p99 s | all Jobs s | RSS MiB (before) | CPU ms per CR | requests per CR "
        "| control plane CPU ms per CR | machine busy | steady req/job/min | steady CPU (cores) | load avg 1/5/15 "
        "| restart req/job | restart resync s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r["restart_requests"]:  # none seen: the wait ended before the operator started; nothing measured
            r = {**r, "restart_requests_per_job": "not measured", "restart_resync_s": "not measured"}
        lines.append(
            f"| {r['label']} | {r['n']} | {r['p50_cr_to_job_s']} / {r['p99_cr_to_job_s']} | {r['all_jobs_s']}"
            f"{'' if r['all_jobs_reached'] else ' (not all)'} | {r['rss_mib']} ({r['rss_before_mib']}) "
            f"| {r['cpu_ms_per_cr']} | {r['requests_per_cr']} | {plane_cpu_text(r)} "
            f"| {format(r['machine_busy'], '.0%') if 'machine_busy' in r else '-'} "
            f"| {r['steady_requests_per_job_min']} "
            f"| {r['steady_cpu_core']} | {' / '.join(map(str, r['load_avg']))} | {r['restart_requests_per_job']} "
            f"| {r['restart_resync_s']} |"
        )
    lines += ["", "## Goals", "", "| goal | " + " | ".join(f"{r['label']} N={r['n']}" for r in rows) + " |",
              "| --- |" + " --- |" * len(rows)]
    for field, _, bound, goal_n, text in GOALS:
        lines.append(f"| {text} | " + " | ".join(goal_verdict(r, field, bound, goal_n) for r in rows) + " |")
    lines += ["", "## Operator requests by verb, resource and status code", ""]
    for r in rows:
        lines.append(f"**{r['label']} N={r['n']}**: burst {r['burst_requests']}; steady {r['steady_requests']}; "
                     f"restart {r['restart_requests']}")
        lines.append("")
    lines += ["## Commands", ""] + sorted({f"- `{r['command']}` ({r['date']}, {r['machine']})" for r in rows})
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", default=[], help="FineTuneJobs at once (repeatable)")
    parser.add_argument("--label", default="after", help="row label of the operator measured (default after)")
    parser.add_argument("--operator-dir", type=Path, help="run the floe_operator package found in this directory")
    parser.add_argument("--baseline-dir", type=Path, help="first measure the floe_operator package found here")
    parser.add_argument("--baseline-label", default="before", help="row label of the baseline (default before)")
    parser.add_argument("--steady-s", type=float, default=60.0, help="steady-state window (default 60 s)")
    parser.add_argument("--quiet-s", type=float, default=10.0, help="no request for this long ends a restart")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="cap on the burst and on the restart")
    parser.add_argument("--out", type=Path, default=RESULTS / "operator_scale.json")
    parser.add_argument("--report", action="store_true", help="only write the .md again from the .json")
    args = parser.parse_args()
    if args.report:
        args.out.with_suffix(".md").write_text(report(json.loads(args.out.read_text())))
        return
    operators = [(args.baseline_label, args.baseline_dir)] if args.baseline_dir else []
    operators.append((args.label, args.operator_dir))
    for n, (label, operator_dir) in ((n, operator) for n in args.n for operator in operators):
        with tempfile.TemporaryDirectory(prefix="floe-scale-") as workdir:
            row = measure(n, label, operator_dir, args, Path(workdir))
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        rows = [r for r in rows if (r["label"], r["n"]) != (row["label"], row["n"])] + [row]
        rows.sort(key=lambda r: (r["n"], r["label"] != "before", r["label"]))
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(report(rows))
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_requests")}), flush=True)


if __name__ == "__main__":
    main()
