#!/usr/bin/env bash
# Starts the local control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (one fake node) and the job runner (Job pods run as real processes,
# see cluster/README.md). Builds whatever binary is missing first.
#
# Idempotent: when every component recorded in $CLUSTER_DIR is alive and the API server is
# ready, it does nothing and exits 0. Writes $CLUSTER_DIR/kubeconfig (admin) and logs to
# $CLUSTER_DIR/logs/. `down.sh` stops exactly the processes started here, by pid.
#
# `up.sh --proxy` (or ROLLBACK_CLUSTER_PROXY=1) also starts the proxy (cluster/proxy.sh):
# Traefik serving Ingresses and HTTPRoutes on 127.0.0.1:$PROXY_PORT; on a cluster already up,
# it starts only that.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.env"
source "$here/lib.sh"

proxy="${ROLLBACK_CLUSTER_PROXY:-0}"
for arg in "$@"; do
  case "$arg" in
    --proxy) proxy=1 ;;
    *) echo "usage: $0 [--proxy]" >&2; exit 2 ;;
  esac
done

if cluster_is_up; then
  [[ "$proxy" == 1 ]] && "$here/proxy.sh"
  echo "cluster already up: $CLUSTER_DIR/kubeconfig"
  exit 0
fi
if [[ ! -x "$VENV_PYTHON" ]]; then
  echo "no $VENV_PYTHON: the job runner needs the project's venv; run \`make venv\` (or \`make cluster\`)" >&2
  exit 1
fi
# Whatever is left of an earlier cluster that died is stopped and cleared, not reused.
"$here/down.sh" >/dev/null 2>&1 || true

"$here/build.sh"

mkdir -p "$CLUSTER_DIR"/{pki,logs,pids,etcd}
pki="$CLUSTER_DIR/pki"

# --- credentials: a CA, the API server's serving certificate, the service-account key pair,
# and static bearer tokens (admin in system:masters, plus users the tests act as).
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=local-cluster-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:%s\n' \
  "$SERVICE_IP" >"$pki/apiserver.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
admin_token="$(openssl rand -hex 24)"
{
  echo "$admin_token,admin,admin-uid,system:masters"
  # Test users: a DBA, a QA lead and an engineer with no group, for admission and RBAC tests.
  echo "$(openssl rand -hex 24),dba-alice,dba-alice-uid,dba"
  echo "$(openssl rand -hex 24),qa-quinn,qa-quinn-uid,qa"
  echo "$(openssl rand -hex 24),dev-dan,dev-dan-uid,developers"
  # The proxy (proxy.sh), whether started now or later: its own user, never the admin.
  echo "$(openssl rand -hex 24),rollback-proxy,rollback-proxy-uid"
} >"$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

write_kubeconfig "$CLUSTER_DIR/kubeconfig" "$admin_token"

# --- etcd
start etcd "$ETCD_BIN" \
  --name local --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for "etcd" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --endpoint-reconciler-type none \
  --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --token-auth-file "$pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --disable-admission-plugins ServiceAccount \
  --allow-privileged=true --profiling=false
wait_for "kube-apiserver /readyz" 120 curl -sf --cacert "$pki/ca.crt" \
  -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$APISERVER_PORT/readyz"

# --- kube-controller-manager and kube-scheduler, authenticated as admin
start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
  --kubeconfig "$CLUSTER_DIR/kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach,-ttl' \
  --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 --concurrent-job-syncs 20 \
  --kube-api-qps 400 --kube-api-burst 800 --profiling=false
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
  --kubeconfig "$CLUSTER_DIR/kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --kube-api-qps 400 --kube-api-burst 800 --profiling=false

# --- kwok: one fake node, pods become Ready. Job pods are left to the job runner below.
kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: $NODE_NAME, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
YAML
# The repository's stages (cluster/kwok-stages/) replace the module's stages of the same name.
stage_args=()
for stage in "$KWOK_DIR"/stages/*.yaml; do
  override="$here/kwok-stages/$(basename "$stage")"
  [[ -f "$override" ]] && stage="$override"
  stage_args+=(--config "$stage")
done
start kwok "$KWOK_DIR/kwok" \
  --kubeconfig "$CLUSTER_DIR/kubeconfig" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --server-address "127.0.0.1:$KWOK_PORT" --cidr 10.244.0.0/16 --node-ip 127.0.0.1 \
  "${stage_args[@]}"

# --- the job runner: runs the containers of Job pods as local processes, reports their status.
# A package of this repository (cluster/job_runner/), run from its root whatever the caller's cwd.
start job-runner env PYTHONPATH="$repo_root" "$VENV_PYTHON" -m cluster.job_runner \
  --kubeconfig "$CLUSTER_DIR/kubeconfig" --state-dir "$JOB_RUNNER_DIR"

# The node-lifecycle controller is off: under load the fake node's heartbeats can lag, and
# that controller would then mark every pod NotReady for good (kwok only readies Pending
# pods). Without it, the not-ready taint set at registration is lifted here, once Ready.
wait_for "node $NODE_NAME Ready" 120 node_reports_ready
kubectl_admin taint nodes "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
wait_for "node $NODE_NAME schedulable" 30 node_is_ready
wait_for "the default ServiceAccount" 120 kubectl_admin -n default get serviceaccount default
wait_for "the job runner" 60 job_runner_settled
if ! is_alive job-runner; then
  echo "the job runner exited; from $CLUSTER_DIR/logs/job-runner.log:" >&2
  tail -n 5 "$CLUSTER_DIR/logs/job-runner.log" >&2
  exit 1
fi
# --- the Gateway API's standard-channel CRDs (HTTPRoute, ReferenceGrant, ...): every local
# cluster has them, as a cluster with a Gateway controller would. Server-side apply: the
# HTTPRoute CRD is larger than the client-side last-applied annotation allows.
gateway_api_crds="$cache/bin/gateway-api-crds-$GATEWAY_API_VERSION"
kubectl_admin apply --server-side --force-conflicts -f "$gateway_api_crds" >/dev/null
# shellcheck disable=SC2046 # one argument per CRD name
kubectl_admin wait --for condition=Established --timeout 60s \
  $(kubectl_admin get crd -o name | grep '\.gateway\.networking\.k8s\.io$') >/dev/null
# --- the proxy, when asked for (after the Gateway API's CRDs: it serves HTTPRoutes too)
[[ "$proxy" == 1 ]] && "$here/proxy.sh"
echo "cluster up: export KUBECONFIG=$CLUSTER_DIR/kubeconfig"
