"""Snowflake identifiers and the SQL the deployer runs against a real account.

Every name that reaches SQL (database, schema, stage, function) passes `identifier()` first: only the
characters of an unquoted Snowflake identifier are accepted, so an injection attempt such as
`x"; DROP TABLE y; --` is refused before any call. Accepted names are upper-cased and double-quoted,
which keeps Snowflake's unquoted, case-insensitive meaning (`summarize` is the function
`SELECT SUMMARIZE(...)` finds) while the quoting makes reserved words safe.

The statements are pure functions of validated names, so they are unit-tested without an account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from floe_contract.deployment import NotAnIdentifier, check_identifier

# The UDF's one argument; vectorized handlers receive it as column 0.
ARGUMENT = '"TEXT" VARCHAR'
SIGNATURE = "(VARCHAR)"
DIGEST_COMMENT_PREFIX = "floe model sha256:"
OWNER_MARK = " owner:"
# namespace/name/uid of the SnowflakeDeployment that owns a function: a DNS label, a DNS subdomain, a uid.
OWNER = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9-]{1,64}")
_COMMENT = re.compile(re.escape(DIGEST_COMMENT_PREFIX) + r"([0-9a-f]+)(?:" + re.escape(OWNER_MARK) + r"(\S+))?")


class IdentifierError(ValueError):
    """A name that is not a valid Snowflake identifier; the message names the field."""


def identifier(value: str, field: str) -> str:
    """Return `value` as an upper-cased, double-quoted Snowflake identifier, or raise IdentifierError."""
    try:
        check_identifier(value)
    except NotAnIdentifier as error:
        raise IdentifierError(f"{field}: {error}") from None
    return f'"{value.upper()}"'


def string_literal(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class FunctionName:
    """A fully qualified function name; each part already validated and quoted."""

    database: str
    schema: str
    name: str

    @classmethod
    def of(cls, database: str, schema: str, name: str) -> FunctionName:
        return cls(identifier(database, "database"), identifier(schema, "schema"), identifier(name, "functionName"))

    @property
    def qualified(self) -> str:
        return f"{self.database}.{self.schema}.{self.name}"

    @property
    def bare_name(self) -> str:
        """The name as SHOW FUNCTIONS lists it (upper case, unquoted)."""
        return self.name.strip('"')

    def with_suffix(self, suffix: str) -> FunctionName:
        """A sibling name (the staging function), still a valid identifier."""
        return FunctionName(self.database, self.schema, identifier(self.bare_name + suffix, "functionName"))


def stage_location(database: str, schema: str, stage: str, *path: str) -> str:
    """`@"DB"."SCHEMA"."STAGE"/a/b`; path parts must be identifier-safe (names and hex digests)."""
    quoted = f"@{identifier(database, 'database')}.{identifier(schema, 'schema')}.{identifier(stage, 'stage')}"
    for part in path:
        if not re.fullmatch(r"[A-Za-z0-9_$.-]+", part) or part in (".", ".."):
            raise IdentifierError(f"stage path part {part!r} is not allowed")
    return "/".join([quoted, *path])


def qualified_function(value: str, field: str) -> FunctionName:
    """`DB.SCHEMA.FUNCTION`, each part bare or double-quoted as `FunctionName.qualified` writes it."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 3:
        raise IdentifierError(f"{field}: {value!r} is not DATABASE.SCHEMA.FUNCTION")
    bare = []
    for part in parts:
        if len(part) > 2 and part[0] == part[-1] == '"':
            part = part[1:-1]
            # a quoted lower-case name is another object than the upper-cased one floe deploys
            if part != part.upper():
                raise IdentifierError(f"{field}: {value!r} names a case-sensitive identifier floe never deploys")
        bare.append(part)
    return FunctionName(identifier(bare[0], field), identifier(bare[1], field), identifier(bare[2], field))


@dataclass(frozen=True)
class FloeComment:
    """What floe records in a function's COMMENT: the digest it serves and the owner that deployed it
    (namespace/name/uid of its SnowflakeDeployment; None for functions of an older floe)."""

    digest: str
    owner: str | None = None

    def render(self) -> str:
        return DIGEST_COMMENT_PREFIX + self.digest + (OWNER_MARK + self.owner if self.owner else "")

    @classmethod
    def parse(cls, comment: str | None) -> FloeComment | None:
        """None for a comment floe did not write (no comment, or someone else's)."""
        match = _COMMENT.fullmatch(comment or "")
        if match is None or (match[2] is not None and not OWNER.fullmatch(match[2])):
            return None
        return cls(match[1], match[2])


def create_stage_sql(database: str, schema: str, stage: str) -> str:
    return (
        f"CREATE STAGE IF NOT EXISTS {identifier(database, 'database')}.{identifier(schema, 'schema')}."
        f"{identifier(stage, 'stage')}"
    )


def create_function_sql(
    function: FunctionName,
    *,
    imports: list[str],
    packages: list[str],
    handler: str,
    runtime_version: str,
    comment: str,
) -> str:
    """CREATE OR REPLACE a permanent Python UDF whose handler is a staged module.

    The handler marks itself vectorized (`_sf_vectorized_input = pandas.DataFrame`), so Snowflake calls it
    with a batch of rows.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*", handler):
        raise IdentifierError(f"handler {handler!r} must be module.function")
    if not re.fullmatch(r"3\.\d+", runtime_version):
        raise IdentifierError(f"runtime version {runtime_version!r} must look like 3.11")
    imports_sql = ", ".join(string_literal(item) for item in imports)
    packages_sql = ", ".join(string_literal(item) for item in packages)
    return (
        f"CREATE OR REPLACE FUNCTION {function.qualified}({ARGUMENT})\n"
        "RETURNS VARCHAR\n"
        "LANGUAGE PYTHON\n"
        f"RUNTIME_VERSION = {string_literal(runtime_version)}\n"
        f"PACKAGES = ({packages_sql})\n"
        f"IMPORTS = ({imports_sql})\n"
        f"HANDLER = {string_literal(handler)}\n"
        f"COMMENT = {string_literal(comment)}"
    )


def drop_function_sql(function: FunctionName) -> str:
    return f"DROP FUNCTION IF EXISTS {function.qualified}{SIGNATURE}"


def show_functions_sql(function: FunctionName) -> str:
    """SHOW the schema's user functions named like `function`; callers match the name exactly, because
    `_` is a LIKE wildcard."""
    return (
        f"SHOW USER FUNCTIONS LIKE {string_literal(function.bare_name)} IN SCHEMA {function.database}.{function.schema}"
    )
