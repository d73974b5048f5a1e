"""Generate floe's CustomResourceDefinitions from the typed API models.

    python -m floe_operator.crdgen helm/floe/crds          # write helm/floe/crds/<plural>.floe.dev.yaml
    python -m floe_operator.crdgen --check helm/floe/crds  # exit 1 when they differ from the models

The chart's crds/ is the only committed copy; `python -m hack.sync_manifests` (make crds) writes it with
the rest of the generated install files, and the kustomize base references it.

Pydantic's JSON schema is turned into a structural OpenAPI v3 schema: $refs inlined, titles dropped,
optional fields (``anyOf [X, null]``) become plain X (Kubernetes prunes nulls, so an unset optional is
simply absent, which keeps CEL ``has()`` rules exact), free-form maps become
``x-kubernetes-preserve-unknown-fields`` and JSON Schema 2020 exclusive bounds become OpenAPI v3 ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from floe_operator import GROUP, VERSION
from floe_operator.api import KINDS, ResourceKind

HEADER = "# Generated from floe_operator.api by `python -m hack.sync_manifests` (make crds). Do not edit.\n"

_KEY_ORDER = (
    "description",
    "type",
    "format",
    "default",
    "enum",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "required",
    "properties",
    "items",
)


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into a structural Kubernetes schema node."""
    node = dict(node)
    ref = node.pop("$ref", None)
    all_of = node.pop("allOf", None)
    if all_of and len(all_of) == 1 and "$ref" in all_of[0]:
        ref = all_of[0]["$ref"]
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        choices = [choice for choice in any_of if choice != {"type": "null"}]
        if len(choices) == 1:
            ref = choices[0].get("$ref", ref)
            node = {**{k: v for k, v in choices[0].items() if k != "$ref"}, **node}
        else:
            node["anyOf"] = choices  # int-or-string: kept as Kubernetes expects it
    if ref is not None:
        target = structural(defs[ref.rsplit("/", 1)[-1]], defs)
        rules = target.pop("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
        node = {**target, **node}
        if rules:
            node["x-kubernetes-validations"] = rules

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "anyOf":
            out[key] = [structural(choice, defs) for choice in value]
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    return dict(
        sorted(
            out.items(),
            key=lambda item: (_KEY_ORDER.index(item[0]) if item[0] in _KEY_ORDER else len(_KEY_ORDER), item[0]),
        )
    )


def model_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.pop("$defs", {}))


def crd(kind: ResourceKind) -> dict[str, Any]:
    spec = model_schema(kind.spec)
    status = model_schema(kind.status)
    status["description"] = kind.status.__doc__.strip()
    spec_required = bool(spec.get("required"))
    if not spec_required:
        spec["default"] = {}
    root: dict[str, Any] = {
        "description": kind.description,
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if spec_required:
        root["required"] = ["spec"]
    if kind.root_rules:
        root["x-kubernetes-validations"] = list(kind.root_rules)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "floe"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {f"{kind.crd_name}.yaml": HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100) for kind in KINDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m floe_operator.crdgen", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where the CRD files go (helm/floe/crds)")
    parser.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.directory / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            args.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
