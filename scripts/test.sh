#!/usr/bin/env bash
# `make test`: lint, unit tests, then e2e tests against the local control plane.
#
# The cluster is started if it is not up and, in that case, stopped again at the end, so the
# machine is left as it was found. With ROLLBACK_E2E_EXISTING_CLUSTER=1 the e2e tests use the
# current KUBECONFIG instead (kind, k3d, ...) and the local control plane is not touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

make --no-print-directory lint
.venv/bin/pytest -q tests/unit

started_here=0
if [[ "${ROLLBACK_E2E_EXISTING_CLUSTER:-0}" != 1 ]]; then
  if ! cluster_is_up; then
    started_here=1
    trap 'cluster/down.sh >/dev/null' EXIT
  fi
  cluster/up.sh
  export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
  export PATH="$KUBE_BIN:$PATH"
fi
# Helm and the Prometheus Operator's CRDs for the chart's tests (up.sh builds them too, but
# not when the cluster was already up or is another one); cached, so usually a no-op.
cluster/build.sh helm prometheus_operator_crds
.venv/bin/pytest -q tests/e2e "$@"
