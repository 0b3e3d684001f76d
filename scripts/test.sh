#!/usr/bin/env bash
# `make test`: lint, unit tests (also against the lowest dependency versions allowed), the
# plugin installed alone, the image (`make image`), then e2e tests against the local control
# plane, the image's own included (tests/e2e/test_image.py). Arguments go to pytest.
# `scripts/test.sh --e2e PATH...` runs only those e2e tests (`make image-test`).
#
# The e2e tier runs in two phases: the tests not marked `serial` on ROLLBACK_E2E_WORKERS
# processes at once (pytest-xdist, default 4: the tests mostly wait on the API server, Jobs
# and the operator, not on the CPU), then the `serial` ones alone (they change what every test
# shares: see tests/e2e/conftest.py). Both phases run; either failing fails the run.
#
# The cluster is started if it is not up and, in that case, stopped again at the end, so the
# machine is left as it was found. With ROLLBACK_E2E_EXISTING_CLUSTER=1 the e2e tests use the
# current KUBECONFIG instead (kind, k3d, ...) and the local control plane is not touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

# Every Go component the e2e tests need is built from the start, in the background, while the
# venv, lint, the unit tests and the image run (cold, the builds take most of a CI run: the
# Kubernetes binaries alone are many CPU-minutes, the proxy (Traefik) about 700 CPU-seconds,
# Flux's kustomize-controller about 400). Kubernetes builds in a job of its own, so that it
# does not wait behind the others; concurrent `go` commands share the module and build caches safely (the go command
# locks them). Each component is cached by version: warm, both jobs are no-ops.
build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT
local_cluster=1
if [[ "${ROLLBACK_E2E_EXISTING_CLUSTER:-0}" == 1 ]]; then
  local_cluster=0
fi
build_jobs=()
start_build() {
  local name="$1"; shift
  cluster/build.sh "$@" >"$build_dir/$name.log" 2>&1 &
  build_jobs+=("$name:$!")
}
if ((local_cluster)); then
  start_build kubernetes kubernetes
  start_build others etcd kwok helm prometheus_operator_crds gateway_api_crds health_check traefik \
    kustomize_controller gitops_crds
else
  start_build others helm prometheus_operator_crds health_check kustomize_controller gitops_crds
fi
# wait_for_builds: each job's outcome; a failed one fails the run with its log.
wait_for_builds() {
  local job name pid failed=0
  for job in "${build_jobs[@]}"; do
    name="${job%%:*}" pid="${job#*:}"
    if wait "$pid"; then
      grep '^\[build\]' "$build_dir/$name.log" || true
    else
      cat "$build_dir/$name.log" >&2
      echo "cluster/build.sh ($name) failed: its log is above" >&2
      failed=1
    fi
  done
  return "$failed"
}

make --no-print-directory venv
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
wait_for_builds

started_here=0
if ((local_cluster)); then
  if ! cluster_is_up; then
    started_here=1
    trap 'rm -rf "$build_dir"; cluster/down.sh >/dev/null' EXIT
  fi
  cluster/up.sh --proxy
  export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
  export PATH="$KUBE_BIN:$PATH"
fi

# run_phase PHASE PYTEST-ARGS...: pytest's exit code, 5 (no test in this phase) counted apart.
run_phase() {
  local phase="$1" started=$SECONDS rc=0; shift
  echo "e2e, $phase phase:"
  ROLLBACK_E2E_PHASE="$phase" .venv/bin/pytest "$@" || rc=$?
  if ((rc == 5)); then
    echo "e2e, $phase phase: no test of the selection is in it"
  else
    echo "e2e, $phase phase: exit $rc after $((SECONDS - started)) s"
  fi
  return "$rc"
}
workers="${ROLLBACK_E2E_WORKERS:-4}"
parallel=0 serial=0
run_phase parallel -q -n "$workers" --dist worksteal "${e2e[@]}" "$@" || parallel=$?
run_phase serial -q "${e2e[@]}" "$@" || serial=$?
if ((parallel == 5 && serial == 5)); then
  exit 5  # no test selected at all
fi
for rc in "$parallel" "$serial"; do
  if ((rc != 0 && rc != 5)); then
    exit "$rc"
  fi
done
