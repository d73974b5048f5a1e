"""Checkpoints: written to a temporary directory and renamed into place, so a kill never leaves half of one.

Layout: <dir>/step-00000120/{model.pt,state.pt}; the last `keep` are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

_NAME = re.compile(r"^step-(\d{8,})$")
_TMP_PREFIX = ".tmp-"


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest(root: Path) -> Path | None:
    dirs = _step_dirs(root)
    return dirs[-1][1] if dirs else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(root: Path, step: int, model_state: dict, train_state: dict, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    if final.exists():
        return final
    tmp = root / f"{_TMP_PREFIX}{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, obj in (("model.pt", model_state), ("state.pt", train_state)):
        with open(tmp / name, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    os.rename(tmp, final)
    _fsync_dir(root)
    for _, old in _step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path) -> tuple[dict, dict]:
    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    train_state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    return model_state, train_state


def remove_partial(root: Path) -> None:
    """Drop temporary directories that a killed run left behind."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
