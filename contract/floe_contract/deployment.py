"""A SnowflakeDeployment's target (where in Snowflake the UDF goes) and the UDF's generation settings. The
SnowflakeDeployment CRD embeds the target, and the deployer's config (floe_trainer.deploy) is it plus
runtime fields, so what the deployer needs is required, or defaulted, at admission."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from floe_contract.base import FloeModel

# Unquoted Snowflake identifier; quoting is left to the deployer, injection is refused here.
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$"
MAX_IDENTIFIER_LENGTH = 255
# The deployer registers the function first as <name>__FLOE_STAGING_<12 hex digits>, which must be an
# identifier too.
STAGING_INFIX = "__FLOE_STAGING_"
STAGING_SUFFIX_LENGTH = len(STAGING_INFIX) + 12
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class NotAnIdentifier(ValueError):
    """A name that is not an unquoted Snowflake identifier."""


def check_identifier(value: str) -> str:
    """``value`` if it is an unquoted Snowflake identifier (what IDENTIFIER_PATTERN says, in plain words)."""
    if not isinstance(value, str) or not re.fullmatch(IDENTIFIER_PATTERN, value):
        raise NotAnIdentifier(
            f"{value!r} is not a valid Snowflake identifier (allowed: a letter or underscore, then letters, digits, "
            f"'_' or '$'; at most {MAX_IDENTIFIER_LENGTH} characters; no quotes, dots, spaces or semicolons)"
        )
    return value


# Checked by check_identifier (its message says what is allowed); the CRD carries the pattern.
Identifier = Annotated[str, AfterValidator(check_identifier)]


def identifier_field(description: str, **constraints: Any) -> Any:
    """A required identifier: the deployer cannot work without it, so admission refuses a spec that lacks it."""
    return Field(description=description, json_schema_extra={"pattern": IDENTIFIER_PATTERN}, **constraints)


class FunctionTarget(FloeModel):
    """Where in Snowflake the UDF goes."""

    mode: Literal["local", "account"] | None = Field(
        default=None,
        description="account: a real Snowflake account; local: Snowpark's local testing emulator. Unset: the "
        "connection Secret decides (account when it names one), and local when there is no Secret.",
    )
    database: Identifier = identifier_field("Database of the UDF and stage.")
    schema_: Identifier = identifier_field("Schema of the UDF and stage.", alias="schema")
    stage: Identifier = identifier_field("Stage the model archive is uploaded to.")
    function_name: Identifier = identifier_field(
        f"Name of the UDF, at most {MAX_IDENTIFIER_LENGTH - STAGING_SUFFIX_LENGTH} characters (the deployer stages "
        "it under a longer name first).",
        max_length=MAX_IDENTIFIER_LENGTH - STAGING_SUFFIX_LENGTH,
    )


class Generation(FloeModel):
    """Overrides of the UDF handler's generation defaults (floe_trainer.udf_handler.DEFAULT_SETTINGS)."""

    batch_size: int | None = Field(None, ge=1, le=256)
    source_max_length: int | None = Field(None, ge=8, le=4096)
    max_new_tokens: int | None = Field(None, ge=1, le=1024)
    num_beams: int | None = Field(None, ge=1, le=8)
    repetition_penalty: float | None = Field(None, ge=1.0, le=10.0)
    quantize: Literal["dynamic-int8", "none"] | None = None
    backend: Literal["onnx", "torch"] | None = None
