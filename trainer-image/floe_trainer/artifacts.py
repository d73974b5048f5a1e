"""The trained model's directory: weights, tokenizer, metrics.json, a model card, and a content digest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Files that describe the model rather than being it; they are left out of the digest.
_NOT_DIGESTED = {"metrics.json", "README.md"}


def make_readable(root: Path) -> None:
    """save_pretrained writes 0600 files; pods of other users (the deployer) sharing the volume must read them."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def content_digest(root: Path) -> str:
    """sha256 over the sorted (relative path, file sha256) list of the model and tokenizer files."""
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_DIGESTED):
        inner = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{inner.hexdigest()}  {path.relative_to(root).as_posix()}\n".encode())
    return "sha256:" + outer.hexdigest()


def model_card(name: str, base: str, metrics: dict, digest: str, prefix: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (list, dict)))
    return f"""# {name}

A T5 summarization model fine-tuned by floe from `{base}`.

Input: `{prefix}<document>`; output: a summary.

Content digest (model and tokenizer files): `{digest}`

## Metrics (validation split)

| metric | value |
| --- | --- |
{rows}
"""


def save(out_dir: Path, model, tokenizer, metrics: dict, name: str, base: str, prefix: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    digest = content_digest(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "modelDigest": digest}, indent=2))
    (out_dir / "README.md").write_text(model_card(name, base, metrics, digest, prefix))
    make_readable(out_dir)
    return digest
