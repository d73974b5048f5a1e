"""A pretrained model's source (`model.hub` or `model.path`) and its tokenizer alone, without the model code: the
data prefetch (`prefetch.py`) tokenizes with it while the trainer imports the rest."""

from __future__ import annotations

from pathlib import Path

from floe_contract.training import ModelSource


class ModelSourceError(ValueError):
    """The model or tokenizer cannot be loaded; the message names the source."""


def location(source: ModelSource) -> tuple[str, str, dict]:
    """(where, the config field naming it, from_pretrained's arguments) of a hub or path source."""
    if source.hub is not None:
        return source.hub.id, "model.hub.id", {"revision": source.hub.revision}
    if not Path(source.path).is_dir():
        raise ModelSourceError(f"model.path: {source.path} is not a directory")
    return source.path, "model.path", {"local_files_only": True}


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    where, field, kwargs = location(source)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelSourceError(f"{field}: cannot load model/tokenizer from {where}: {err}") from None
