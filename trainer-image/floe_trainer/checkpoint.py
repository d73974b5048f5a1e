"""Checkpoints: written to a temporary directory and renamed into place, so a kill never leaves half of one.

Layout: <dir>/step-00000120/{model.pt,state.pt}; the last `keep` are kept. The training loop only pays for
a copy of the state into host memory (`snapshot`); `BackgroundWriter` writes it to disk while training goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable
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


def snapshot(obj):
    """A host-memory copy of every tensor in a (nested) state dict, so training can change the originals.

    GPU tensors go to pinned memory without blocking, then one synchronisation waits for all the copies.
    """
    copied_from_gpu = False

    def copy(value):
        nonlocal copied_from_gpu
        if isinstance(value, torch.Tensor):
            if value.device.type == "cuda":
                copied_from_gpu = True
                host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                return host.copy_(value.detach(), non_blocking=True)
            return value.detach().clone()
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(copy(v) for v in value)
        return value

    out = copy(obj)
    if copied_from_gpu:
        torch.cuda.synchronize()
    return out


class BackgroundWriter:
    """Writes one checkpoint at a time on a thread; a new one waits for the previous write to finish.

    `on_saved(step, path, seconds)` runs on the writer thread once a checkpoint is in place. A failed
    write is raised by the next `submit` or `wait`, on the training thread.
    """

    def __init__(self, root: Path, keep: int, on_saved: Callable[[int, Path, float], None]):
        self.root, self.keep, self.on_saved = root, keep, on_saved
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, step: int, model_state: dict, train_state: dict) -> None:
        try:
            started = time.perf_counter()
            path = save(self.root, step, model_state, train_state, self.keep)
            self.on_saved(step, path, time.perf_counter() - started)
        except BaseException as err:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = err

    def submit(self, step: int, model_state: dict, train_state: dict) -> None:
        """Start writing host-memory state dicts (from `snapshot`) in the background."""
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(step, model_state, train_state),
                                        name=f"checkpoint-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight (if any) is in place."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err
