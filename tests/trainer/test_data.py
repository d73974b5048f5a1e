"""Each data source on the committed news sample; Snowflake through Snowpark's local testing emulator."""

import json

import pandas as pd
import pytest
from floe_trainer import data
from floe_trainer.config import parse_config
from snowflake.snowpark import Session

from .conftest import NEWS_CSV


def dataset_spec(**dataset):
    return parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}}, "dataset": dataset}).dataset


@pytest.fixture(scope="module")
def news():
    return pd.read_csv(NEWS_CSV)


def check_news(prepared: data.PreparedData):
    # 400 rows, 5 without an article; 10% validation
    assert (prepared.rows_read, prepared.rows_dropped) == (400, 5)
    assert (len(prepared.train), len(prepared.validation)) == (355, 40)
    assert all(prepared.train.documents) and all(prepared.train.summaries)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl", "csv.gz"])
def test_file_sources(tmp_path, news, suffix):
    path = tmp_path / f"news.{suffix}"
    if suffix.startswith("csv"):
        news.to_csv(path, index=False)
    elif suffix == "parquet":
        news.to_parquet(path)
    else:
        news.to_json(path, orient="records", lines=True)
    check_news(data.load(dataset_spec(file={"path": str(path)})))


def test_uri_source_through_fsspec(news):
    import fsspec

    with fsspec.open("memory://bucket/news.parquet", "wb") as f:
        news.to_parquet(f)
    check_news(data.load(dataset_spec(file={"uri": "memory://bucket/news.parquet"})))


@pytest.fixture(scope="module")
def snowflake_session(news):
    session = Session.builder.configs({"local_testing": True, "disable_local_testing_telemetry": True}).create()
    session.create_dataframe(news[["ctext", "text"]]).write.save_as_table("NEWS")
    yield session
    session.close()


def test_snowflake_table(snowflake_session):
    # Snowflake upper-cases unquoted names: the configured lower-case columns still resolve
    check_news(data.load(dataset_spec(snowflake={"table": "NEWS"}), snowflake_session))


def test_split_is_seeded():
    a = data.load(dataset_spec(file={"path": str(NEWS_CSV)}, seed=1))
    b = data.load(dataset_spec(file={"path": str(NEWS_CSV)}, seed=1))
    c = data.load(dataset_spec(file={"path": str(NEWS_CSV)}, seed=2))
    assert a.validation == b.validation and a.validation != c.validation


def test_column_mapping_and_max_rows(tmp_path, news):
    path = tmp_path / "renamed.csv"
    news.rename(columns={"ctext": "article", "text": "summary"}).to_csv(path, index=False)
    prepared = data.load(dataset_spec(file={"path": str(path)}, textColumn="article", summaryColumn="summary",
                                      maxRows=100))
    assert len(prepared.train) + len(prepared.validation) == 100


def test_missing_column_is_named(tmp_path):
    with pytest.raises(data.DataError, match=r"dataset.textColumn: column 'article' not found.*ctext"):
        data.load(dataset_spec(file={"path": str(NEWS_CSV)}, textColumn="article"))


def test_empty_data(tmp_path):
    (tmp_path / "empty.csv").write_text("ctext,text\n")
    with pytest.raises(data.DataError, match="no rows"):
        data.load(dataset_spec(file={"path": str(tmp_path / "empty.csv")}))
    (tmp_path / "blank.csv").write_text("ctext,text\n , \n,x\n")
    with pytest.raises(data.DataError, match="all 2 rows lack"):
        data.load(dataset_spec(file={"path": str(tmp_path / "blank.csv")}))
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(data.DataError, match="is empty"):
        data.load(dataset_spec(file={"path": str(tmp_path / "zero.csv")}))


def test_undecodable_text(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("ctext,text\ncaf\xe9 au lait,drink\n".encode("latin-1"))
    with pytest.raises(data.DataError, match="not UTF-8"):
        data.load(dataset_spec(file={"path": str(tmp_path / "latin1.csv")}))
    frame = pd.DataFrame({"ctext": [b"\xff\xfe bad", b"good"], "text": ["a", "b"]})
    with pytest.raises(data.DataError, match="row 0: bytes that are not UTF-8"):
        data.prepare(frame, dataset_spec(file={"path": "x.parquet"}))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(data.DataError, match="dataset.file.path: .* does not exist"):
        data.load(dataset_spec(file={"path": str(tmp_path / "nope.csv")}))
    with pytest.raises(data.DataError, match="cannot tell the format"):
        data.load(dataset_spec(file={"path": str(tmp_path / "news.xlsx")}))


def test_non_text_values_are_refused(tmp_path):
    (tmp_path / "n.jsonl").write_text(json.dumps({"ctext": 12, "text": "a"}) + "\n")
    with pytest.raises(data.DataError, match="expected text, found int"):
        data.load(dataset_spec(file={"path": str(tmp_path / "n.jsonl")}))
