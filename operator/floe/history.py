"""A FineTuneJob's training history, from the trainer's JSON-lines log, and its loss curve. Pure functions."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def loss_figure(history: TrainingHistory, title: str) -> Figure:
    """Training and validation loss by optimizer step, ROUGE-L on a second axis when evaluated. A notebook
    shows the returned Figure inline; ``figure.savefig(path)`` writes it to a file."""
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
    # Closed for pyplot, so a notebook shows it once: as the value returned, not again at the cell's end.
    plt.close(figure)
    return figure
