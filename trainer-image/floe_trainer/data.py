"""Training data: read a table (file, URI or Snowflake), map columns, clean, split.

Everything here is pandas-level; tokenization happens in batching.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from floe_contract.training import Dataset, FileDataset, SnowflakeDataset

if TYPE_CHECKING:
    from snowflake.snowpark import Session

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".xz", ".zip")
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl"}


class DataError(ValueError):
    """The data cannot be used for training; the message says what and where."""


@dataclass(frozen=True)
class Pairs:
    """Documents and their summaries, index-aligned."""

    documents: list[str]
    summaries: list[str]

    def __len__(self) -> int:
        return len(self.documents)

    def subset(self, indices) -> Pairs:
        return Pairs([self.documents[i] for i in indices], [self.summaries[i] for i in indices])


@dataclass(frozen=True)
class PreparedData:
    train: Pairs
    validation: Pairs
    rows_read: int
    rows_dropped: int


def file_format(location: str) -> str:
    name = location.split("?", 1)[0].lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    for suffix, fmt in _FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise DataError(f"dataset.file: cannot tell the format of {location!r}; use a .csv, .parquet or .jsonl name")


def read_file(source: FileDataset) -> pd.DataFrame:
    location = source.local_path or source.uri
    field = "dataset.file.path" if source.path else "dataset.file.uri"
    fmt = file_format(location)
    try:
        if fmt == "csv":
            return pd.read_csv(location, encoding="utf-8", encoding_errors="strict")
        if fmt == "parquet":
            return pd.read_parquet(location)
        return pd.read_json(location, lines=True, encoding="utf-8", encoding_errors="strict")
    except FileNotFoundError:
        raise DataError(f"{field}: {location} does not exist") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{field}: {location} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ImportError as err:
        raise DataError(f"{field}: cannot open {location}: {err}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{field}: {location} is empty") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{field}: cannot read {location} as {fmt}: {err}") from None


def read_snowflake(session: Session, source: SnowflakeDataset) -> pd.DataFrame:
    """The table, or the query's rows. A query runs only as a subquery, so Snowflake itself refuses
    anything but one SELECT or WITH query (DML, DDL, several statements): the job's role may write."""
    from snowflake.snowpark.exceptions import SnowparkSQLException

    if source.table:
        field, frame = "dataset.snowflake.table", session.table(source.table)
    else:
        field = "dataset.snowflake.query"
        if ";" in source.query:
            raise DataError(f"{field}: must be a single SELECT or WITH query without ';' (not even in a literal)")
        # the newlines keep a trailing -- comment from swallowing the closing parenthesis
        frame = session.sql(f"SELECT * FROM (\n{source.query}\n)")
    try:
        return frame.to_pandas()
    except SnowparkSQLException as error:
        raise DataError(f"{field}: Snowflake refused it: {error.message}") from None


def resolve_column(frame: pd.DataFrame, wanted: str, field: str) -> str:
    """The frame's column for `wanted`: exact, else the one case-insensitive match (Snowflake upper-cases)."""
    if wanted in frame.columns:
        return wanted
    matches = [c for c in frame.columns if str(c).lower() == wanted.lower()]
    if len(matches) == 1:
        return matches[0]
    raise DataError(f"{field}: column {wanted!r} not found; the data has columns {[str(c) for c in frame.columns]}")


def _as_text(value: object, column: str, row: int) -> str | None:
    """Whitespace-normalised text, None for missing/blank; bytes must be UTF-8."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"column {column!r}, row {row}: bytes that are not UTF-8 text") from None
    if not isinstance(value, str):
        raise DataError(f"column {column!r}, row {row}: expected text, found {type(value).__name__} {value!r}")
    text = " ".join(value.split())
    return text or None


def to_pairs(frame: pd.DataFrame, spec: Dataset) -> tuple[Pairs, int]:
    """Map the configured columns to (document, summary) pairs; rows with a missing value are dropped."""
    text_col = resolve_column(frame, spec.text_column, "dataset.textColumn")
    summary_col = resolve_column(frame, spec.summary_column, "dataset.summaryColumn")
    documents, summaries, dropped = [], [], 0
    for row, (doc, summ) in enumerate(zip(frame[text_col].tolist(), frame[summary_col].tolist(), strict=True)):
        doc, summ = _as_text(doc, text_col, row), _as_text(summ, summary_col, row)
        if doc is None or summ is None:
            dropped += 1
            continue
        documents.append(doc)
        summaries.append(summ)
    return Pairs(documents, summaries), dropped


def split(pairs: Pairs, validation_fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """A seeded shuffle split; at least one row on each side."""
    if len(pairs) < 2:
        raise DataError(f"dataset: {len(pairs)} usable row(s); at least 2 are needed (train + validation)")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(max(1, round(len(pairs) * validation_fraction)), len(pairs) - 1)
    return pairs.subset(order[n_val:].tolist()), pairs.subset(order[:n_val].tolist())


def prepare(frame: pd.DataFrame, spec: Dataset) -> PreparedData:
    if frame.empty:
        raise DataError("dataset: the data has no rows")
    pairs, dropped = to_pairs(frame, spec)
    if len(pairs) == 0:
        raise DataError(f"dataset: all {len(frame)} rows lack a {spec.text_column!r} or {spec.summary_column!r} value")
    if spec.max_rows is not None:
        pairs = pairs.subset(range(min(spec.max_rows, len(pairs))))
    train, validation = split(pairs, spec.validation_fraction, spec.seed)
    return PreparedData(train, validation, rows_read=len(frame), rows_dropped=dropped)


def load(spec: Dataset, session: Session | None = None) -> PreparedData:
    """Read and prepare the configured data; `session` is needed for a Snowflake source."""
    if spec.file is not None:
        frame = read_file(spec.file)
    else:
        if session is None:
            raise DataError("dataset.snowflake: no Snowflake session")
        frame = read_snowflake(session, spec.snowflake)
    return prepare(frame, spec)
