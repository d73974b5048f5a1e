"""Regenerate the copies that must equal their source, or check them (--check).

- helm/floe/crds/**            <- the CRDs generated from floe_operator.api.KINDS, and their kustomization
- helm/floe/files/operator-clusterrole.yaml, its floe.dev rules <- floe_operator.api.KINDS
- helm/floe/Chart.yaml, its artifacthub.io/crds annotation <- floe_operator.api.KINDS
- manifests/base/**            <- `helm template` of the chart with default values
- manifests/prometheus/floe-rules.yaml <- helm/floe/files/prometheus-rules.yaml
- manifests/gitops/argocd-cm-health.yaml <- helm/floe/files/argocd/health.lua for each of KINDS

    python -m hack.sync_manifests          # write
    python -m hack.sync_manifests --check  # exit 1 and list stale files
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from floe_operator import VERSION
from floe_operator.api import KINDS

from hack.chart import BASE, CHART, REPO, crd_files, render_base_files

OPERATOR_CLUSTERROLE = CHART / "files" / "operator-clusterrole.yaml"
CHART_YAML = CHART / "Chart.yaml"
BEGIN_GENERATED = "  # BEGIN generated from floe_operator.api.KINDS by hack/sync_manifests.py; do not edit.\n"
END_GENERATED = "  # END generated\n"


class MissingMarkers(ValueError):
    """A file with a generated block lost one of its markers."""


def operator_floe_rules() -> str:
    """The operator ClusterRole's rules on floe's own kinds, their status and their finalizers."""

    def rule(suffix: str, verbs: str) -> str:
        resources = ", ".join(kind.plural + suffix for kind in KINDS)
        return f"  - apiGroups: [floe.dev]\n    resources: [{resources}]\n    verbs: [{verbs}]\n"

    return (
        rule("", "get, list, watch, patch")
        + rule("/status", "get, patch")
        + "  # blockOwnerDeletion on owned objects needs update on the owner's finalizers.\n"
        + rule("/finalizers", "update")
    )


def artifacthub_crds_annotation() -> str:
    """Chart.yaml's list of the chart's CRDs for Artifact Hub, with the descriptions `kubectl explain` shows."""
    crds = [{"kind": kind.kind, "version": VERSION, "description": kind.description} for kind in KINDS]
    return "  artifacthub.io/crds: |\n" + _indent(yaml.safe_dump(crds, sort_keys=False, width=1000), 4)


def with_generated_block(path: Path, block: str) -> str:
    """`path`'s text with the part between the markers replaced by `block`."""
    text = path.read_text()
    if text.count(BEGIN_GENERATED) != 1 or text.count(END_GENERATED) != 1:
        raise MissingMarkers(
            f"{path.relative_to(REPO)} needs one {BEGIN_GENERATED.strip()!r} and one {END_GENERATED.strip()!r}"
        )
    head, rest = text.split(BEGIN_GENERATED)
    _, tail = rest.split(END_GENERATED)
    return head + BEGIN_GENERATED + block + END_GENERATED + tail


def argocd_cm_snippet() -> str:
    lua = (CHART / "files" / "argocd" / "health.lua").read_text()
    body = "".join(f"  resource.customizations.health.floe.dev_{kind.kind}: |\n" + _indent(lua, 4) for kind in KINDS)
    return (
        "# Argo CD health checks for floe's custom resources. Merge into the argocd-cm ConfigMap\n"
        "# (namespace argocd). Generated from helm/floe/files/argocd/health.lua; do not edit.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n"
        "  labels:\n    app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\n"
        "data:\n" + body
    )


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def expected_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for name, text in crd_files().items():
        files[CHART / "crds" / name] = text
    files[OPERATOR_CLUSTERROLE] = with_generated_block(OPERATOR_CLUSTERROLE, operator_floe_rules())
    files[CHART_YAML] = with_generated_block(CHART_YAML, artifacthub_crds_annotation())
    for name, text in render_base_files().items():
        files[BASE / name] = text
    rules = (CHART / "files" / "prometheus-rules.yaml").read_text()
    files[REPO / "manifests" / "prometheus" / "floe-rules.yaml"] = (
        "# Generated from helm/floe/files/prometheus-rules.yaml; do not edit.\n" + rules
    )
    files[REPO / "manifests" / "gitops" / "argocd-cm-health.yaml"] = argocd_cm_snippet()
    return files


def unexpected_files(expected: dict[Path, str]) -> list[Path]:
    """Generated directories' files that no source produces any more (a deleted CRD, say)."""
    present = list((CHART / "crds").glob("*.yaml"))
    present += [p for p in BASE.rglob("*") if p.is_file()]
    return sorted(p for p in present if p not in expected)


def stale(expected: dict[Path, str]) -> list[Path]:
    wrong = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    return sorted(wrong + unexpected_files(expected))


def main(argv: list[str]) -> int:
    expected = expected_files()
    if "--check" in argv:
        out_of_date = stale(expected)
        for path in out_of_date:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        if out_of_date:
            print("run: python -m hack.sync_manifests", file=sys.stderr)
        return 1 if out_of_date else 0
    for path in unexpected_files(expected):
        path.unlink()
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
