#!/usr/bin/env python3
"""The whole FineTuneJob, not only its step loop: `floe-train` end to end, wall time split by phase.

  job_bench.py render --shape t5-small --out-dir DIR      # the trainer config as the operator renders it
  job_bench.py run --config DIR/t5-small.json --label after --out results/job_h200.jsonl
  job_bench.py report results/job_h200.jsonl --out results/job.md

`render` needs the operator package (floe_operator) and builds the trainer's job.json (which the operator puts in
the Job's pod annotation) with the operator's own `trainer_config` from a FineTuneJob spec that sets only the model
and the data file, so every other setting is the FineTuneJob default. The model is a directory on a volume
(`model.path`; `run` makes a stand-in of the T5 shape, random weights and a tokenizer, before the timed job) or,
with `--source scratch`, a T5 shape that the job starts from random weights after training its own tokenizer. `run`
points the config's model, data, checkpoint and output paths into a work directory (and turns the metrics port
off), writes the data set -- the bundled news sample repeated to about `--rows` rows -- and runs the trainer's CLI
(`python -m floe_trainer.train`, what `floe-train` runs) from `--trainer-dir` in a fresh process with a cold
compile cache, as a new pod has. It appends one JSON line per run:
  job_samples_per_s   samples trained / wall time of the whole process (interpreter start to exit)
  loop_samples_per_s  samples trained in steps that compiled nothing / time spent in those steps
  seconds             startup, tokenize, compile, train, evaluate, checkpoint, export
  prefetch_seconds    fork, read, tokenizer, tokenize: the data prefetch's own steps, beside the start-up (where
                      it ran); send, exit: from their end to the data in the trainer, and the prefetch's exit;
                      asked: from the fork until the trainer, done with its start-up, asked for the data
The trainer reports the phases itself (its `phases` JSON line); `startup` here also holds the interpreter's
start and imports, the part of the wall time before the trainer's clock starts. A trainer from before the
`phases` line (`--trainer-dir` of an older checkout) is split from the arrival times of its JSON lines
instead (`phase_source` says which), with tokenizing counted in `startup`.

`run --peer-batch N` runs the peer on the same job instead: Hugging Face's Seq2SeqTrainer (`hf_peer.py --job`)
with the config's rows, split, epochs, optimiser settings and evaluation (beams, new-token limit, every
validation row), at batch N (floe-train probes its batch; the peer has no probe, so give it floe's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEWS_CSV = REPO / "tests" / "data" / "news_summary.csv"
PHASES = ("startup", "tokenize", "compile", "train", "evaluate", "checkpoint", "export")
MODELS_DIR = "/models"  # where a rendered `path` config says the starting model is; `run` points it at its own


# --- render ------------------------------------------------------------------------------------------------

def render(args) -> None:
    sys.path.insert(0, str(Path(args.operator_dir).resolve()))
    from floe_operator.api.finetunejob import FineTuneJobSpec
    from floe_operator.builders.finetunejob import TrainerTarget, trainer_config

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for shape in args.shape:
        model = {"path": f"{MODELS_DIR}/{shape}"} if args.source == "path" else {
            "scratch": {"shape": shape, "vocabSize": args.vocab}}
        spec = {"model": model, "dataset": {"file": {"claimName": "data", "path": "news.csv"}}}
        if args.batch_size:
            spec["training"] = {"batchSize": args.batch_size}
        target = TrainerTarget(namespace="bench", name=f"bench-{shape}", uid="00000000-0000-0000-0000-000000000000",
                               image="floe-trainer")
        config = trainer_config(target, FineTuneJobSpec.model_validate(spec))
        path = out_dir / f"{shape}{f'-b{args.batch_size}' if args.batch_size else ''}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        print(path)


# --- run ---------------------------------------------------------------------------------------------------

def write_dataset(path: Path, rows: int) -> dict:
    """The bundled sample repeated until it has at least `rows` rows (the trainer drops rows with blanks)."""
    import pandas as pd

    frame = pd.read_csv(NEWS_CSV, encoding="utf-8")
    repeat = math.ceil(rows / len(frame))
    pd.concat([frame] * repeat, ignore_index=True).to_csv(path, index=False)
    return {"source": "tests/data/news_summary.csv", "sample_rows": len(frame), "repeat": repeat,
            "rows": len(frame) * repeat}


def run_trainer(config_path: Path, trainer_dir: Path, workdir: Path, peer: list[str] | None = None,
                ) -> tuple[list[tuple[float, dict]], float, int, str]:
    """Events with their arrival time (seconds since the process started), wall time, exit code, stderr tail.
    `peer`: run hf_peer.py's whole job with these arguments instead of floe-train."""
    cache = workdir / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(trainer_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"), "TRITON_CACHE_DIR": str(cache / "triton"),
           "FLOE_TERMINATION_LOG": str(workdir / "termination-log")}
    for key in ("FLOE_JOB_NAMESPACE", "FLOE_JOB_NAME"):  # no FineTuneJob to patch
        env.pop(key, None)
    started = time.perf_counter()
    stderr = open(workdir / "stderr.log", "w")  # noqa: SIM115 - the child writes it
    command = ([sys.executable, str(REPO / "bench" / "hf_peer.py"), "--job", str(config_path),
                "--workdir", str(workdir / "peer"), *peer] if peer else
               [sys.executable, "-m", "floe_trainer.train", "--config", str(config_path)])
    proc = subprocess.Popen(command, env=env,
                            cwd=workdir, stdout=subprocess.PIPE, stderr=stderr, text=True)
    events = []
    for line in proc.stdout:
        if line.startswith("{"):
            try:
                events.append((time.perf_counter() - started, json.loads(line)))
            except json.JSONDecodeError:
                pass
    code = proc.wait()
    wall = time.perf_counter() - started
    stderr.close()
    return events, wall, code, (workdir / "stderr.log").read_text()[-3000:]


def phases_from_trainer(events: list[tuple[float, dict]], wall: float) -> tuple[dict, float | None]:
    phases = next(e for _, e in events if e["event"] == "phases")
    seconds = dict(phases["seconds"])
    # The trainer's clock starts inside train(): the interpreter's start and imports are start-up too.
    seconds["startup"] += wall - sum(seconds.values())
    return seconds, phases.get("loopSamplesPerSecond")


def phases_from_arrival(events: list[tuple[float, dict]], wall: float, step_batch: int) -> tuple[dict, float | None]:
    """Estimate the split of a trainer that does not report it, from when its JSON lines arrived.

    It logs a step line right before each epoch's evaluation and checkpoint, so the time from the line before
    an `evaluation`/`checkpoint` line to it is that evaluation/checkpoint (a mid-epoch checkpoint's share also
    holds the steps since the last step line). Its step lines carry the throughput of the steps since the
    previous one: the loop's rate is their median, and the first window's excess over that rate is compilation.
    """
    seconds = dict.fromkeys(PHASES, 0.0)
    seconds["tokenize"] = None
    previous = 0.0
    for at, event in events:
        kind = event["event"]
        if kind == "start":
            seconds["startup"] = at
        elif kind == "evaluation":
            seconds["evaluate"] += at - previous
        elif kind == "checkpoint":
            seconds["checkpoint"] += at - previous
        elif kind == "done":
            seconds["export"] = at - previous
        previous = at
    seconds["export"] += wall - previous
    steps = [e for _, e in events if e["event"] == "step"]
    loop_rate = statistics.median(e["samplesPerSecond"] for e in steps[1:]) if len(steps) > 2 else None
    if loop_rate and steps[0]["samplesPerSecond"] > 0:
        first_window = steps[0]["step"] * step_batch
        seconds["compile"] = max(0.0, first_window / steps[0]["samplesPerSecond"] - first_window / loop_rate)
    seconds["train"] = wall - sum(v for k, v in seconds.items() if k != "train" and v is not None)
    return seconds, loop_rate


def device_info() -> dict:
    try:
        import torch
        import transformers
    except ImportError:
        return {}
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "gpus": 1 if cuda else 0, "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_bytecode": has_bytecode(torch)}


def has_bytecode(module) -> bool:
    """Whether the package was installed with its bytecode, as pip and conda install it in the trainer image.
    Without it (an environment installed with bytecode compiling off) every process start compiles torch's
    sources again: about 9 s of start-up on the H200 host, which a pod of the image does not pay."""
    return Path(importlib.util.cache_from_source(module.__file__)).exists()


def starting_model(shape: str, models: Path) -> Path:
    """A stand-in for a pretrained model on a volume (`model.path`): random weights of the T5 shape and a
    SentencePiece tokenizer trained on the news sample. Made once per work directory, outside the timed job."""
    out = models / shape
    if (out / "config.json").exists():
        return out
    sys.path.insert(0, str(REPO / "trainer-image"))
    from floe_trainer import data
    from floe_trainer.config import ScratchShape, parse_config
    from floe_trainer.modeling import scratch_model, train_tokenizer
    from floe_trainer.trainer import PREFIX

    spec = parse_config({"version": "v1", "model": {"scratch": {"shape": shape}},
                         "dataset": {"file": {"path": str(NEWS_CSV)}}})
    pairs = data.load(spec.dataset).train
    tokenizer = train_tokenizer([PREFIX + d for d in pairs.documents] + pairs.summaries, 32000, out / "tokenizer")
    scratch_model(ScratchShape(shape), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(args) -> None:
    config = json.loads(Path(args.config).read_text())
    source = config["model"]
    shape = source["scratch"]["shape"] if "scratch" in source else Path(source.get("path", "hub")).name
    workdir = Path(args.workdir) / f"{args.label}-{Path(args.config).stem}-{int(time.time())}"
    workdir.mkdir(parents=True)
    if "path" in source:
        config["model"] = {"path": str(starting_model(shape, Path(args.workdir) / "models"))}
    dataset = write_dataset(workdir / "news.csv", args.rows)
    config["dataset"]["file"] = {"path": str(workdir / "news.csv")}
    config["checkpoint"]["dir"] = str(workdir / "checkpoints")
    config["output"]["dir"] = str(workdir / "model")
    config["metricsPort"] = 0
    config_path = workdir / "job.json"
    config_path.write_text(json.dumps(config, indent=2))

    peer = None if args.peer_batch is None else ["--batch", str(args.peer_batch), "--eval-batch",
                                                  str(args.peer_eval_batch or 4 * args.peer_batch)]
    events, wall, code, stderr = run_trainer(config_path, Path(args.trainer_dir).resolve(), workdir, peer)
    by_kind = {e["event"]: e for _, e in events}  # the last of each kind
    row = {"label": args.label, "shape": shape, "model_source": next(iter(source)), **device_info(),
           "dataset": dataset,
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "config": {k: config[k] for k in ("training", "evaluation", "checkpoint")}, "exit_code": code,
           "wall_s": round(wall, 2)}
    if code != 0 or "done" not in by_kind:
        row["error"] = stderr
    else:
        start, done = by_kind["start"], by_kind["done"]
        samples = done["steps"] * start["stepBatchSize"]
        if "phases" in by_kind:
            seconds, loop_rate = phases_from_trainer(events, wall)
            row["phase_source"] = "trainer"
        else:
            seconds, loop_rate = phases_from_arrival(events, wall, start["stepBatchSize"])
            row["phase_source"] = "stdout arrival times (estimated)"
        job_rate = samples / wall
        row.update({
            "train_rows": start["trainRows"], "validation_rows": start["validationRows"], "steps": done["steps"],
            "step_batch": start["stepBatchSize"], "samples": samples,
            "job_samples_per_s": round(job_rate, 2),
            "loop_samples_per_s": None if loop_rate is None else round(loop_rate, 2),
            "job_over_loop": None if not loop_rate else round(job_rate / loop_rate, 3),
            "seconds": {k: None if v is None else round(v, 2) for k, v in seconds.items()},
            "evaluations": sum(1 for _, e in events if e["event"] == "evaluation"),
            "checkpoints": sum(1 for _, e in events if e["event"] == "checkpoint"),
            "final": {k: done.get(k) for k in ("validationLoss", "initialValidationLoss", "rouge1", "rouge2", "rougeL",
                                               "rougeSamples")},
        })
        if "prefetched" in by_kind:  # the data read and tokenized beside the start-up: its own steps
            row["prefetch_seconds"] = by_kind["prefetched"]["seconds"]
        if done.get("rougeL") is not None and done.get("rougeSamples") is None:  # a trainer that does not say
            row["final"]["rougeSamples"] = min(config["evaluation"]["maxSamples"], start["validationRows"])
    print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


# --- report ------------------------------------------------------------------------------------------------

def fmt(value, spec: str = ",.1f") -> str:
    return "" if value is None else format(value, spec)


def report(args) -> None:
    described = dict(d.split("=", 1) for d in args.describe)
    command = shlex.join(["bench/job_bench.py", *sys.argv[1:]])
    lines = ["# Whole-job benchmark: `floe-train` end to end, wall time by phase", "",
             f"Generated by `{command}`; do not edit by hand. How the runs were made: `bench/job_bench.py`'s "
             "docstring and bench/README.md.", ""]
    for path in args.results:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if not rows:
            continue
        first = rows[0]
        data = first.get("dataset", {})
        lines += [f"## `{Path(path).name}`", ""]
        if Path(path).name in described:
            lines += [described[Path(path).name], ""]
        bytecode = {True: ", torch's bytecode installed (as in the image)",
                    False: ", torch without its bytecode (each start compiles its sources)"}.get(
            first.get("torch_bytecode"), "")
        lines += [f"{first.get('device', '?')}, {first.get('gpus', '?')} GPU, torch {first.get('torch', '?')}, "
                  f"transformers {first.get('transformers', '?')}{bytecode}. Data: `{data.get('source')}` "
                  f"({data.get('sample_rows')} rows) repeated {data.get('repeat')}x = {data.get('rows')} rows; "
                  "the repeats of a row can land in both the training and the validation split, so the loss and "
                  "ROUGE here measure nothing about quality, only cost.", "",
                  "| run | shape | model | batch | steps | wall s | job samples/s | loop samples/s | job/loop | "
                  + " | ".join(PHASES) + " | evaluations | checkpoints | final ROUGE-L (rows) |",
                  "| --- " * (12 + len(PHASES)) + "|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['label']} | {r['shape']} | {r.get('model_source', 'scratch')} | | | "
                             f"{fmt(r['wall_s'])} | failed: exit {r['exit_code']} |" + " |" * (6 + len(PHASES)))
                continue
            s = r["seconds"]
            phase_cells = " | ".join(
                "" if s[p] is None else f"{s[p]:,.1f} ({s[p] / r['wall_s']:.0%})" for p in PHASES)
            final = r["final"]
            rouge = "" if final.get("rougeL") is None else f"{final['rougeL']} ({final.get('rougeSamples', '?')})"
            estimated = "" if r.get("phase_source") == "trainer" else " *"
            lines.append(
                f"| {r['label']}{estimated} | {r['shape']} | {r.get('model_source', 'scratch')} | {r['step_batch']} | "
                f"{r['steps']} | {fmt(r['wall_s'])} | "
                f"{fmt(r['job_samples_per_s'])} | {fmt(r['loop_samples_per_s'])} | "
                f"{fmt(r['job_over_loop'], '.0%')} | {phase_cells} | {r['evaluations']} | {r['checkpoints']} | "
                f"{rouge} |")
        lines += ["", "Phase cells: seconds (share of the wall time). `*`: a trainer without its own phase report, "
                  "split from the arrival times of its JSON lines (tokenizing counted in start-up). ROUGE rows: "
                  "the validation rows the final ROUGE was computed on.", "",
                  "Commands (each config written before by `job_bench.py render --shape <shape> --out-dir <dir>`, "
                  "the operator's `trainer_config` of the run's checkout; the `before` trainer from an older one):",
                  "```"]
        lines += sorted({r["command"] for r in rows})
        lines += ["```", ""]
    Path(args.out).write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write the trainer config the operator renders for a default FineTuneJob")
    r.add_argument("--shape", action="append", required=True, choices=["tiny", "t5-small", "t5-base"])
    r.add_argument("--source", choices=["path", "scratch"], default="path",
                   help="path: start from a model on a volume (run makes a stand-in); scratch: the job trains a "
                   "tokenizer and starts from random weights")
    r.add_argument("--vocab", type=int, default=32000, help="scratch vocabulary (capped by what the corpus supports)")
    r.add_argument("--batch-size", type=int, help="spec.training.batchSize (default: the FineTuneJob default)")
    r.add_argument("--operator-dir", default=str(REPO / "operator"),
                   help="the directory holding the floe_operator package that renders the config")
    r.add_argument("--out-dir", required=True)
    r.set_defaults(func=render)
    u = sub.add_parser("run", help="run floe-train with a rendered config; append one result line")
    u.add_argument("--config", required=True)
    u.add_argument("--label", required=True, help="names the run in the results, e.g. before or after")
    u.add_argument("--trainer-dir", default=str(REPO / "trainer-image"),
                   help="the directory holding the floe_trainer package to run")
    u.add_argument("--rows", type=int, default=4000)
    u.add_argument("--peer-batch", type=int,
                   help="run the peer instead (hf_peer.py --job: Seq2SeqTrainer, the same job) at this batch, e.g. "
                   "the batch floe-train's probe chose")
    u.add_argument("--peer-eval-batch", type=int, help="the peer's validation rows per generation (default 4x)")
    u.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "floe-job-bench"),
                   help="data, checkpoints, model and logs of each run, and the stand-in starting models")
    u.add_argument("--out", required=True)
    u.set_defaults(func=run)
    p = sub.add_parser("report", help="write the markdown report from result files")
    p.add_argument("results", nargs="+")
    p.add_argument("--describe", action="append", default=[], metavar="FILE=TEXT",
                   help="a sentence on what ran in a results file (e.g. which trainer revision), shown above its table")
    p.add_argument("--out", required=True)
    p.set_defaults(func=report)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
