"""`floe`: the command line for people who use floe.

    floe status [-n NS | -A]            table of floe resources
    floe watch ftj/NAME                 progress bar with ETA and loss until the job ends
    floe logs ftj/NAME [-f]             the trainer's logs
    floe plot ftj/NAME -o loss.png      loss and ROUGE curves from the trainer's logs
    floe approve sfd/NAME               approve a SnowflakeDeployment (governance officers)
    floe predict sfd/NAME --text T      call its deployed function (local mode) on rows: --text, --file

Arguments are checked before anything talks to the cluster. Formatting lives in pure functions
(`format_*`, `parse_*`); the `cmd_*` functions do the I/O.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from floe_operator import api
from floe_operator.builders.snowflakedeployment import (
    DEPLOY_CONTAINER,
    PREDICT_DEADLINE_SECONDS,
    NotPredictable,
    job_finished,
    predict_argument,
    predict_job,
)

GROUP, VERSION = "floe.dev", "v1alpha1"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short: str
    namespaced: bool = True


KINDS = tuple(
    Kind(kind.kind, kind.plural, kind.short_names[0], namespaced=kind.scope == "Namespaced") for kind in api.KINDS
)
_KIND_ALIASES = {
    alias: kind
    for kind in KINDS
    for alias in (kind.kind.lower(), kind.plural, kind.short, f"{kind.plural}.{GROUP}", f"{kind.kind.lower()}.{GROUP}")
}
FINETUNEJOB = _KIND_ALIASES["ftj"]
SNOWFLAKEDEPLOYMENT = _KIND_ALIASES["sfd"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
PLOT_FORMATS = (".png", ".svg", ".pdf")
TERMINAL_PHASES = {"Succeeded", "Failed"}


class UsageError(ValueError):
    """Bad arguments; reported before any request is made."""


@dataclass(frozen=True)
class Ref:
    kind: Kind
    name: str


def parse_ref(text: str, *allowed: Kind) -> Ref:
    """`ftj/NAME` (or finetunejob/NAME, finetunejobs/NAME ...) into a Ref of one of `allowed`."""
    expected = " or ".join(f"{k.short}/NAME" for k in allowed)
    kind_text, sep, name = text.partition("/")
    if not sep or not name:
        raise UsageError(f"{text!r}: expected {expected}")
    kind = _KIND_ALIASES.get(kind_text.lower())
    if kind is None or kind not in allowed:
        raise UsageError(f"{text!r}: expected {expected}")
    if len(name) > 253 or not _NAME.match(name):
        raise UsageError(f"{text!r}: {name!r} is not a valid object name (lower-case letters, digits, '-', '.')")
    return Ref(kind, name)


# ---- pure formatting -------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """3725 -> '1h2m', 192 -> '3m12s', None -> '-'."""
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_age(created: str | None, now: datetime) -> str:
    if not created:
        return "-"
    then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return format_duration((now - then).total_seconds())


def format_number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def format_bar(percent: float | None, width: int = 30) -> str:
    """[##########..........] for 0..100."""
    fraction = 0.0 if percent is None else min(max(percent / 100.0, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_progress(status: dict, width: int = 30) -> str:
    """One line for a FineTuneJob's status: bar, percent, step, loss, throughput, ETA."""
    phase = status.get("phase") or "Pending"
    progress = status.get("progress") or {}
    percent = progress.get("percent")
    if percent is None and progress.get("step") is not None and progress.get("totalSteps"):
        percent = 100.0 * progress["step"] / progress["totalSteps"]
    if phase == "Succeeded":
        percent = 100.0
    parts = [f"{phase:<9}", format_bar(percent, width), f"{percent or 0:5.1f}%"]
    if progress.get("step") is not None:
        parts.append(f"step {progress['step']}/{progress.get('totalSteps', '?')}")
    if progress.get("loss") is not None:
        parts.append(f"loss {format_number(progress['loss'], 4)}")
    if progress.get("samplesPerSecond") is not None:
        parts.append(f"{format_number(progress['samplesPerSecond'], 1)} samples/s")
    if phase not in TERMINAL_PHASES and progress.get("etaSeconds") is not None:
        parts.append(f"eta {format_duration(progress['etaSeconds'])}")
    rouge = (status.get("metrics") or {}).get("rougeL")
    if rouge is not None:
        parts.append(f"rougeL {format_number(rouge, 3)}")
    return "  ".join(parts)


def _ready_message(status: dict) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("message") or condition.get("reason") or ""
    return status.get("message") or ""


def resource_row(kind: Kind, obj: dict, now: datetime) -> list[str]:
    """KIND, NAMESPACE, NAME, PHASE, PROGRESS, METRIC, AGE, MESSAGE for one object."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    progress, metrics = status.get("progress") or {}, status.get("metrics") or {}
    percent = progress.get("percent")
    metric = "-"
    if kind is FINETUNEJOB:
        if metrics.get("rougeL") is not None:
            metric = f"rougeL={format_number(metrics['rougeL'])}"
        elif progress.get("loss") is not None:
            metric = f"loss={format_number(progress['loss'])}"
    elif kind is SNOWFLAKEDEPLOYMENT and status.get("functionName"):
        metric = status["functionName"]
    return [
        kind.short,
        meta.get("namespace", "-") if kind.namespaced else "-",
        meta.get("name", "?"),
        status.get("phase") or "-",
        "-" if percent is None else f"{format_number(float(percent), 1)}%",
        metric,
        format_age(meta.get("creationTimestamp"), now),
        _ready_message(status)[:60],
    ]


STATUS_HEADER = ["KIND", "NAMESPACE", "NAME", "PHASE", "PROGRESS", "METRIC", "AGE", "MESSAGE"]


def format_table(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


@dataclass
class TrainingHistory:
    """What the trainer's JSON-lines log says happened."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    validation_losses: list[float | None] = field(default_factory=list)
    rouge_l: list[float | None] = field(default_factory=list)


def parse_training_log(lines: Iterable[str]) -> TrainingHistory:
    """Step and evaluation events of the trainer's stdout; other lines are skipped.

    A resumed run repeats steps: the later value of a step replaces the earlier one.
    """
    by_step: dict[int, float] = {}
    evals: dict[int, tuple[float | None, float | None]] = {}
    last_step = 0
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "step" and isinstance(event.get("step"), int) and _is_number(event.get("loss")):
            last_step = event["step"]
            by_step[last_step] = float(event["loss"])
        elif event.get("event") == "evaluation":
            step = event["step"] if isinstance(event.get("step"), int) else last_step
            evals[step] = (_number_or_none(event.get("validationLoss")), _number_or_none(event.get("rougeL")))
    history = TrainingHistory()
    for step in sorted(by_step):
        history.steps.append(step)
        history.losses.append(by_step[step])
    for step in sorted(evals):
        history.eval_steps.append(step)
        history.validation_losses.append(evals[step][0])
        history.rouge_l.append(evals[step][1])
    return history


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def approval_target(sfd: dict) -> str:
    """The function a SnowflakeDeployment deploys to, as its approval names it."""
    target = sfd["spec"]["snowflake"]
    return f"{target['database']}.{target['schema']}.{target['functionName']}"


def model_to_approve(sfd: dict, ftj: dict | None, digest: str | None) -> str:
    """The digest an approval binds to: --digest, else the FineTuneJob's model once it has succeeded."""
    if digest:
        return digest
    ref = (sfd["spec"].get("source") or {}).get("fineTuneJobRef")
    if not ref:
        raise UsageError("the deployment's source is a modelUri: pass --digest sha256:<hex> of the model you approve")
    status = (ftj or {}).get("status") or {}
    if status.get("phase") != "Succeeded" or not status.get("modelDigest"):
        raise UsageError(f"FineTuneJob {ref['name']} has no trained model yet (phase {status.get('phase')}): "
                         "there is nothing to approve")
    return status["modelDigest"]


def approval_patch(approved_by: str, model_digest: str, target: str, comment: str | None = None) -> dict:
    """Merge patch that approves one model for one function of a SnowflakeDeployment."""
    approval: dict[str, Any] = {"approved": True, "approvedBy": approved_by, "modelDigest": model_digest,
                                "target": target}
    if comment:
        approval["comment"] = comment
    return {"spec": {"approval": approval}}


def read_rows(texts: list[str], file: Path | None, column: str) -> list[str]:
    """The rows to predict: each --text, then the file's (a .csv's ``column``, else one row per line)."""
    blank = [i + 1 for i, row in enumerate(texts) if not row.strip()]
    if blank:
        raise UsageError(f"--text: row(s) {blank} are blank")
    rows = list(texts)
    if file is not None:
        if not file.is_file():
            raise UsageError(f"--file {str(file)!r}: no such file")
        if file.suffix.lower() == ".csv":
            import csv

            with file.open(newline="") as handle:
                reader = csv.DictReader(handle)
                if column not in (reader.fieldnames or ()):
                    raise UsageError(f"--file {str(file)!r}: no column {column!r} (it has {reader.fieldnames})")
                rows += [record[column] for record in reader if (record[column] or "").strip()]
        else:
            rows += [line for line in file.read_text().splitlines() if line.strip()]
    if not rows:
        raise UsageError("nothing to predict: give --text or a --file with rows")
    try:
        predict_argument(rows)
    except NotPredictable as err:
        raise UsageError(str(err)) from None
    return rows


def predict_outcome(log_lines: list[str]) -> dict | None:
    """The deployer's outcome: the last line of its log that is a JSON object with an outcome."""
    for line in reversed(log_lines):
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict) and "outcome" in found:
            return found
    return None


# ---- cluster access --------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> tuple[client.ApiClient, str]:
    """ApiClient and default namespace from --kubeconfig/--context, $KUBECONFIG or in-cluster."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        if args.kubeconfig or args.context:
            raise
        config.load_incluster_config()
        namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        return client.ApiClient(), args.namespace or namespace
    if args.context:
        active = next((c for c in contexts if c["name"] == args.context), None)
        if active is None:
            raise UsageError(f"--context {args.context!r}: not in the kubeconfig")
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    namespace = active.get("context", {}).get("namespace") or "default"
    api = client.ApiClient()
    if args.as_user:  # like kubectl --as: the API server checks that we may impersonate
        api.set_default_header("Impersonate-User", args.as_user)
        if args.as_group:
            api.set_default_header("Impersonate-Group", args.as_group)
    return api, args.namespace or namespace


def _get(api, kind: Kind, namespace: str, name: str) -> dict:

    objects = client.CustomObjectsApi(api)
    if kind.namespaced:
        return objects.get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name)
    return objects.get_cluster_custom_object(GROUP, VERSION, kind.plural, name)


def _trainer_pods(api, namespace: str, job: dict) -> list:

    job_name = (job.get("status") or {}).get("jobName")
    if not job_name:
        return []
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    # Worker 0 (rank 0 reports progress) first, then by creation.
    return sorted(
        pods,
        key=lambda p: (
            p.metadata.labels.get("batch.kubernetes.io/job-completion-index", "0"),
            p.metadata.creation_timestamp,
        ),
    )


def cmd_status(args: argparse.Namespace) -> int:

    api, namespace = _connect(args)
    objects = client.CustomObjectsApi(api)
    now = datetime.now(UTC)
    rows, skipped = [], []
    for kind in KINDS:
        try:
            if not kind.namespaced:
                items = objects.list_cluster_custom_object(GROUP, VERSION, kind.plural)["items"]
                if not args.all_namespaces:  # the Project that owns this namespace (they share the name)
                    items = [p for p in items if p["metadata"]["name"] == namespace]
            elif args.all_namespaces:
                items = objects.list_cluster_custom_object(GROUP, VERSION, kind.plural)["items"]
            else:
                items = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]
        except ApiException as err:
            if err.status in (401, 403, 404):
                skipped.append(f"{kind.plural} ({err.reason})")
                continue
            raise
        rows += [resource_row(kind, obj, now) for obj in items]
    if rows:
        print(format_table(STATUS_HEADER, rows))
    else:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
        print(f"No floe resources in {where}.")
    if skipped:
        print(f"(not shown, no access: {', '.join(skipped)})", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:

    api, namespace = _connect(args)
    ref = args.ref
    objects = client.CustomObjectsApi(api)
    tty = sys.stdout.isatty()
    last_line = None
    job = _get(api, ref.kind, namespace, ref.name)
    resource_version = job["metadata"]["resourceVersion"]
    while True:
        status = job.get("status") or {}
        line = format_progress(status, width=args.width)
        if line != last_line:
            print(("\r\x1b[2K" + line) if tty else line, end="" if tty else "\n", flush=True)
            last_line = line
        if status.get("phase") in TERMINAL_PHASES:
            if tty:
                print()
            if status.get("phase") == "Failed":
                print(f"{ref.name} failed: {_ready_message(status)}", file=sys.stderr)
                return 1
            return 0
        stream = watch.Watch().stream(
            objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            ref.kind.plural,
            field_selector=f"metadata.name={ref.name}",
            resource_version=resource_version,
            timeout_seconds=60,
        )
        for event in stream:
            if event["type"] == "DELETED":
                print(f"\n{ref.kind.short}/{ref.name} was deleted", file=sys.stderr)
                return 1
            job = event["object"]
            resource_version = job["metadata"]["resourceVersion"]
            break
        else:  # the watch timed out quietly: read afresh (also recovers from an expired resourceVersion)
            job = _get(api, ref.kind, namespace, ref.name)
            resource_version = job["metadata"]["resourceVersion"]


def _log_lines(
    api, namespace: str, pod, *, follow: bool = False, tail: int | None = None, container: str | None = None
) -> Iterator[str]:

    core = client.CoreV1Api(api)
    if follow:
        response = core.read_namespaced_pod_log(
            pod.metadata.name, namespace, follow=True, tail_lines=tail, _preload_content=False
        )
        for chunk in response.stream():
            yield from chunk.decode(errors="replace").splitlines()
        return
    text = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=tail, container=container)
    yield from text.splitlines()


def cmd_logs(args: argparse.Namespace) -> int:
    api, namespace = _connect(args)
    job = _get(api, args.ref.kind, namespace, args.ref.name)
    pods = _trainer_pods(api, namespace, job)
    if not pods:
        print(f"{args.ref.kind.short}/{args.ref.name} has no trainer pods (yet, or any more)", file=sys.stderr)
        return 1
    chosen = pods if args.all_workers else pods[:1]
    for pod in chosen:
        prefix = f"[{pod.metadata.name}] " if len(chosen) > 1 else ""
        for line in _log_lines(api, namespace, pod, follow=args.follow, tail=args.tail):
            print(prefix + line)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if args.from_file:
        lines: Iterable[str] = Path(args.from_file).read_text().splitlines()
        title = Path(args.from_file).name
    else:
        api, namespace = _connect(args)
        job = _get(api, args.ref.kind, namespace, args.ref.name)
        pods = _trainer_pods(api, namespace, job)
        if not pods:
            print(
                f"{args.ref.kind.short}/{args.ref.name}: no trainer pods to read the history from; "
                "save `floe logs` while the job runs and use --from-file",
                file=sys.stderr,
            )
            return 1
        lines = list(_log_lines(api, namespace, pods[0]))
        title = f"{namespace}/{args.ref.name}"
    history = parse_training_log(lines)
    if not history.steps:
        print("no training steps in the log", file=sys.stderr)
        return 1
    plot_history(history, title, args.output)
    print(f"wrote {args.output}")
    return 0


def plot_history(history: TrainingHistory, title: str, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_rouge = any(v is not None for v in history.rouge_l)
    figure, loss_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis.plot(history.steps, history.losses, label="training loss", color="tab:blue", linewidth=1)
    points = [(s, v) for s, v in zip(history.eval_steps, history.validation_losses, strict=True) if v is not None]
    if points:
        loss_axis.plot(*zip(*points, strict=True), "o-", label="validation loss", color="tab:orange")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if has_rouge:
        rouge_axis = loss_axis.twinx()
        points = [(s, v) for s, v in zip(history.eval_steps, history.rouge_l, strict=True) if v is not None]
        rouge_axis.plot(*zip(*points, strict=True), "s--", label="ROUGE-L", color="tab:green")
        rouge_axis.set_ylabel("ROUGE-L")
        more_handles, more_labels = rouge_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="upper right")
    loss_axis.set_title(title)
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)


def api_error_message(err: ApiException) -> str:
    """The API server's own message (it names the field or the rule), else the HTTP reason."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def _whoami(api) -> str:

    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    return review.status.user_info.username


def cmd_approve(args: argparse.Namespace) -> int:

    api, namespace = _connect(args)
    approver = _whoami(api)
    objects = client.CustomObjectsApi(api)
    try:
        sfd = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, args.ref.kind.plural, args.ref.name)
        ref = (sfd["spec"].get("source") or {}).get("fineTuneJobRef")
        ftj = None
        if ref and not args.digest:
            ftj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "finetunejobs", ref["name"])
        digest, target = model_to_approve(sfd, ftj, args.digest), approval_target(sfd)
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            args.ref.kind.plural,
            args.ref.name,
            approval_patch(approver, digest, target, args.comment),
            _content_type="application/merge-patch+json",
        )
    except ApiException as err:
        print(f"approving {args.ref.kind.short}/{args.ref.name} failed: {api_error_message(err)}", file=sys.stderr)
        return 1
    print(f"{args.ref.kind.short}/{args.ref.name} approved by {approver}: {digest} for {target}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    rows = read_rows(args.text or [], args.file, args.column)
    api, namespace = _connect(args)
    ref = args.ref
    sfd = _get(api, ref.kind, namespace, ref.name)
    phase = (sfd.get("status") or {}).get("phase")
    if phase != "Deployed":
        print(f"{ref.kind.short}/{ref.name} is {phase or 'Pending'}, not Deployed: nothing to call", file=sys.stderr)
        return 1
    batch = client.BatchV1Api(api)
    deploy_job = batch.read_namespaced_job(f"{ref.name}-deploy", namespace)
    try:
        job = predict_job(api.sanitize_for_serialization(deploy_job), rows)
    except NotPredictable as err:
        print(f"floe predict: {err}", file=sys.stderr)
        return 1
    created = batch.create_namespaced_job(namespace, job)
    name = created.metadata.name
    print(f"job/{name} calls {sfd['status'].get('functionName')} on {len(rows)} row(s)", file=sys.stderr)
    finished = _wait_for_job(batch, namespace, name, args.timeout)
    if finished is None:
        print(f"floe predict: job/{name} did not finish within {args.timeout} s", file=sys.stderr)
        return 1
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/controller-uid={finished['metadata']['uid']}"
    ).items
    lines = [line for pod in pods for line in _log_lines(api, namespace, pod, container=DEPLOY_CONTAINER)]
    outcome = predict_outcome(lines)
    if not outcome or outcome.get("outcome") != "Predicted":
        message = (outcome or {}).get("message") or f"job/{name} failed without an outcome in its log"
        print(f"floe predict: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(outcome["rows"], indent=2))
    else:
        for row in outcome["rows"]:
            print(" ".join(row["summary"].split()))
    return 0


def _wait_for_job(batch, namespace: str, name: str, timeout: int) -> dict | None:
    """The Job once it has finished (Complete or Failed), None after ``timeout`` seconds."""
    deadline = datetime.now(UTC).timestamp() + timeout
    while (left := int(deadline - datetime.now(UTC).timestamp())) > 0:
        stream = watch.Watch().stream(
            batch.list_namespaced_job, namespace, field_selector=f"metadata.name={name}", timeout_seconds=min(left, 60)
        )
        for event in stream:
            job = batch.api_client.sanitize_for_serialization(event["object"])
            if job_finished(job):
                return job
    return None


# ---- arguments -------------------------------------------------------------------------------


def _ref_type(*allowed: Kind):
    def convert(text: str) -> Ref:
        try:
            return parse_ref(text, *allowed)
        except UsageError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _plot_output(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r}: the file name must end in {', '.join(PLOT_FORMATS)}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: directory {str(path.parent)!r} does not exist")
    return path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floe", description="Work with floe's resources.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("--as", dest="as_user", help="user to impersonate, as with kubectl --as")
    common.add_argument("--as-group", help="group to impersonate, with --as")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", parents=[common], help="table of floe resources")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace you can read")
    status.set_defaults(run=cmd_status)

    watch = commands.add_parser("watch", parents=[common], help="follow a FineTuneJob's progress")
    watch.add_argument("ref", type=_ref_type(FINETUNEJOB), metavar="ftj/NAME")
    watch.add_argument("--width", type=_positive, default=30, help="progress bar width")
    watch.set_defaults(run=cmd_watch)

    logs = commands.add_parser("logs", parents=[common], help="a FineTuneJob's trainer logs")
    logs.add_argument("ref", type=_ref_type(FINETUNEJOB), metavar="ftj/NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines")
    logs.add_argument("--tail", type=_positive, help="only the last N lines")
    logs.add_argument("--all-workers", action="store_true", help="every worker pod, not only worker 0")
    logs.set_defaults(run=cmd_logs)

    plot = commands.add_parser("plot", parents=[common], help="loss and ROUGE curves to an image")
    plot.add_argument("ref", type=_ref_type(FINETUNEJOB), metavar="ftj/NAME")
    plot.add_argument("-o", "--output", type=_plot_output, required=True, help="image file (.png, .svg, .pdf)")
    plot.add_argument("--from-file", help="read a saved trainer log instead of the pod's")
    plot.set_defaults(run=cmd_plot)

    approve = commands.add_parser("approve", parents=[common], help="approve a SnowflakeDeployment")
    approve.add_argument("ref", type=_ref_type(SNOWFLAKEDEPLOYMENT), metavar="sfd/NAME")
    approve.add_argument("--comment", help="why (recorded in spec.approval.comment)")
    approve.add_argument("--digest", help="the model approved (default: the FineTuneJob's status.modelDigest)")
    approve.set_defaults(run=cmd_approve)

    predict = commands.add_parser("predict", parents=[common], help="call a deployed function on rows")
    predict.add_argument("ref", type=_ref_type(SNOWFLAKEDEPLOYMENT), metavar="sfd/NAME")
    predict.add_argument("--text", action="append", help="a row to summarize (repeat for more)")
    predict.add_argument("--file", type=Path, help="rows: a .csv (see --column) or a text file, one row per line")
    predict.add_argument("--column", default="text", help="the .csv column holding the rows (default: text)")
    predict.add_argument("--json", action="store_true", help="print [{text, summary}] as JSON")
    predict.add_argument("--timeout", type=_positive, default=PREDICT_DEADLINE_SECONDS, help="seconds to wait")
    predict.set_defaults(run=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plot":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("plot needs matplotlib: pip install 'floe-operator[cli]'")
        if args.from_file and not Path(args.from_file).is_file():
            parser.error(f"--from-file {args.from_file!r}: no such file")
    try:
        return args.run(args)
    except UsageError as err:
        parser.error(str(err))
    except config.ConfigException as err:
        print(f"floe {args.command}: no cluster to talk to: {err}", file=sys.stderr)
    except ApiException as err:
        print(f"floe {args.command}: {api_error_message(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
