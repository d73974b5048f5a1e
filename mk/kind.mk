# kind quick start (needs Docker and kind): a local cluster, floe's images loaded into it, floe installed.
#   make kind-up deploy      then: kubectl apply -f manifests/examples/finetune.yaml
#   make kind-down

KIND          ?= kind
KIND_CLUSTER  ?= floe
FLOE_VERSION  ?= 0.1.0
FLOE_REGISTRY ?= ghcr.io/floe-dev
OPERATOR_IMAGE ?= $(FLOE_REGISTRY)/floe-operator:$(FLOE_VERSION)
TRAINER_IMAGE  ?= $(FLOE_REGISTRY)/floe-trainer:$(FLOE_VERSION)
FLOE_NAMESPACE ?= floe-system
# helm from PATH, else built at a pinned version into the tools cache.
HELM ?= $(shell command -v helm 2>/dev/null || $(PY) -m hack.floe_tools helm)

.PHONY: kind-up kind-load deploy undeploy kind-down

kind-up:
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config manifests/kind/kind-config.yaml
	kubectl config use-context kind-$(KIND_CLUSTER)

# Build the operator and trainer images (from the repository root: both need contract/) and load them into the
# kind nodes (no registry needed).
kind-load:
	docker build -f operator/Dockerfile -t $(OPERATOR_IMAGE) .
	docker build -f trainer-image/Dockerfile -t $(TRAINER_IMAGE) --target trainer .
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(TRAINER_IMAGE)

deploy: setup kind-load
	kubectl create namespace $(FLOE_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	kubectl label namespace $(FLOE_NAMESPACE) pod-security.kubernetes.io/enforce=restricted --overwrite
	$(HELM) upgrade --install floe helm/floe --namespace $(FLOE_NAMESPACE) \
		--set image.tag=$(FLOE_VERSION) --wait --timeout 5m
	kubectl -n $(FLOE_NAMESPACE) rollout status deployment/floe

undeploy:
	$(HELM) uninstall floe --namespace $(FLOE_NAMESPACE)

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
