#!/usr/bin/env bash
# `make demo`: the product's main job on a bare machine, every step of the runbook.
#
# Starts the local control plane with its proxy (Traefik, cluster/proxy.sh), installs the CRD,
# the approval policy and the people's roles, starts the operator, deploys the sample of Lawyers
# Hub at a "bad" release, and starts local stand-ins for what production has and a laptop lacks
# (scripts/demo_standins.py): a real PostgreSQL holding the corrupted data and the pre-go-live
# dumps (on a PersistentVolume), a real Prometheus, Cloudflare's purge API, Slack and an on-call
# webhook, Redis and the application's endpoints, and the sample's Services as the proxy reaches
# them (the application answering with the image its pods run; the maintenance page). Then it
# applies examples/rollback.yaml, its production addresses swapped for the stand-ins' (and the
# 30-minute watch cut to 30s), approves as the DBA and as the QA Lead when the run waits for
# them, and shows what happened, with a `curl` through the proxy before, during and after the
# rollback. Everything it started is stopped on exit or Ctrl-C; the cluster stays up. A second
# `make demo` recreates namespace lawyershub and runs again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

step() { printf '\n==> %s\n' "$*"; }
namespace=lawyershub
request=golive-2026-01-10
demo_dir="$CLUSTER_DIR/demo"
python=.venv/bin/python

# Stopped in this order on exit: the stand-ins (they delete their PersistentVolume), then the
# operator.
standins="" operator=""
cleanup() {
  local pid
  for pid in $standins $operator; do kill "$pid" 2>/dev/null || true; done
  for pid in $standins $operator; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "local control plane"
# PostgreSQL and Prometheus for the stand-ins, when missing (silent when all are installed).
scripts/install-system-deps.sh
cluster/up.sh --proxy
# kubectl-rollback (the plugin) is in the venv: on PATH, `kubectl rollback` finds it.
export KUBECONFIG="$CLUSTER_DIR/kubeconfig" PATH="$KUBE_BIN:$PATH:$PWD/.venv/bin"

step "the RollbackRequest CRD, the approval policy and the people's roles (manifests/common)"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl apply --server-side --force-conflicts -f manifests/common/approvals.yaml \
  -f manifests/common/user-roles.yaml
kubectl wait --for=condition=Established crd/rollbackrequests.rollback.lawyershub.io \
  crd/rollbackpolicies.rollback.lawyershub.io --timeout=60s >/dev/null

# show_site WANTED: the `curl` a customer's browser amounts to, through the local proxy, and its
# answer, once that answer holds WANTED (the proxy follows the Ingress a moment after it
# changes; 10s at most, then what it answers is shown all the same).
site_url="http://127.0.0.1:$PROXY_PORT/" site_host=lawyershub.example
show_site() {
  local answer=""
  for _ in $(seq 50); do
    answer="$(curl -s -m 5 -H "Host: $site_host" "$site_url" || true)"
    [[ "$answer" == *"$1"* ]] && break
    sleep 0.2
  done
  echo "\$ curl -s -H 'Host: $site_host' $site_url"
  echo "$answer"
}

step "the operator"
log="$CLUSTER_DIR/logs/operator-demo.log"
"$python" -m rollback_operator --namespace "$namespace" --liveness= --metrics= >"$log" 2>&1 &
operator=$!
echo "running (pid $operator), log in $log"
# Started first: a request left unfinished by an interrupted demo holds a finalizer that only
# the operator releases.

step "the sample application (namespace $namespace), at the bad release"
# A previous demo left its rolled-back sample behind: start again from go-live. The request
# goes first, while the operator runs, so that it releases its finalizer.
kubectl -n "$namespace" delete rollbackrequest "$request" --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
kubectl delete namespace "$namespace" --ignore-not-found --wait=true --timeout=120s >/dev/null
kubectl apply --server-side -f examples/lawyershub.yaml >/dev/null
kubectl -n "$namespace" create rolebinding approvers --clusterrole=rollback-approver \
  --group=dba --group=qa
for d in frontend backend maintenance-page; do
  kubectl -n "$namespace" rollout status "deployment/$d" --timeout=120s >/dev/null
done
kubectl -n "$namespace" get deployments -o wide
kubectl -n "$namespace" get ingress lawyershub

step "local stand-ins for production's PostgreSQL, Prometheus, Cloudflare, Slack, Redis, ..."
"$python" -m scripts.demo_standins serve --namespace "$namespace" --dir "$demo_dir" --proxy &
standins=$!
for _ in $(seq 600); do
  grep -qs "\"pid\": $standins," "$demo_dir/state.json" && break
  kill -0 "$standins" 2>/dev/null || { echo "the stand-ins failed to start" >&2; exit 1; }
  sleep 0.2
done
grep -qs "\"pid\": $standins," "$demo_dir/state.json" || { echo "the stand-ins did not start within 120s" >&2; exit 1; }

step "the site, as a customer gets it through the proxy: the bad release"
# The local proxy serves the Ingresses of its IngressClass: the sample's is given to it (as a
# cluster's default IngressClass would have done), once its Services are the stand-ins'.
echo "\$ kubectl -n $namespace patch ingress lawyershub --type merge -p '{\"spec\":{\"ingressClassName\":\"traefik\"}}'"
kubectl -n "$namespace" patch ingress lawyershub --type merge -p '{"spec":{"ingressClassName":"traefik"}}'
show_site 2026.01.10-golive

step "examples/rollback.yaml, production's addresses swapped for the stand-ins'"
echo "The request is the example as it is, but for these fields (the watch lasts 30s, every 5s,"
echo "instead of 30m every 30s: a demo cannot wait half an hour):"
local_request="${demo_dir#"$PWD"/}/rollback.yaml"
"$python" -m scripts.demo_standins transform --dir "$demo_dir" examples/rollback.yaml >"$local_request"

step "kubectl apply -f $local_request"
kubectl apply -f "$local_request"
outcome=0
"$python" scripts/follow_request.py -n "$namespace" "$request" --timeout 300 \
  --approve RestoreDatabase=dba-alice:dba --approve Verify=qa-quinn:qa \
  --site "$site_url" --host "$site_host" || outcome=$?

step "the site through the proxy, after the rollback"
show_site stable-last-known

step "what the stand-ins received"
"$python" -m scripts.demo_standins show --dir "$demo_dir"

step "kubectl rollback status $request -n $namespace"
kubectl rollback status "$request" -n "$namespace" || true

step "the post-mortem: kubectl rollback report $request -n $namespace (its start)"
report="$(kubectl rollback report "$request" -n "$namespace")"
sed -n 1,24p <<<"$report"
echo "... ($(wc -l <<<"$report") lines)"
echo
echo "The cluster stays up: export KUBECONFIG=$KUBECONFIG (make cluster-down to stop it)."
echo "The stand-ins stop now: the rolled-back sample stays in namespace $namespace."
exit "$outcome"
