"""One line for a FineTuneJob's progress, and the small formatters it is made of. Pure functions."""

from __future__ import annotations

import math
from typing import Any

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


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


def ready_message(status: dict) -> str:
    """Why an object is (not) ready: its Ready condition's message or reason."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("message") or condition.get("reason") or ""
    return status.get("message") or ""
