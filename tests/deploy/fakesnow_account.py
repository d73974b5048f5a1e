"""fakesnow's server (PyPI `fakesnow[server]`: Snowflake's client protocol over DuckDB), started in this
process on 127.0.0.1 for floe's account path, which talks to it through the real snowflake-connector-python
and Snowpark.

What the pinned fakesnow cannot do is added here, on the server's side of the wire, and nowhere else
(docs/snowflake.md lists it):
- PUT with the stage location in single quotes, as Snowpark's `file.put` sends it, fails ("does not start
  with @"): the quotes are removed before fakesnow reads the statement; the upload itself is fakesnow's;
- it has no function catalog (SHOW USER FUNCTIONS is always empty, DROP FUNCTION is an internal error,
  CREATE FUNCTION ... LANGUAGE PYTHON is a syntax error): those three statements are parsed with sqlglot's
  Snowflake dialect, as fakesnow parses everything, and kept in a DuckDB table with SHOW's columns.
  CREATE FUNCTION fails, as Snowflake's does, when a file in IMPORTS is not on its stage;
- it cannot call a UDF: Python bodies do not run in DuckDB, and a call by a fully qualified name fails in
  fakesnow's rewriting (`'Identifier' object has no attribute 'upper'`). `StandInCalls` is the account
  target with that one step replaced: a call needs the function in the catalog and answers `STAND_IN`.
- it has no INFORMATION_SCHEMA.PACKAGES (the Anaconda channel's packages and versions): a DuckDB table of that
  name's columns stands in, filled with `CHANNEL`, an example of what an account lists;
- Snowpark's Session.close runs `select system$cancel_all_queries(<session id>)`, a function fakesnow does
  not have: it answers as Snowflake does when nothing runs.
- its login answers without a master token, so the connector's logout fails on the client's side and the
  connection stays open; Snowpark then closes it again at interpreter exit, against a server that is gone,
  retrying for about an hour. The login answer here carries one (the session token, which logout sends).
Anything else it does not support fails the statement at once: as an internal error (HTTP 500) the
connector would retry it until its timeout.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import fakesnow.server
import fakesnow.transforms.stage as fakesnow_stage
import pytest
import uvicorn
from fakesnow.cursor import FakeSnowflakeCursor
from fakesnow.dialect import parse_one
from fakesnow.instance import FakeSnow
from floe_trainer.identifiers import FunctionName
from floe_trainer.snowflake_session import AccountTarget
from snowflake.connector.errors import Error, ProgrammingError
from sqlglot import exp
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

STAND_IN = "stand-in summary"  # a plausible answer: as short as the tests' maxNewTokens allow
CATALOG = "_fs_global._fs_information_schema._floe_functions"
PACKAGES = "_fs_global._fs_information_schema._floe_packages"
# What INFORMATION_SCHEMA.PACKAGES lists here for Python: a few versions of each package the UDF names.
CHANNEL = {
    "numpy": ["1.26.4", "2.2.5"],
    "pandas": ["2.2.3", "2.3.1"],
    "pytorch": ["2.3.0", "2.6.0"],
    "transformers": ["4.51.3", "5.1.0"],
    "sentencepiece": ["0.2.0"],
    "onnx": ["1.17.0"],
    "onnxruntime": ["1.20.1"],
}
_INFORMATION_SCHEMA_PACKAGES = re.compile(r"\binformation_schema\.packages\b", re.IGNORECASE)
# one function: its name and signature (arguments reads "NAME(VARCHAR) RETURN VARCHAR")
_SAME = "catalog_name = ? AND schema_name = ? AND name = ? AND starts_with(arguments, ? || ' ')"
_QUOTED_PUT_TARGET = re.compile(r"^(\s*PUT\s+'[^']*'\s+)'(@[^']*)'", re.IGNORECASE)
_CANCEL_ALL = re.compile(r"^\s*select\s+system\$cancel_all_queries\(", re.IGNORECASE)
_FUNCTION_DDL = re.compile(r"^\s*(CREATE|DROP)\b[^(]*\bFUNCTION\b", re.IGNORECASE)
_SHOW = re.compile(
    r"^\s*SHOW\s+USER\s+FUNCTIONS(?:\s+LIKE\s+'(?P<like>(?:[^'\\]|\\.)*)')?"
    r"(?:\s+IN\s+SCHEMA\s+(?P<database>\"[^\"]+\"|\w+)\.(?P<schema>\"[^\"]+\"|\w+))?\s*$",
    re.IGNORECASE,
)


def _name(part: str) -> str:
    """Snowflake's identifier resolution: quoted keeps its case, unquoted is upper-cased."""
    return part[1:-1] if part.startswith('"') else part.upper()


def _parts(cursor: FakeSnowflakeCursor, table: exp.Table) -> tuple[str, str, str]:
    """Database, schema and name of a function, resolved as Snowflake resolves them."""
    current = (cursor._conn.database, cursor._conn.schema)
    resolved = []
    for key, default in (("catalog", current[0]), ("db", current[1]), ("this", None)):
        node = table.args.get(key)
        resolved.append(default if node is None else node.name if node.quoted else node.name.upper())
    return tuple(resolved)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _status(text: str) -> str:
    return f'SELECT {_literal(text)} AS "status"'


def _missing(message: str) -> ProgrammingError:
    return ProgrammingError(msg=f"SQL compilation error:\n{message}", errno=2003, sqlstate="02000")


def _show(cursor: FakeSnowflakeCursor, match: re.Match) -> str:
    database = _name(match["database"]) if match["database"] else cursor._conn.database
    schema = _name(match["schema"]) if match["schema"] else cursor._conn.schema
    where = f"catalog_name = {_literal(database)} AND schema_name = {_literal(schema)}"
    if match["like"] is not None:  # LIKE in SHOW is case-insensitive, `_` and `%` its wildcards
        pattern = re.sub(r"\\(.)", r"\1", match["like"])  # the literal's backslash escapes
        where += f" AND name ILIKE {_literal(pattern)}"
    columns = ", ".join(
        f'{column} AS "{column}"'
        for column in ("created_on", "name", "schema_name", "min_num_arguments", "max_num_arguments", "arguments",
                       "description", "catalog_name", "language")
    )
    return f"SELECT {columns} FROM {CATALOG} WHERE {where} ORDER BY name"


def _on_stage(location: str) -> bool:
    """Whether `@db.schema.stage/path` names a file that was PUT there (fakesnow's LIST takes no path)."""
    match = re.fullmatch(r'@("[^"]+"|\w+)\.("[^"]+"|\w+)\.("[^"]+"|\w+)/(.+)', location)
    if match is None:
        return False
    stage_dir = Path(fakesnow_stage.LOCAL_BUCKET_PATH, *(_name(part) for part in match.groups()[:3]))
    return (stage_dir / match[4]).is_file()


def _properties(create: exp.Create) -> dict[str, exp.Expression]:
    found = {}
    for prop in create.args["properties"].expressions:
        key = prop.name.upper() if type(prop) is exp.Property else type(prop).__name__
        found[key] = prop
    return found


def _create(cursor: FakeSnowflakeCursor, create: exp.Create) -> str:
    udf = create.this
    database, schema, name = _parts(cursor, udf.this)
    types = [column.args["kind"].sql(dialect="snowflake") for column in udf.expressions]
    props = _properties(create)
    language = props["LanguageProperty"].name.upper()
    if language != "PYTHON":
        raise NotImplementedError(f"CREATE FUNCTION ... LANGUAGE {language}")
    for required in ("RUNTIME_VERSION", "HandlerProperty"):
        if required not in props:
            raise ProgrammingError(msg=f"SQL compilation error:\n{required} is required", errno=1003, sqlstate="42601")
    imports = [item.name for item in props["IMPORTS"].args["value"].expressions] if "IMPORTS" in props else []
    for location in imports:
        if not _on_stage(location):
            raise _missing(f"File '{location}' does not exist or not authorized.")
    signature = f"{name}({', '.join(types)})"
    returns = props["ReturnsProperty"].this.sql(dialect="snowflake")
    comment = props["SchemaCommentProperty"].this.name if "SchemaCommentProperty" in props else None
    duck = cursor._duck_conn
    key = (database, schema, name, signature)
    exists = duck.execute(f"SELECT count(*) FROM {CATALOG} WHERE {_SAME}", key).fetchone()[0]
    if exists and not create.args.get("replace"):
        raise ProgrammingError(msg=f"SQL compilation error:\nObject '{name}' already exists.", errno=2002,
                               sqlstate="42710")
    duck.execute(f"DELETE FROM {CATALOG} WHERE {_SAME}", key)
    duck.execute(
        f"INSERT INTO {CATALOG} VALUES (now(), ?, ?, ?, ?, ?, ?, ?, 'PYTHON')",
        (name, schema, len(types), len(types), f"{signature} RETURN {returns}",
         "user-defined function" if comment is None else comment, database),
    )
    return _status(f"Function {name} successfully created.")


def _drop(cursor: FakeSnowflakeCursor, drop: exp.Drop) -> str:
    database, schema, name = _parts(cursor, drop.args["tables"][0])
    types = [kind.sql(dialect="snowflake") for kind in drop.expressions]
    duck = cursor._duck_conn
    removed = duck.execute(
        f"DELETE FROM {CATALOG} WHERE {_SAME} RETURNING name", (database, schema, name, f"{name}({', '.join(types)})")
    ).fetchall()
    if not removed and not drop.args.get("exists"):
        raise _missing(f"Function '{name}({', '.join(types)})' does not exist or not authorized.")
    return _status(f"{name} successfully dropped.")


def _rewrite(cursor: FakeSnowflakeCursor, command: str) -> str:
    if _QUOTED_PUT_TARGET.match(command):
        return _QUOTED_PUT_TARGET.sub(r"\1\2", command, count=1)
    if _CANCEL_ALL.match(command):
        return _status("0 queries cancelled")
    if show := _SHOW.match(command):
        return _show(cursor, show)
    if _INFORMATION_SCHEMA_PACKAGES.search(command):
        return _INFORMATION_SCHEMA_PACKAGES.sub(PACKAGES, command)
    if _FUNCTION_DDL.match(command):
        statement = parse_one(command)
        if isinstance(statement, exp.Create) and statement.kind == "FUNCTION":
            return _create(cursor, statement)
        if isinstance(statement, exp.Drop) and statement.kind == "FUNCTION":
            return _drop(cursor, statement)
    return command


class StandInCalls(AccountTarget):
    """The account target, but for calling the function, which the test server cannot do."""

    def call(self, function: FunctionName, texts: list[str]) -> list[str | None]:
        if self.existing(function) is None:
            raise ProgrammingError(msg=f"Unknown function {function.qualified}", errno=2141, sqlstate="42601")
        return [STAND_IN] * len(texts)


def _with_additions(execute):
    def patched(cursor, command, *args, **kwargs):
        try:
            return execute(cursor, _rewrite(cursor, command), *args, **kwargs)
        except Error:
            raise
        except Exception as error:  # noqa: BLE001 - see the module docstring
            message = f"not supported by the test server: {type(error).__name__}: {error}"
            raise ProgrammingError(msg=message, errno=9999, sqlstate="99999") from None

    return patched


async def _login_with_master_token(request):
    answer = await fakesnow.server.login_request(request)
    body = json.loads(answer.body)
    body["data"]["masterToken"] = body["data"]["token"]
    return JSONResponse(body)


APP = Starlette(
    routes=[
        Route(route.path, _login_with_master_token, methods=route.methods)
        if route.endpoint is fakesnow.server.login_request
        else route
        for route in fakesnow.server.routes
    ]
)


@contextlib.contextmanager
def server(bucket: Path) -> Iterator[dict]:
    """Serve a fresh in-memory Snowflake on a free port of 127.0.0.1, its stages' files under `bucket`;
    yields the connection's host, port and protocol."""
    instance = FakeSnow()
    instance.duck_conn.execute(
        f"CREATE TABLE {CATALOG} (created_on TIMESTAMPTZ, name VARCHAR, schema_name VARCHAR, "
        "min_num_arguments INTEGER, max_num_arguments INTEGER, arguments VARCHAR, description VARCHAR, "
        "catalog_name VARCHAR, language VARCHAR)"
    )
    instance.duck_conn.execute(f"CREATE TABLE {PACKAGES} (package_name VARCHAR, version VARCHAR, language VARCHAR)")
    instance.duck_conn.executemany(
        f"INSERT INTO {PACKAGES} VALUES (?, ?, 'python')",
        [(name, version) for name, versions in CHANNEL.items() for version in versions],
    )
    # Listening before the server thread starts: a client that connects first waits in the backlog.
    listener = socket.create_server(("127.0.0.1", 0))
    uvicorn_server = uvicorn.Server(uvicorn.Config(APP, log_level="warning"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fakesnow.server, "shared_fs", instance)
        patch.setattr(fakesnow_stage, "LOCAL_BUCKET_PATH", str(bucket))
        patch.setattr(FakeSnowflakeCursor, "execute", _with_additions(FakeSnowflakeCursor.execute))
        thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            yield {"host": "127.0.0.1", "port": listener.getsockname()[1], "protocol": "http"}
        finally:
            uvicorn_server.should_exit = True
            thread.join()
            listener.close()
            instance.duck_conn.close()
            shutil.rmtree(bucket, ignore_errors=True)
