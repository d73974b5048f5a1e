"""`floe`: the command line for people who use floe.

    floe status [-n NS | -A]            table of floe resources
    floe watch ftj/NAME                 progress bar with ETA and loss until the job ends
    floe logs ftj/NAME [-f]             the trainer's logs
    floe plot ftj/NAME -o loss.png      loss and ROUGE curves from the trainer's logs
    floe approve sfd/NAME               approve a SnowflakeDeployment (governance officers)
    floe predict sfd/NAME --text T      call its deployed function (local mode) on rows: --text, --file

A thin layer over floe's Python API (`floe.Client`), which makes every request: here arguments are parsed,
checked before anything talks to the cluster, and printed. Formatting lives in pure functions (`format_*`,
`parse_*`, here and in `floe.progress`); the `cmd_*` functions do the I/O through the client.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from floe import Client, FloeError, JobFailed, NoTrainerPods
from floe.history import loss_figure, parse_training_log
from floe.progress import format_duration, format_number, ready_message
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from floe_operator import GROUP, api
from floe_operator.builders.snowflakedeployment import PREDICT_DEADLINE_SECONDS, NotPredictable, predict_argument


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


def format_age(created: str | None, now: datetime) -> str:
    if not created:
        return "-"
    then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return format_duration((now - then).total_seconds())


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
        ready_message(status)[:60],
    ]


STATUS_HEADER = ["KIND", "NAMESPACE", "NAME", "PHASE", "PROGRESS", "METRIC", "AGE", "MESSAGE"]


def format_table(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


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


# ---- commands: each asks the client and prints ------------------------------------------------


def _connect(args: argparse.Namespace) -> Client:
    """The client for --kubeconfig/--context/-n/--as, else $KUBECONFIG, else in-cluster."""
    return Client(args.namespace, kubeconfig=args.kubeconfig, context=args.context, as_user=args.as_user,
                  as_group=args.as_group)


def cmd_status(args: argparse.Namespace) -> int:
    floe = _connect(args)
    now = datetime.now(UTC)
    rows, skipped = [], []
    for kind in KINDS:
        try:
            items = floe.list(kind.plural, all_namespaces=args.all_namespaces)
        except ApiException as err:
            if err.status in (401, 403, 404):
                skipped.append(f"{kind.plural} ({err.reason})")
                continue
            raise
        if not kind.namespaced and not args.all_namespaces:  # the Project that owns this namespace (same name)
            items = [p for p in items if p["metadata"]["name"] == floe.namespace]
        rows += [resource_row(kind, obj, now) for obj in items]
    if rows:
        print(format_table(STATUS_HEADER, rows))
    else:
        where = "any namespace" if args.all_namespaces else f"namespace {floe.namespace}"
        print(f"No floe resources in {where}.")
    if skipped:
        print(f"(not shown, no access: {', '.join(skipped)})", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        _connect(args).wait(args.ref.name, width=args.width)
    except JobFailed as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    for line in _connect(args).logs(args.ref.name, follow=args.follow, tail=args.tail, all_workers=args.all_workers):
        print(line)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    if args.from_file:
        history = parse_training_log(Path(args.from_file).read_text().splitlines())
        title = Path(args.from_file).name
    else:
        floe = _connect(args)
        try:
            history = floe.history(args.ref.name)
        except NoTrainerPods:
            print(
                f"{args.ref.kind.short}/{args.ref.name}: no trainer pods to read the history from; "
                "save `floe logs` while the job runs and use --from-file",
                file=sys.stderr,
            )
            return 1
        title = f"{floe.namespace}/{args.ref.name}"
    if not history.steps:
        print("no training steps in the log", file=sys.stderr)
        return 1
    loss_figure(history, title).savefig(args.output)
    print(f"wrote {args.output}")
    return 0


def api_error_message(err: ApiException) -> str:
    """The API server's own message (it names the field or the rule), else the HTTP reason."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def cmd_approve(args: argparse.Namespace) -> int:
    floe = _connect(args)
    try:
        approval = floe.approve(args.ref.name, digest=args.digest, comment=args.comment)
    except ApiException as err:
        print(f"approving {args.ref.kind.short}/{args.ref.name} failed: {api_error_message(err)}", file=sys.stderr)
        return 1
    print(f"{args.ref.kind.short}/{args.ref.name} approved by {approval['approvedBy']}: {approval['modelDigest']} "
          f"for {approval['target']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    rows = read_rows(args.text or [], args.file, args.column)
    summaries = _connect(args).predict(args.ref.name, rows, timeout=args.timeout)
    if args.json:
        print(json.dumps([{"text": text, "summary": summary} for text, summary in zip(rows, summaries, strict=True)],
                         indent=2))
    else:
        for summary in summaries:
            print(" ".join(summary.split()))
    return 0


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
    except FloeError as err:
        print(f"floe {args.command}: {err}", file=sys.stderr)
    except config.ConfigException as err:
        print(f"floe {args.command}: no cluster to talk to: {err}", file=sys.stderr)
    except ApiException as err:
        print(f"floe {args.command}: {api_error_message(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
