import pytest
from floe_trainer.identifiers import (
    FloeComment,
    FunctionName,
    IdentifierError,
    create_function_sql,
    create_stage_sql,
    drop_function_sql,
    identifier,
    qualified_function,
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


OWNER = "team-a/summarize/7f1c2a9e-0d7b-4c55-9f3e-1a2b3c4d5e6f"


def test_the_comment_records_digest_and_owner():
    comment = FloeComment("ab12", OWNER)
    assert comment.render() == f"floe model sha256:ab12 owner:{OWNER}"
    assert FloeComment.parse(comment.render()) == comment
    assert FloeComment.parse("floe model sha256:ab12") == FloeComment("ab12", None)  # an older floe's


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "user-defined function",  # what SHOW lists for a function without a comment
        "my model sha256:ab12",
        "floe model sha256:ab12 (copied by hand)",
        "floe model sha256:ab12 owner:Team_A/x/1",
        f"floe model sha256:ab12 owner:{OWNER} ",
        "prefix floe model sha256:ab12",
    ],
)
def test_any_other_comment_is_not_floe(comment):
    assert FloeComment.parse(comment) is None


@pytest.mark.parametrize("raw", ['"ANALYTICS"."PUBLIC"."F"', "analytics.public.f", 'ANALYTICS."PUBLIC".f'])
def test_qualified_function_accepts_what_the_status_records(raw):
    parsed = qualified_function(raw, "previousFunction")
    assert parsed.database == '"ANALYTICS"' and parsed.schema == '"PUBLIC"'
    assert parsed.qualified == qualified_function(parsed.qualified, "previousFunction").qualified


@pytest.mark.parametrize("raw", ["a.b", "a.b.c.d", '"db"."s"."f"', 'a.b."f; DROP"', "a..f", 'a.b.""'])
def test_qualified_function_refuses_anything_else_naming_the_field(raw):
    with pytest.raises(IdentifierError, match="^previousFunction: "):
        qualified_function(raw, "previousFunction")
