"""A rendered config's validation errors in the user's words: each field named as it is written in the
resource the operator rendered the config from (`spec.training.batchSize`), and the problem in plain words
rather than pydantic's ("Input should be ...")."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

# Config fields (camelCase paths) that hold a field of the resource's spec, longest prefix first wins; a field
# not listed is the operator's own (a mount path, the config version) and is named as the config's.
TRAINER_FIELDS = {
    "model": "spec.model",
    "dataset": "spec.dataset",
    "training": "spec.training",
    "evaluation": "spec.evaluation",
    "checkpoint.everyMinutes": "spec.checkpoint.everyMinutes",
    "checkpoint.everySteps": "spec.checkpoint.everySteps",
    "checkpoint.keep": "spec.checkpoint.keep",
}
DEPLOY_FIELDS = {
    "database": "spec.snowflake.database",
    "schema": "spec.snowflake.schema",
    "stage": "spec.snowflake.stage",
    "functionName": "spec.snowflake.functionName",
    "mode": "spec.snowflake.mode",
    "sampleRows": "spec.sampleRows",
    "approvedModelDigest": "spec.approval.modelDigest",
}


def field_name(loc: tuple, fields: Mapping[str, str], config: str) -> str:
    """The user's name of the config field at pydantic's ``loc``: its spec path, else `<config> <path>`."""
    path = ".".join(str(part) for part in loc if not _is_union_branch(part))
    for prefix in sorted(fields, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            return fields[prefix] + path[len(prefix):]
    return f"{config} {path or '(root)'}"


def _is_union_branch(part: object) -> bool:
    # pydantic adds the branch of a union it tried (`int`, `str`, `function-plain[...]`) to the location.
    return isinstance(part, str) and (part in ("int", "str", "float", "bool") or "[" in part)


def plain(error: Mapping) -> str:
    """One pydantic error in plain words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bound = {"greater_than": "greater than {gt}", "greater_than_equal": "at least {ge}",
             "less_than": "less than {lt}", "less_than_equal": "at most {le}"}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "not a field floe knows"
    if kind in bound:
        return "must be " + bound[kind].format(**ctx)
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx["error"])
    if kind.startswith(("int_", "float_", "bool_", "string_", "list_", "dict_", "model_")) and kind.endswith(
            ("_type", "_parsing")):
        return f"must be {_TYPES[kind.split('_', 1)[0]]}"
    return error["msg"]


_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "dict": "an object", "model": "an object"}


def describe(error: ValidationError, fields: Mapping[str, str], config: str) -> str:
    """Every error of ``error``, `<field>: <problem>`, joined by '; '."""
    return "; ".join(f"{field_name(e['loc'], fields, config)}: {plain(e)}" for e in error.errors())
