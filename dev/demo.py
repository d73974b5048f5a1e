"""`make demo`: the whole floe pipeline, on a local control plane or on a cluster you name.

    python -m dev.demo                               # local control plane + operator (needs root)
    python -m dev.demo --keep                        # the same, left running afterwards (make demo KEEP=1)
    python -m dev.demo --kubeconfig PATH             # a cluster with floe installed (make kind-up deploy)

It applies manifests/examples/ (Project, FineTuneJob, SnowflakeDeployment in local mode), loads the
news sample onto the data volume, follows training with `floe watch`, approves the deployment as a
governance officer with `floe approve`, and, once the deploy Job has ended, calls the registered UDF on a
few articles of the sample with `floe predict` and prints its summaries.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from dev import cluster as dev_cluster
from dev.controlplane import wait_until

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "manifests" / "examples"
SAMPLE = REPO / "tests" / "data" / "news_summary.csv"
NAMESPACE, JOB, DEPLOYMENT = "news", "t5-news", "summarize"
LOADER_POD = "news-data-loader"
GOVERNANCE = ("demo-governance-officer", "floe:governance-officers")
PREDICT_ROWS = 3  # articles of the sample the demo summarizes with `floe predict`


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def floe_cli(cluster: dev_cluster.Cluster, *args: str, check: bool = True, capture: bool = False
             ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "floe_operator.cli", args[0], f"--kubeconfig={cluster.kubeconfig}", *args[1:]]
    return subprocess.run(cmd, check=check, capture_output=capture, text=True)


def status_of(cluster: dev_cluster.Cluster, kind: str, name: str) -> dict:
    return (cluster.get(kind, name, "-n", NAMESPACE) or {}).get("status") or {}


def load_data(cluster: dev_cluster.Cluster) -> None:
    """The data volume of data.yaml, filled with the sample as the README says: `kubectl cp` into the loader pod."""
    cluster.kubectl("apply", "-f", str(EXAMPLES / "data.yaml"), check=True)
    cluster.kubectl("wait", "-n", NAMESPACE, f"pod/{LOADER_POD}", "--for=condition=Ready", "--timeout=300s",
                    check=True, timeout=310)
    cluster.kubectl("cp", str(SAMPLE), f"{NAMESPACE}/{LOADER_POD}:/data/{SAMPLE.name}", check=True)
    cluster.kubectl("delete", "pod", LOADER_POD, "-n", NAMESPACE, "--wait=false")


def run_pipeline(cluster: dev_cluster.Cluster, timeout: float = 1800) -> dict:
    """Applies the example, trains, approves, deploys; returns the SnowflakeDeployment's status."""
    say("Loading 400 news articles with reference summaries onto the data volume")
    load_data(cluster)

    say(f"kubectl apply -f {EXAMPLES.relative_to(REPO)}/finetune.yaml")
    applied = cluster.kubectl("apply", "-f", str(EXAMPLES / "finetune.yaml"), check=True)
    print(applied.stdout, end="")

    say(f"floe watch ftj/{JOB} -n {NAMESPACE}   (a tiny T5 trained from scratch on CPU)")
    wait_until(lambda: status_of(cluster, "ftj", JOB).get("phase"), 120, f"FineTuneJob {JOB} to start")
    floe_cli(cluster, "watch", f"ftj/{JOB}", "-n", NAMESPACE, check=False)
    job = wait_until(
        lambda: (s := status_of(cluster, "ftj", JOB)).get("phase") in ("Succeeded", "Failed") and s,
        timeout, f"FineTuneJob {JOB} to finish",
    )
    if job["phase"] != "Succeeded":
        raise SystemExit(f"FineTuneJob {JOB} failed: {job.get('message')}")
    print("evaluation:", json.dumps(job.get("metrics", {}), sort_keys=True))

    say(f"floe approve sfd/{DEPLOYMENT} -n {NAMESPACE}   (as a governance officer)")
    floe_cli(cluster, "approve", f"sfd/{DEPLOYMENT}", "-n", NAMESPACE, "--as", GOVERNANCE[0],
             "--as-group", GOVERNANCE[1], "--comment", "demo")

    say("Deploying: package the model, register the vectorized UDF, verify it on sample rows")
    deployment = wait_until(
        lambda: (s := status_of(cluster, "sfd", DEPLOYMENT)).get("phase") in ("Deployed", "Failed") and s,
        timeout, f"SnowflakeDeployment {DEPLOYMENT} to deploy",
    )
    if deployment["phase"] != "Deployed":
        raise SystemExit(f"SnowflakeDeployment {DEPLOYMENT} failed: {deployment.get('message')}")
    return deployment


def predict(cluster: dev_cluster.Cluster) -> list[dict]:
    """`floe predict` on the first articles of the sample: the UDF's [{text, summary}] per row."""
    with SAMPLE.open(newline="") as handle:
        articles = [row["ctext"] for row, _ in zip(csv.DictReader(handle), range(PREDICT_ROWS), strict=False)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as rows:
        rows.write("\n".join(" ".join(article.split()) for article in articles))
        rows.flush()
        say(f"floe predict sfd/{DEPLOYMENT} -n {NAMESPACE} --file articles.txt   (the deploy Job has ended)")
        done = floe_cli(cluster, "predict", f"sfd/{DEPLOYMENT}", "-n", NAMESPACE, "--file", rows.name, "--json",
                        check=False, capture=True)
    if done.returncode != 0:
        raise SystemExit(f"floe predict failed: {done.stderr}")
    return json.loads(done.stdout)


def show(deployment: dict, predicted: list[dict]) -> None:
    say(f"{deployment.get('functionName')} (model {str(deployment.get('modelDigest'))[:19]}) answered:")
    for row in predicted:
        print(textwrap.fill(f"article: {row['text']}", 100, subsequent_indent="         ")[:400])
        print(textwrap.fill(f"summary: {row['summary']}", 100, subsequent_indent="         "))
        print()
    print(textwrap.dedent("""\
        These summaries come from calling the registered UDF. The model is a tiny T5 trained from scratch
        for a few minutes on 400 articles, so they are rough: that is the model, not the pipeline. For real
        summaries start from a pretrained model, e.g. in manifests/examples/finetune.yaml:
            model: {hub: {id: t5-small}}          # the cluster must reach the Hugging Face hub
            model: {path: /models/t5-small}       # or a directory on a volume (air-gapped)
        and give the job a GPU (resources: {gpus: 1}).""").rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="an existing cluster with floe installed (default: a local one)")
    parser.add_argument("--workdir", type=Path, default=dev_cluster.DEV_WORKDIR, help="local control plane state")
    parser.add_argument("--keep", action="store_true",
                        help="leave the local cluster running afterwards (stop it with `make dev-down`)")
    args = parser.parse_args()

    if args.kubeconfig:
        cluster = dev_cluster.existing(args.kubeconfig)
        show(run_pipeline(cluster), predict(cluster))
        return

    say("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), a pod runner "
        "and the operator under its own least-privilege ServiceAccount")
    workdir = args.workdir.resolve()
    cluster, runner, operator = dev_cluster.start_dev(workdir)
    kept = False
    try:
        show(run_pipeline(cluster), predict(cluster))
        print(f"\nLogs of every component: {cluster.local.logs}")
        if args.keep:
            dev_cluster.keep(cluster, runner, operator, workdir)
            kept = True
    finally:
        if not kept:
            dev_cluster.stop_dev(cluster, runner, operator)

if __name__ == "__main__":
    main()
