#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, once per version.
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from
# k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, kwok from sigs.k8s.io/kwok, helm
# (for the chart's tests) from helm.sh/helm/v4; the Prometheus Operator's CRDs (ServiceMonitor,
# PrometheusRule: the shipped monitoring objects are applied against them) are YAML files of
# github.com/prometheus-operator/prometheus-operator, taken from its module zip, and so are the
# Gateway API's standard-channel CRDs (sigs.k8s.io/gateway-api, applied by up.sh); health-check
# (the GitOps health checks' verdicts, for the tests) is built from cluster/health-check. Both
# k8s.io/kubernetes and etcd carry replace lines that `go install` refuses, so each is built
# from a small wrapper module that pins the staging modules instead. The binaries land in
# $ROLLBACK_OPERATOR_CACHE/bin/<component>-<version>/ so that a second checkout, or a later
# session on the same machine, reuses them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${ROLLBACK_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback-operator}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[build] %s\n' "$*" >&2; }

# wrapper_module DIR MODULE: a fresh module in DIR whose only purpose is to build MODULE's mains.
wrapper_module() {
  rm -rf "$1" && mkdir -p "$1" && cd "$1"
  go mod init "local.build/$2" >/dev/null 2>&1
}

build_kubernetes() {
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION"
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" && -x "$out/kubectl" ]]; then
    return
  fi
  log "kubernetes $KUBERNETES_VERSION (cold build, several minutes)"
  local work="$cache/work/kubernetes-$KUBERNETES_VERSION"
  wrapper_module "$work" kubernetes
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # Every k8s.io module that k8s.io/kubernetes requires at v0.0.0 is a staging module: pin it
  # to the release that matches the Kubernetes version.
  local module
  for module in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod"); do
    go mod edit "-replace=$module=$module@$staging"
  done
  go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >&2
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return
  log "etcd $ETCD_VERSION"
  local work="$cache/work/etcd-$ETCD_VERSION"
  wrapper_module "$work" etcd
  local module
  for module in go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3; do
    go mod edit "-replace=$module=$module@$ETCD_VERSION"
  done
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kwok() {
  local out="$cache/bin/kwok-$KWOK_VERSION"
  [[ -x "$out/kwok" && -d "$out/stages" ]] && return
  log "kwok $KWOK_VERSION"
  local work="$cache/work/kwok-$KWOK_VERSION"
  wrapper_module "$work" kwok
  go get "sigs.k8s.io/kwok@$KWOK_VERSION" >&2
  mkdir -p "$out.tmp/stages"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
  # kwok >= 0.8 ships no default stages: take the ones the local cluster needs from its module.
  local src
  src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
  cp "$src/node/fast/node-initialize.yaml" \
     "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-complete.yaml" "$src/pod/fast/pod-delete.yaml" \
     "$out.tmp/stages/"
  chmod -R u+w "$out.tmp/stages"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_helm() {
  local out="$cache/bin/helm-$HELM_VERSION"
  [[ -x "$out/helm" ]] && return
  log "helm $HELM_VERSION"
  local work="$cache/work/helm-$HELM_VERSION"
  wrapper_module "$work" helm
  go get "helm.sh/helm/v4@$HELM_VERSION" >&2
  mkdir -p "$out.tmp"
  # The version `helm version` prints, as Helm's own Makefile sets it.
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    -o "$out.tmp/helm" helm.sh/helm/v4/cmd/helm
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# Not a binary: the CRDs of the objects manifests/monitoring/ and the chart ship, from the
# module's example/prometheus-operator-crd/ (the same files upstream's bundle.yaml holds).
build_prometheus_operator_crds() {
  local out="$cache/bin/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
  [[ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]] && return
  log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION"
  local dir
  dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["Dir"])')"
  mkdir -p "$out.tmp"
  cp "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$out.tmp/"
  chmod -R u+w "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# repeat_replaces GOMOD: the wrapper module in the current directory repeats the replace and
# exclude lines of GOMOD (a main module's go.mod: `go get` ignores them in a dependency),
# except replacements by a local directory (./...), which the caller handles.
repeat_replaces() {
  local edit
  while read -r edit; do
    go mod edit "$edit"
  done < <(go mod edit -json "$1" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
for r in mod.get("Replace") or []:
    new = r["New"]
    if new["Path"].startswith("./"):
        continue
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    print("-replace=" + old + "=" + new["Path"] + "@" + new["Version"])
for e in mod.get("Exclude") or []:
    print("-exclude=" + e["Path"] + "@" + e["Version"])')
}

# --- GitOps controllers and CRDs (the rollback's suspension of Argo CD, Flux and KEDA is proven
# against them). Flux's kustomize-controller is a real process the tests run against the local
# cluster; its go.mod carries replace lines, so it is built from a wrapper module that repeats
# them. It needs no source-controller: the tests write a GitRepository's status.artifact
# themselves and serve the tarball it points at.
build_kustomize_controller() {
  local out="$cache/bin/kustomize-controller-$KUSTOMIZE_CONTROLLER_VERSION"
  [[ -x "$out/kustomize-controller" ]] && return
  log "kustomize-controller $KUSTOMIZE_CONTROLLER_VERSION (cold build, several minutes)"
  local work="$cache/work/kustomize-controller-$KUSTOMIZE_CONTROLLER_VERSION"
  wrapper_module "$work" kustomize-controller
  local gomod
  gomod="$(go mod download -json "github.com/fluxcd/kustomize-controller@$KUSTOMIZE_CONTROLLER_VERSION" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["GoMod"])')"
  # Repeat upstream's replace lines, except the local ./api one: the api module is required at
  # the same version instead.
  repeat_replaces "$gomod"
  go get "github.com/fluxcd/kustomize-controller@$KUSTOMIZE_CONTROLLER_VERSION" \
    "github.com/fluxcd/kustomize-controller/api@$KUSTOMIZE_CONTROLLER_VERSION" >&2
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/kustomize-controller" github.com/fluxcd/kustomize-controller
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# module_dir MODULE@VERSION: the module's extracted source, downloaded once.
module_dir() {
  go mod download -json "$1" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["Dir"])'
}

# Not binaries: the CRDs of the objects a rollback suspends or pauses, from upstream's modules:
# Flux's Kustomization and its sources (GitRepository; OCIRepository and Bucket, which
# kustomize-controller watches too), Argo CD's Application, KEDA's ScaledObject.
build_gitops_crds() {
  local out="$cache/bin/gitops-crds-$KUSTOMIZE_CONTROLLER_VERSION-$FLUX_SOURCE_CONTROLLER_VERSION-$ARGO_CD_VERSION-$KEDA_VERSION"
  [[ -f "$out/source.toolkit.fluxcd.io_buckets.yaml" ]] && return
  log "GitOps CRDs (Flux, Argo CD, KEDA)"
  mkdir -p "$out.tmp"
  cp "$(module_dir "github.com/fluxcd/kustomize-controller@$KUSTOMIZE_CONTROLLER_VERSION")/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml" \
     "$(module_dir "github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION")"/config/crd/bases/source.toolkit.fluxcd.io_{gitrepositories,ocirepositories,buckets}.yaml \
     "$(module_dir "github.com/argoproj/argo-cd/v3@$ARGO_CD_VERSION")/manifests/crds/application-crd.yaml" \
     "$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")/config/crd/bases/keda.sh_scaledobjects.yaml" \
     "$out.tmp/"
  chmod -R u+w "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# Not binaries: the Gateway API's standard-channel CRDs (HTTPRoute, ReferenceGrant, Gateway,
# ...) and its safe-upgrades admission policy, as released in the module zip of
# sigs.k8s.io/gateway-api (config/crd/standard/). cluster/up.sh applies them to every cluster.
build_gateway_api_crds() {
  local out="$cache/bin/gateway-api-crds-$GATEWAY_API_VERSION"
  [[ -f "$out/gateway.networking.k8s.io_httproutes.yaml" ]] && return
  log "Gateway API CRDs $GATEWAY_API_VERSION (standard channel)"
  mkdir -p "$out.tmp"
  cp "$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"/config/crd/standard/*.yaml "$out.tmp/"
  chmod -R u+w "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The local cluster's proxy (cluster/up.sh --proxy): Traefik, one binary serving both Kubernetes
# providers, Ingress and the Gateway API (HTTPRoute), so that the maintenance page is proven
# where customers see it. Its go.mod replaces three modules by Traefik's forks, which a wrapper
# module repeats (as for kustomize-controller). Upstream's RBAC for each provider, from the
# module's docs, lands beside the binary: proxy.sh grants exactly that to the proxy's user.
build_traefik() {
  local out="$cache/bin/traefik-$TRAEFIK_VERSION"
  [[ -x "$out/traefik" && -f "$out/gateway-rbac.yaml" ]] && return
  log "traefik $TRAEFIK_VERSION (cold build, several minutes)"
  local work="$cache/work/traefik-$TRAEFIK_VERSION"
  wrapper_module "$work" traefik
  local src
  src="$(module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")"
  repeat_replaces "$src/go.mod"
  go get "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" >&2
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$out.tmp/traefik" github.com/traefik/traefik/v3/cmd/traefik
  cp "$src/docs/content/reference/dynamic-configuration/kubernetes-crd-rbac.yml" "$out.tmp/ingress-rbac.yaml"
  cp "$src/docs/content/reference/dynamic-configuration/kubernetes-gateway-rbac.yml" "$out.tmp/gateway-rbac.yaml"
  chmod -R u+w "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The GitOps health checks' verdicts (tests/e2e/test_gitops_status.py): a small program of this
# repository, cluster/health-check, whose go.mod pins the versions of versions.env. Cached by
# those versions and a hash of its sources, so a change to either rebuilds it.
build_health_check() {
  local src="$here/health-check"
  local sum
  sum="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)"
  local out="$cache/bin/health-check-$CLI_UTILS_VERSION-$GOPHER_LUA_VERSION-$CEL_GO_VERSION-$sum"
  [[ -x "$out/health-check" ]] && return
  log "health-check (kstatus $CLI_UTILS_VERSION, gopher-lua $GOPHER_LUA_VERSION, cel-go $CEL_GO_VERSION)"
  local work="$cache/work/health-check-$sum"
  rm -rf "$work" && mkdir -p "$work" && cp "$src/go.mod" "$src/go.sum" "$src/main.go" "$work/"
  cd "$work"
  mkdir -p "$out.tmp"
  GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$out.tmp/health-check" .
  rm -rf "$out" && mv "$out.tmp" "$out"
}

components=("${@:-etcd kwok kubernetes helm prometheus_operator_crds gateway_api_crds health_check}")
mkdir -p "$cache"
for component in ${components[*]}; do
  # One build of a component at a time: a second caller (up.sh --proxy while scripts/test.sh
  # builds the proxy in the background) waits for the first, then finds it cached.
  ( flock 9 && "build_$component" ) 9>"$cache/build-$component.lock"
done
