"""Copies that must equal their source: chart CRDs, the kustomize base, rules and Argo CD snippets."""

from hack import sync_manifests


def test_generated_files_are_up_to_date():
    stale = sync_manifests.stale(sync_manifests.expected_files())
    assert not stale, "out of date (run `python -m hack.sync_manifests`): " + ", ".join(
        str(p.relative_to(sync_manifests.REPO)) for p in stale
    )
