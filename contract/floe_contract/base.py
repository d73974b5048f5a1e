"""The base of every floe model and the schema helpers the models need (CEL rules for the CRDs)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message, **extra}


class FloeModel(BaseModel):
    """Base of every spec model and rendered config: camelCase JSON names, unknown fields refused.

    ``one_of`` names fields of which exactly one must be set; the rule is checked here and also
    attached to the schema as a CEL rule, so the API server refuses the same objects.
    ``cel_rules`` are further CEL rules attached to the model's schema.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", protected_namespaces=())

    one_of: ClassVar[tuple[str, ...]] = ()
    cel_rules: ClassVar[tuple[dict[str, str], ...]] = ()

    @classmethod
    def _one_of_aliases(cls) -> list[str]:
        return [cls.model_fields[name].alias or name for name in cls.one_of]

    @model_validator(mode="after")
    def _exactly_one(self) -> FloeModel:
        if self.one_of:
            chosen = [name for name in self.one_of if getattr(self, name) is not None]
            if len(chosen) != 1:
                raise ValueError(f"exactly one of {', '.join(self._one_of_aliases())} must be set")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        rules = list(cls.cel_rules)
        if cls.one_of:
            aliases = cls._one_of_aliases()
            count = " + ".join(f"(has(self.{alias}) ? 1 : 0)" for alias in aliases)
            rules.insert(0, cel(f"{count} == 1", f"exactly one of {', '.join(aliases)} must be set"))
        if rules:
            handler.resolve_ref_schema(schema)["x-kubernetes-validations"] = rules
        return schema

    def to_k8s(self) -> dict[str, Any]:
        """JSON form as stored in Kubernetes (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LocalObjectReference(FloeModel):
    """A reference to an object by name in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")
