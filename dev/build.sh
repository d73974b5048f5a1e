#!/usr/bin/env bash
# Builds the control-plane binaries the tests run (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from source with Go, into a cache outside the repository keyed by the
# pinned module versions. Prints the bin directory. A warm cache makes this a no-op.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"
key="$(cat "$tools"/*/go.mod "$tools"/*/go.sum | sha256sum | cut -c1-12)"
k8s="$(awk '/^require k8s.io\/kubernetes/{print $3}' "$tools/kubernetes/go.mod")"
bin="${FLOE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/floe/cluster}/$k8s-$key/bin"
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

stages="$bin/../kwok-stages.yaml"
missing=()
for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ] && [ -f "$stages" ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the test control plane" >&2; exit 1; }
mkdir -p "$bin"
build() {  # module dir, output dir, packages...
  local dir="$1" out="$2"; shift 2
  (cd "$tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/" "$@") >&2
}
start=$SECONDS
tmp="$(mktemp -d "$bin/../build.XXXX")"
build kubernetes "$tmp" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
build etcd "$tmp" go.etcd.io/etcd/server/v3
mv "$tmp/server" "$tmp/etcd"  # go names a /v3 module binary after its parent element
build kwok "$tmp" sigs.k8s.io/kwok/cmd/kwok
mv "$tmp"/* "$bin/" && rmdir "$tmp"

# kwok's own lifecycle stages: nodes become Ready and keep a lease; pods run, complete (after the
# delay in their annotations) or fail (when labelled so), and are deleted.
kwok_dir="$(cd "$tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/general/pod-create.yaml pod/general/pod-init-container-running.yaml \
         pod/general/pod-init-container-completed.yaml pod/general/pod-ready.yaml \
         pod/general/pod-complete.yaml pod/general/pod-delete.yaml \
         pod/chaos/pod-container-running-failed.yaml; do
  cat "$kwok_dir/kustomize/stage/$f"; echo "---"
done > "$stages"
echo "build.sh: built ${missing[*]} in $((SECONDS - start))s" >&2
echo "$bin"
