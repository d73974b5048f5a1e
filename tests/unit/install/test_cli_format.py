"""The floe CLI's and floe client's pure parts: argument checks, formatting, log parsing, plotting."""

import json
import re
from datetime import UTC, datetime

import pytest
from floe import client, history, progress
from floe_operator import cli


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("ftj/t5-news", "FineTuneJob", "t5-news"),
        ("finetunejob/a", "FineTuneJob", "a"),
        ("FineTuneJobs/a.b", "FineTuneJob", "a.b"),
        ("finetunejobs.floe.dev/x1", "FineTuneJob", "x1"),
    ],
)
def test_refs_accept_every_kubectl_spelling(text, kind, name):
    ref = cli.parse_ref(text, cli.FINETUNEJOB)
    assert (ref.kind.kind, ref.name) == (kind, name)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("t5-news", "expected ftj/NAME"),
        ("ftj/", "expected ftj/NAME"),
        ("sfd/summarize", "expected ftj/NAME"),
        ("pod/x", "expected ftj/NAME"),
        ("ftj/Bad_Name", "not a valid object name"),
        ("ftj/" + "a" * 254, "not a valid object name"),
    ],
)
def test_bad_refs_are_refused_with_the_reason(text, problem):
    with pytest.raises(cli.UsageError, match=problem):
        cli.parse_ref(text, cli.FINETUNEJOB)


def test_arguments_are_checked_before_any_cluster_access(capsys, tmp_path):
    for argv, message in [
        (["watch", "sfd/x"], "expected ftj/NAME"),
        (["approve", "ftj/x"], "expected sfd/NAME"),
        (["plot", "ftj/x", "-o", str(tmp_path / "loss.txt")], "must end in .png, .svg, .pdf"),
        (["plot", "ftj/x", "-o", str(tmp_path / "missing" / "loss.png")], "does not exist"),
        (["plot", "ftj/x", "-o", str(tmp_path / "l.png"), "--from-file", str(tmp_path / "nope")], "no such file"),
        (["logs", "ftj/x", "--tail", "0"], "must be at least 1"),
        (["status", "--kubeconfig", str(tmp_path / "none"), "--bogus"], "unrecognized arguments"),
    ]:
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-1, "-"), (0, "0s"), (59.6, "1m0s"), (192, "3m12s"), (3725, "1h2m"), (90000, "1d1h")],
)
def test_durations(seconds, text):
    assert progress.format_duration(seconds) == text


def test_progress_line_shows_bar_step_loss_throughput_and_eta():
    status = {
        "phase": "Running",
        "progress": {
            "step": 120,
            "totalSteps": 400,
            "percent": 30.0,
            "loss": 2.31456,
            "samplesPerSecond": 41.25,
            "etaSeconds": 192,
        },
    }
    line = progress.format_progress(status, width=10)
    assert line.split() == [
        "Running",
        "[###.......]",
        "30.0%",
        "step",
        "120/400",
        "loss",
        "2.3146",
        "41.2",
        "samples/s",
        "eta",
        "3m12s",
    ]


def test_progress_line_when_done_and_before_any_step():
    done = progress.format_progress(
        {"phase": "Succeeded", "progress": {"percent": 99.0, "etaSeconds": 3}, "metrics": {"rougeL": 0.2512}}, width=4
    )
    assert "[####]" in done and "100.0%" in done and "eta" not in done and "rougeL 0.251" in done
    assert progress.format_progress({}, width=4).split() == ["Pending", "[....]", "0.0%"]


def test_status_table_rows_and_alignment():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    job = {
        "metadata": {"name": "t5", "namespace": "news", "creationTimestamp": "2026-01-01T11:50:00Z"},
        "status": {
            "phase": "Running",
            "progress": {"percent": 42.0, "loss": 1.5},
            "conditions": [{"type": "Ready", "status": "False", "message": "step 12/30"}],
        },
    }
    project = {"metadata": {"name": "news", "creationTimestamp": "2026-01-01T10:00:00Z"}, "status": {"phase": "Ready"}}
    deployment = {
        "metadata": {"name": "s", "namespace": "news", "creationTimestamp": "2026-01-01T12:00:00Z"},
        "status": {"phase": "Deployed", "functionName": "NEWS.PUBLIC.SUMMARIZE"},
    }
    rows = [
        cli.resource_row(cli.FINETUNEJOB, job, now),
        cli.resource_row(cli.KINDS[0], project, now),
        cli.resource_row(cli.SNOWFLAKEDEPLOYMENT, deployment, now),
    ]
    assert rows[0] == ["ftj", "news", "t5", "Running", "42%", "loss=1.5", "10m0s", "step 12/30"]
    assert rows[1][:4] == ["proj", "-", "news", "Ready"] and rows[1][6] == "2h0m"
    assert rows[2][5] == "NEWS.PUBLIC.SUMMARIZE"
    table = cli.format_table(cli.STATUS_HEADER, rows).splitlines()
    assert table[0].startswith("KIND   NAMESPACE   NAME   PHASE")
    assert len({line.index("PHASE") if i == 0 else None for i, line in enumerate(table)} - {None}) == 1
    assert all(
        line[table[0].index("PHASE") :].split()[0] in {"PHASE", "Running", "Ready", "Deployed"} for line in table
    )


TRAINER_LOG = [
    "loading data",
    json.dumps({"event": "step", "step": 10, "epoch": 1, "loss": 5.0}),
    json.dumps({"event": "step", "step": 20, "epoch": 1, "loss": 4.0}),
    json.dumps({"event": "evaluation", "validationLoss": 4.5, "rougeL": 0.05}),
    "{not json",
    json.dumps({"event": "step", "step": 20, "epoch": 1, "loss": 3.9}),  # resumed: step 20 again
    json.dumps({"event": "step", "step": 30, "epoch": 2, "loss": float("nan")}),
    json.dumps({"event": "step", "step": 40, "epoch": 2, "loss": 3.0}),
    json.dumps({"event": "evaluation", "step": 40, "validationLoss": 3.5, "rougeL": 0.1}),
]


def test_training_log_parsing_keeps_the_last_value_per_step_and_skips_noise():
    parsed = history.parse_training_log(TRAINER_LOG)
    assert parsed.steps == [10, 20, 40]
    assert parsed.losses == [5.0, 3.9, 3.0]
    assert parsed.eval_steps == [20, 40]
    assert parsed.validation_losses == [4.5, 3.5]
    assert parsed.rouge_l == [0.05, 0.1]


def test_plot_from_a_saved_log_writes_an_image(tmp_path, capsys):
    log = tmp_path / "t5.log"
    log.write_text("\n".join(TRAINER_LOG))
    out = tmp_path / "loss.png"
    assert cli.main(["plot", "ftj/t5", "--from-file", str(log), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_of_a_log_without_steps_fails_clearly(tmp_path, capsys):
    log = tmp_path / "empty.log"
    log.write_text("nothing here\n")
    assert cli.main(["plot", "ftj/t5", "--from-file", str(log), "-o", str(tmp_path / "x.svg")]) == 1
    assert "no training steps" in capsys.readouterr().err


DIGEST = "sha256:" + "a" * 64


def test_approval_patch_names_the_approver_the_model_and_the_function():
    assert client.approval_patch("alice", DIGEST, "NEWS.PUBLIC.SUMMARIZE") == {"spec": {"approval": {
        "approved": True, "approvedBy": "alice", "modelDigest": DIGEST, "target": "NEWS.PUBLIC.SUMMARIZE"}}}
    assert client.approval_patch("bob", DIGEST, "A.B.C", "ROUGE fine")["spec"]["approval"]["comment"] == "ROUGE fine"


def test_the_approved_model_is_the_finished_jobs_or_the_one_named():
    sfd = {"spec": {"source": {"fineTuneJobRef": {"name": "t5"}},
                    "snowflake": {"database": "NEWS", "schema": "PUBLIC", "functionName": "SUMMARIZE"}}}
    done = {"status": {"phase": "Succeeded", "modelDigest": DIGEST}}
    assert client.model_to_approve(sfd, done, None) == DIGEST
    assert client.model_to_approve(sfd, None, "sha256:" + "b" * 64) == "sha256:" + "b" * 64
    with pytest.raises(client.FloeError, match="no trained model yet"):
        client.model_to_approve(sfd, {"status": {"phase": "Running"}}, None)
    with pytest.raises(client.FloeError, match="--digest"):
        client.model_to_approve({"spec": {"source": {"modelUri": "pvc://m/x"}}}, None, None)


def test_predict_rows_come_from_each_text_then_the_file(tmp_path):
    lines = tmp_path / "rows.txt"
    lines.write_text("first article\n\n  second article\n")
    assert cli.read_rows(["given"], lines, "text") == ["given", "first article", "  second article"]
    table = tmp_path / "rows.csv"
    table.write_text('id,body\n1,"one, with a comma"\n2,\n3,three\n')
    assert cli.read_rows([], table, "body") == ["one, with a comma", "three"]


@pytest.mark.parametrize(
    ("texts", "file", "words"),
    [
        ([], None, "nothing to predict: give --text or a --file"),
        (["ok", " "], None, "--text: row(s) [2] are blank"),
        ([], "missing.txt", "no such file"),
        ([], "rows.csv", "no column 'text'"),
        (["x" * 60_000, "y" * 60_000], None, "one call takes at most 100000: split them"),
    ],
)
def test_predict_rows_are_refused_before_anything_is_called(tmp_path, texts, file, words):
    (tmp_path / "rows.csv").write_text("body\nan article\n")
    with pytest.raises(cli.UsageError, match=re.escape(words)):
        cli.read_rows(texts, tmp_path / file if file else None, "text")


def test_the_predict_outcome_is_the_last_json_line_with_an_outcome():
    log = ['{"event": "connecting", "mode": "local"}', "a warning", '{"outcome": "Predicted", "rows": []}', ""]
    assert client.predict_outcome(log) == {"outcome": "Predicted", "rows": []}
    assert client.predict_outcome(["Traceback", '{"event": "x"}']) is None


def test_the_loss_figure_is_returned_for_a_notebook_to_show():
    from matplotlib.figure import Figure

    figure = history.loss_figure(history.parse_training_log(TRAINER_LOG), "news/t5")
    assert isinstance(figure, Figure)
    loss_axis = figure.axes[0]
    assert loss_axis.get_title() == "news/t5" and len(figure.axes) == 2  # ROUGE-L on its own axis
    assert list(loss_axis.lines[0].get_xdata()) == [10, 20, 40]


def test_import_floe_loads_neither_kopf_nor_the_kubernetes_client():
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, floe; print(sorted(m for m in ('kopf', 'kubernetes', 'matplotlib')"
         " if m in sys.modules))"], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

