"""The account path through the real snowflake-connector-python and Snowpark, against fakesnow's server:
a connection from a mounted Secret, the stage, PUT, CREATE/SHOW/DROP FUNCTION with the digest and owner
in the COMMENT, and training data read from a table or a query. fakesnow_account.py says what the server
cannot do and how that is filled in."""

import json
from pathlib import Path

import fakesnow.server
import fakesnow.transforms.stage as fakesnow_stage
import pandas as pd
import pytest
from floe_trainer import data
from floe_trainer.config import parse_config
from floe_trainer.deploy import (
    DeployError,
    UnresolvablePackageError,
    deploy,
    deployment_digest,
    drop,
    pinned_packages,
)
from floe_trainer.identifiers import FloeComment, FunctionName
from floe_trainer.snowflake_session import AccountTarget, open_session, open_target, read_connection_dir

from .conftest import DATA
from .fakesnow_account import STAND_IN, StandInCalls, server
from .test_emulator import config

ALICE = "team-a/summarize/7f1c2a9e-0d7b-4c55-9f3e-1a2b3c4d5e6f"
MALLORY = "team-b/summarize/0b9d8c7e-6f5a-4b3c-8d2e-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with server(tmp_path_factory.mktemp("bucket")) as address:
        yield address


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory, endpoint):
    """The connection Secret as the pod mounts it: one file per key."""
    directory = tmp_path_factory.mktemp("snowflake-secret")
    for key, value in {
        "account": "acme-x1",
        "user": "deployer",
        "password": "pw-not-checked-by-the-test-server",
        "role": "DEPLOYER",
        "warehouse": "ML",
        "database": "ANALYTICS",
        "schema": "PUBLIC",
        "host": endpoint["host"],
        "port": str(endpoint["port"]),
        "protocol": endpoint["protocol"],
    }.items():
        (directory / key).write_text(value + "\n")
    return directory


@pytest.fixture(scope="module")
def admin(secret_dir):
    """Another session, as the account's administrator: the database, schema and a table of news."""
    session = open_session(read_connection_dir(secret_dir, None))
    session.sql('CREATE DATABASE IF NOT EXISTS "ANALYTICS"').collect()
    session.sql('CREATE SCHEMA IF NOT EXISTS "ANALYTICS"."PUBLIC"').collect()
    news = pd.read_csv(DATA)[["ctext", "text"]]
    session.sql('CREATE TABLE "ANALYTICS"."PUBLIC".NEWS (CTEXT VARCHAR, TEXT VARCHAR)').collect()
    session.connection.cursor().executemany(
        'INSERT INTO "ANALYTICS"."PUBLIC".NEWS VALUES (?, ?)',
        [tuple(None if pd.isna(v) else v for v in row) for row in news.itertuples(index=False)],
    )
    yield session
    session.close()


@pytest.fixture
def target(secret_dir, admin):
    target = open_target(read_connection_dir(secret_dir, None))
    assert type(target) is AccountTarget
    stand_in = StandInCalls(target.session)
    yield stand_in
    stand_in.close()


def functions(admin) -> dict[str, str]:
    """What SHOW lists in the schema: arguments -> comment."""
    rows = admin.sql('SHOW USER FUNCTIONS IN SCHEMA "ANALYTICS"."PUBLIC"').collect()
    return {row["arguments"]: row["description"] for row in rows}


def test_a_closed_session_is_logged_out(secret_dir):
    """A connection still open at interpreter exit is closed again by Snowpark, against whatever the server
    is by then: the test process would wait on it for an hour."""
    session = open_session(read_connection_dir(secret_dir, None))
    token = session.connection.rest.token
    session.close()
    assert session.connection.is_closed()
    assert token not in fakesnow.server.sessions


def test_the_secret_connects_to_its_database_and_schema(target):
    row = target.session.sql("SELECT CURRENT_DATABASE() AS D, CURRENT_SCHEMA() AS S").collect()[0]
    assert (row["D"], row["S"]) == ("ANALYTICS", "PUBLIC")


def test_the_stage_is_created_once_with_quoted_names(target, admin):
    for _ in range(2):
        target.ensure_stage("analytics", "public", "models")
        target.ensure_stage("analytics", "public", "select")  # a reserved word, safe when quoted
    stages = [row["name"] for row in admin.sql('SHOW STAGES IN SCHEMA "ANALYTICS"."PUBLIC"').collect()]
    assert sorted(stages) == ["MODELS", "SELECT"]


def test_deploy_redeploy_rename_and_drop(target, admin, model_dir):
    generation = config(model_dir).generation.model_dump(by_alias=True, exclude_none=True)
    comment = FloeComment(deployment_digest(model_dir, generation), ALICE).render()

    first = deploy(config(model_dir, owner=ALICE), target)
    assert first["outcome"] == "Deployed" and first["functionName"] == '"ANALYTICS"."PUBLIC"."SUMMARIZE"'
    assert [row["summary"] for row in first["verifiedSample"]] == [STAND_IN, STAND_IN]
    # the staging function is gone; the model and the handler are on the stage under the digest
    assert functions(admin) == {"SUMMARIZE(VARCHAR) RETURN VARCHAR": comment}
    staged = {row["name"] for row in admin.sql('LIST @"ANALYTICS"."PUBLIC"."MODELS"').collect()}
    prefix = f"models/floe/SUMMARIZE/{comment.split(':')[1][:16]}"
    assert {f"{prefix}/floe_model.zip", f"{prefix}/udf_handler.py", f"{prefix}/floe_batch.json"} <= staged
    # the batch size chosen from the latency measured here is among the function's IMPORTS (the server
    # refuses a CREATE FUNCTION whose imports are not on the stage), for the handler to read at import
    stage_dir = Path(fakesnow_stage.LOCAL_BUCKET_PATH, "ANALYTICS", "PUBLIC", "MODELS")
    batch_file = stage_dir / prefix.split("/", 1)[1] / "floe_batch.json"
    assert json.loads(batch_file.read_text()) == {"maxBatchSize": first["maxBatchSize"]}
    assert first["perRowLatencyMs"] > 0

    again = deploy(config(model_dir, owner=ALICE), target)
    assert again["outcome"] == "Unchanged" and again["modelDigest"] == first["modelDigest"]

    renamed = deploy(config(model_dir, owner=ALICE, functionName="summarize_v2",
                            previousFunction=first["functionName"]), target)
    assert renamed["outcome"] == "Deployed" and "dropped the previous function" in renamed["message"]
    assert functions(admin) == {"SUMMARIZE_V2(VARCHAR) RETURN VARCHAR": comment}

    assert drop(config(model_dir, owner=ALICE, functionName="summarize_v2"), target)["outcome"] == "Dropped"
    assert functions(admin) == {}
    assert drop(config(model_dir, owner=ALICE, functionName="summarize_v2"), target)["message"] == (
        "there was no function to drop")


def test_packages_are_pinned_from_the_declared_list_and_checked_against_the_channel(target, admin, model_dir):
    """PACKAGES names the declared series (not this machine's versions); a series the account's channel does
    not have fails the deploy, naming it, before anything is uploaded or created."""
    assert "pytorch==2.*" in pinned_packages() and not any("+" in pin for pin in pinned_packages())
    admin.sql(
        "DELETE FROM information_schema.packages WHERE package_name = 'transformers' AND version LIKE '5.%'"
    ).collect()
    try:
        with pytest.raises(UnresolvablePackageError, match=r"transformers==5\.\* \(available: 4\.51\.3\)"):
            deploy(config(model_dir, owner=ALICE, functionName="unresolvable"), target)
    finally:
        admin.sql("INSERT INTO information_schema.packages VALUES ('transformers', '5.1.0', 'python')").collect()
    assert "UNRESOLVABLE(VARCHAR) RETURN VARCHAR" not in functions(admin)


def create_by_hand(admin, name: str, arguments: str = '"TEXT" VARCHAR', comment: str | None = None) -> None:
    """A function someone else made in the schema, not through floe."""
    admin.sql(
        f'CREATE FUNCTION "ANALYTICS"."PUBLIC".{name}({arguments}) RETURNS VARCHAR LANGUAGE PYTHON '
        "RUNTIME_VERSION = '3.11' HANDLER = 'theirs.run'" + (f" COMMENT = '{comment}'" if comment else "")
    ).collect()


def test_functions_of_others_are_neither_replaced_nor_dropped(target, admin, model_dir):
    create_by_hand(admin, "HANDMADE")
    create_by_hand(admin, "CLAIMED", comment=FloeComment("ab" * 32, MALLORY).render())
    before = functions(admin)
    with pytest.raises(DeployError, match="refusing to replace .*HANDMADE.: floe did not create it "
                                          "\\(its comment is 'user-defined function'\\)"):
        deploy(config(model_dir, owner=ALICE, functionName="handmade"), target)
    with pytest.raises(DeployError, match="refusing to drop .*HANDMADE.: floe did not create it"):
        drop(config(model_dir, owner=ALICE, functionName="handmade"), target)
    with pytest.raises(DeployError, match=f"refusing to replace .*CLAIMED.: it belongs to {MALLORY}, not to {ALICE}"):
        deploy(config(model_dir, owner=ALICE, functionName="claimed"), target)
    with pytest.raises(DeployError, match=f"refusing to drop .*CLAIMED.: it belongs to {MALLORY}"):
        drop(config(model_dir, owner=ALICE, functionName="claimed"), target)
    assert functions(admin) == before


def test_show_is_read_for_the_exact_name_and_signature(target, admin):
    # SHOW ... LIKE 'MY_FN' also lists MY1FN (`_` is a wildcard) and MY_FN's overloads
    create_by_hand(admin, "MY1FN", comment=FloeComment("11" * 32, ALICE).render())
    create_by_hand(admin, "MY_FN", arguments='"A" VARCHAR, "B" VARCHAR', comment=FloeComment("22" * 32, ALICE).render())
    my_fn = FunctionName.of("analytics", "public", "my_fn")
    assert target.existing(my_fn) is None
    create_by_hand(admin, "MY_FN", comment=FloeComment("33" * 32, ALICE).render())
    assert target.existing(my_fn).floe == FloeComment("33" * 32, ALICE)
    target.drop_function(my_fn)
    assert "MY_FN(VARCHAR, VARCHAR) RETURN VARCHAR" in functions(admin) and target.existing(my_fn) is None


def dataset(**snowflake):
    return parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}},
                         "dataset": {"snowflake": snowflake}}).dataset


def news_rows(admin) -> int:
    return admin.sql('SELECT COUNT(*) AS N FROM "ANALYTICS"."PUBLIC".NEWS').collect()[0]["N"]


def test_training_data_from_a_table_and_a_query(secret_dir, admin):
    session = open_session(read_connection_dir(secret_dir, None))
    try:
        table = data.load(dataset(table="NEWS"), session)
        # 400 rows, 5 without an article; the lower-case configured columns resolve to Snowflake's upper case
        assert (table.rows_read, table.rows_dropped, len(table.train), len(table.validation)) == (400, 5, 355, 40)
        query = data.load(dataset(query="WITH n AS (SELECT * FROM NEWS WHERE CTEXT IS NOT NULL)\n"
                                        "SELECT CTEXT, TEXT FROM n -- a trailing comment"), session)
        assert (query.rows_read, query.rows_dropped) == (395, 0)
        assert sorted(query.train.documents + query.validation.documents) == sorted(
            table.train.documents + table.validation.documents)
    finally:
        session.close()


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM NEWS",
        "DROP TABLE NEWS",
        "UPDATE NEWS SET TEXT = 'x'",
        "INSERT INTO NEWS SELECT * FROM NEWS",
        "CREATE OR REPLACE TABLE NEWS AS SELECT 1 AS X",
        "SELECT 1) AS a, (DELETE FROM NEWS",  # out of the parentheses
    ],
)
def test_a_dataset_query_runs_only_as_a_select(secret_dir, admin, query):
    session = open_session(read_connection_dir(secret_dir, None))
    try:
        with pytest.raises(data.DataError, match="^dataset.snowflake.query: "):
            data.load(dataset(query=query), session)
    finally:
        session.close()
    assert news_rows(admin) == 400


def test_a_query_with_a_semicolon_is_refused_before_it_is_sent(admin):
    with pytest.raises(data.DataError, match="single SELECT or WITH query without ';'"):
        data.read_snowflake(None, dataset(query="SELECT 1; DROP TABLE NEWS").snowflake)
    assert news_rows(admin) == 400
