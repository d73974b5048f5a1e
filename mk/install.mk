# Generated install files: the chart's CRDs and the operator ClusterRole's floe.dev rules (from
# floe_operator.api.KINDS), the kustomize base (from the chart), the Prometheus rules and Argo CD
# health snippets. `make unit` fails when they are stale.
.PHONY: manifests

manifests: setup
	$(PY) -m hack.sync_manifests
