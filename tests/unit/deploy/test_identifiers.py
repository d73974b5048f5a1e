import pytest
from floe_trainer.identifiers import (
    FunctionName,
    IdentifierError,
    create_function_sql,
    create_stage_sql,
    digest_from_comment,
    drop_function_sql,
    identifier,
    show_functions_sql,
    stage_location,
)


@pytest.mark.parametrize(("raw", "quoted"), [("summarize", '"SUMMARIZE"'), ("_x$1", '"_X$1"'), ("Db_2", '"DB_2"')])
def test_valid_names_are_upper_cased_and_quoted(raw, quoted):
    assert identifier(raw, "database") == quoted


@pytest.mark.parametrize(
    "raw", ['x"; DROP TABLE y; --', "a.b", "with space", "1abc", "", "semi;colon", "quo'te", "x" * 256, "naïve"]
)
def test_anything_else_is_refused_naming_the_field(raw):
    with pytest.raises(IdentifierError, match="^functionName: "):
        identifier(raw, "functionName")


def test_function_name_parts_are_validated_each():
    with pytest.raises(IdentifierError, match="^schema: "):
        FunctionName.of("DB", "x; DROP", "f")
    name = FunctionName.of("analytics", "public", "summarize")
    assert name.qualified == '"ANALYTICS"."PUBLIC"."SUMMARIZE"'
    assert name.with_suffix("__STAGING").qualified == '"ANALYTICS"."PUBLIC"."SUMMARIZE__STAGING"'


def test_stage_location_refuses_path_traversal():
    assert stage_location("db", "s", "models", "floe", "ab12") == '@"DB"."S"."MODELS"/floe/ab12'
    for part in ("..", "a/b", "x'y"):
        with pytest.raises(IdentifierError):
            stage_location("db", "s", "models", part)


def test_create_function_sql():
    sql = create_function_sql(
        FunctionName.of("db", "s", "summarize"),
        imports=['@"DB"."S"."M"/floe/ab/floe_model.zip', '@"DB"."S"."M"/floe/ab/udf_handler.py'],
        packages=["pandas==2.2.3", "pytorch==2.5.1"],
        handler="udf_handler.summarize",
        runtime_version="3.11",
        comment="floe model sha256:ab",
    )
    assert sql == (
        'CREATE OR REPLACE FUNCTION "DB"."S"."SUMMARIZE"("TEXT" VARCHAR)\n'
        "RETURNS VARCHAR\n"
        "LANGUAGE PYTHON\n"
        "RUNTIME_VERSION = '3.11'\n"
        "PACKAGES = ('pandas==2.2.3', 'pytorch==2.5.1')\n"
        'IMPORTS = (\'@"DB"."S"."M"/floe/ab/floe_model.zip\', \'@"DB"."S"."M"/floe/ab/udf_handler.py\')\n'
        "HANDLER = 'udf_handler.summarize'\n"
        "COMMENT = 'floe model sha256:ab'"
    )


def test_create_function_sql_escapes_literals_and_checks_handler():
    name = FunctionName.of("db", "s", "f")
    sql = create_function_sql(
        name, imports=["@x/a'b"], packages=[], handler="m.f", runtime_version="3.11", comment="it's"
    )
    assert "'@x/a\\'b'" in sql and "COMMENT = 'it\\'s'" in sql
    with pytest.raises(IdentifierError):
        create_function_sql(name, imports=[], packages=[], handler="m.f'; DROP", runtime_version="3.11", comment="")


def test_drop_show_and_stage_sql():
    name = FunctionName.of("db", "s", "my_fn")
    assert drop_function_sql(name) == 'DROP FUNCTION IF EXISTS "DB"."S"."MY_FN"(VARCHAR)'
    assert show_functions_sql(name) == 'SHOW USER FUNCTIONS LIKE \'MY_FN\' IN SCHEMA "DB"."S"'
    assert create_stage_sql("db", "s", "models") == 'CREATE STAGE IF NOT EXISTS "DB"."S"."MODELS"'
    assert digest_from_comment("floe model sha256:abc") == "abc"
    assert digest_from_comment("user-defined function") is None
