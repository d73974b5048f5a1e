"""kstatus verdicts from the kstatus library itself (sigs.k8s.io/cli-utils `status.Compute`, what Flux, kpt
and cli-utils appliers wait on), through the small Go program in this folder.

The binary is built once into a cache outside the repository, keyed by the program and its pinned modules
(go.mod, go.sum), so a test session after the first reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hack.floe_tools import ToolUnavailable, cache_dir

HERE = Path(__file__).resolve().parent
SOURCES = ("go.mod", "go.sum", "main.go")


def binary() -> Path:
    key = hashlib.sha256(b"".join((HERE / name).read_bytes() for name in SOURCES)).hexdigest()[:12]
    target = cache_dir() / f"kstatus-{key}" / "kstatus"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise ToolUnavailable("kstatus: Go toolchain not found on PATH (needed to build hack/kstatus)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place, so a concurrent session never runs half a binary.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        env = dict(os.environ, CGO_ENABLED="0")
        result = subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", f"{tmp}/kstatus", "."],
            cwd=HERE, env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise ToolUnavailable(f"kstatus: go build failed:\n{result.stderr[-4000:]}")
        os.replace(f"{tmp}/kstatus", target)
    return target


def compute(*objects: dict) -> list[dict[str, str]]:
    """status.Compute's verdict ({"status", "message"}) for each object, in order."""
    result = subprocess.run(
        [str(binary())], input="".join(json.dumps(o) + "\n" for o in objects),
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kstatus failed: {result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines()]
