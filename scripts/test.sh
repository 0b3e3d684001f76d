#!/usr/bin/env bash
# `make test`: lint, unit tests (also against the lowest dependency versions allowed), the
# plugin installed alone, the image (`make image`), then e2e tests against the local control
# plane, the image's own included (tests/e2e/test_image.py). Arguments go to pytest.
# `scripts/test.sh --e2e PATH...` runs only those e2e tests (`make image-test`).
#
# The cluster is started if it is not up and, in that case, stopped again at the end, so the
# machine is left as it was found. With ROLLBACK_E2E_EXISTING_CLUSTER=1 the e2e tests use the
# current KUBECONFIG instead (kind, k3d, ...) and the local control plane is not touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

# Flux's kustomize-controller, which tests/e2e/test_gitops.py runs, takes minutes to build cold
# (about 400 CPU-seconds, module downloads included), and so does the proxy (Traefik): they build
# in the background while lint, the unit tests and the image run, and the e2e tests wait for
# them (up.sh --proxy waits for the proxy's build). Cached: a no-op afterwards.
gitops_log="$(mktemp)"
cluster/build.sh traefik kustomize_controller gitops_crds >"$gitops_log" 2>&1 &
gitops_build=$!

e2e=(tests/e2e)
if [[ "${1:-}" == --e2e ]]; then
  shift
  e2e=()
else
  make --no-print-directory lint
  .venv/bin/pytest -q tests/unit
  make --no-print-directory test-lowest test-packaging
  scripts/image.sh
fi

started_here=0
if [[ "${ROLLBACK_E2E_EXISTING_CLUSTER:-0}" != 1 ]]; then
  if ! cluster_is_up; then
    started_here=1
    trap 'cluster/down.sh >/dev/null' EXIT
  fi
  cluster/up.sh --proxy
  export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
  export PATH="$KUBE_BIN:$PATH"
fi
# Helm and the Prometheus Operator's CRDs for the chart's tests, health-check for the GitOps
# ones (up.sh builds them too, but not when the cluster was already up or is another one);
# cached, so usually a no-op.
cluster/build.sh helm prometheus_operator_crds health_check
if ! wait "$gitops_build"; then
  cat "$gitops_log" >&2
  echo "cluster/build.sh traefik kustomize_controller gitops_crds failed" >&2
  exit 1
fi
rm -f "$gitops_log"
.venv/bin/pytest -q "${e2e[@]}" "$@"
