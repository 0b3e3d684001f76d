#!/usr/bin/env bash
# `make demo`: the product's main job on a bare machine. Starts the local control plane,
# installs the CRD, deploys a sample of the Lawyers Hub shape at a "bad" release, starts the
# operator, applies examples/rollback.yaml and follows the run to its end. Idempotent: a
# second `make demo` recreates the sample at the bad release and runs the rollback again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

step() { printf '\n==> %s\n' "$*"; }

step "local control plane"
cluster/up.sh
export KUBECONFIG="$CLUSTER_DIR/kubeconfig" PATH="$KUBE_BIN:$PATH"

step "RollbackRequest CRD"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/rollbackrequests.rollback.lawyershub.io --timeout=60s >/dev/null

step "the operator"
log="$CLUSTER_DIR/logs/operator-demo.log"
.venv/bin/python -m rollback_operator --namespace lawyershub --liveness= --metrics= >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null; wait $operator 2>/dev/null || true' EXIT
echo "running (pid $operator), log in $log"
# Started first: a request left unfinished by an interrupted demo holds a finalizer that only
# the operator releases.

step "the sample application (namespace lawyershub), at the bad release"
# A previous demo left its rolled-back sample behind: start again from go-live. The request
# goes first, while the operator runs, so that it releases its finalizer.
kubectl -n lawyershub delete rollbackrequest golive-2026-01-10 --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
kubectl delete namespace lawyershub --ignore-not-found --wait=true --timeout=120s >/dev/null
kubectl apply --server-side -f examples/lawyershub.yaml >/dev/null
for d in frontend backend maintenance-page; do kubectl -n lawyershub rollout status "deployment/$d" --timeout=120s >/dev/null; done
kubectl -n lawyershub get deployments -o wide
kubectl -n lawyershub get ingress lawyershub

step "kubectl apply -f examples/rollback.yaml"
kubectl apply -f examples/rollback.yaml
.venv/bin/python scripts/follow_request.py -n lawyershub golive-2026-01-10

step "kubectl get rbr -n lawyershub -o wide"
kubectl -n lawyershub get rbr -o wide
kubectl -n lawyershub get deployments -o wide
echo
echo "The cluster stays up: export KUBECONFIG=$KUBECONFIG (make cluster-down to stop it)."
