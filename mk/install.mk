# Generated install files: the chart's CRDs (from crds/), the kustomize base (from the chart),
# the Prometheus rules and Argo CD health snippets. `make unit` fails when they are stale.
.PHONY: manifests

manifests: setup
	$(PY) -m hack.sync_manifests
