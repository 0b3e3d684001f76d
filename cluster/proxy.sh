#!/usr/bin/env bash
# Starts the local cluster's proxy (`cluster/up.sh --proxy` runs it; so can a cluster already up):
# Traefik, with both Kubernetes providers, Ingress and the Gateway API, serving one HTTP
# entrypoint on 127.0.0.1:$PROXY_PORT. It is what clients of the local cluster reach, so the
# maintenance page and the restored application are seen in responses, not only in objects.
#
# It watches the API server as its own user (rollback-proxy, a static token), granted exactly
# the ClusterRoles Traefik's documentation ships for the two providers. It serves the Ingresses
# of IngressClass `traefik` and the HTTPRoutes attached to Gateway rollback-proxy/proxy (its
# listener `web` is the entrypoint), and nothing else the cluster holds. Writes
# $CLUSTER_DIR/proxy.json (its URL, classes and Gateway) for the tests and the demo once its
# ping answers and the Gateway is Programmed. Idempotent; `down.sh` stops it by pid.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.env"
source "$here/lib.sh"

proxy_dir="$CLUSTER_DIR/proxy"
ping_url="http://127.0.0.1:$PROXY_PING_PORT/ping"
if is_alive proxy && [[ -f "$CLUSTER_DIR/proxy.json" ]] && curl -sf "$ping_url" >/dev/null 2>&1; then
  exit 0
fi
stop proxy
rm -f "$CLUSTER_DIR/proxy.json"
"$here/build.sh" traefik

token="$(awk -F, '$2 == "rollback-proxy" {print $1}' "$CLUSTER_DIR/pki/tokens.csv")"
if [[ -z "$token" ]]; then
  echo "no rollback-proxy user in $CLUSTER_DIR/pki/tokens.csv: a cluster started before the proxy existed; run cluster/down.sh, then cluster/up.sh --proxy" >&2
  exit 1
fi

# Upstream's ClusterRoles as shipped (their ClusterRoleBindings name upstream's ServiceAccounts:
# left out), bound to the proxy's user.
"$VENV_PYTHON" - "$PROXY_BIN/ingress-rbac.yaml" "$PROXY_BIN/gateway-rbac.yaml" <<'PY' | kubectl_admin apply -f - >/dev/null
import sys
import yaml

roles = [
    doc
    for path in sys.argv[1:]
    for doc in yaml.safe_load_all(open(path))
    if doc and doc["kind"] == "ClusterRole"
]
bindings = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"rollback-proxy-{role['metadata']['name']}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "rollback-proxy"}
        ],
    }
    for role in roles
]
yaml.safe_dump_all(roles + bindings, sys.stdout)
PY

kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: traefik}
spec: {controller: traefik.io/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: rollback-proxy}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: proxy, namespace: rollback-proxy}
spec:
  gatewayClassName: traefik
  listeners:
    - name: web
      protocol: HTTP
      port: $PROXY_PORT
      allowedRoutes: {namespaces: {from: All}}
YAML

mkdir -p "$proxy_dir"
config="$proxy_dir/traefik.yaml"
# The token is in this file (mode 600), not on a command line.
(
  umask 077
  cat >"$config" <<YAML
global: {checkNewVersion: false, sendAnonymousUsage: false}
log: {level: INFO, noColor: true}
accessLog: {filePath: $CLUSTER_DIR/logs/proxy-access.log}
entryPoints:
  web: {address: "127.0.0.1:$PROXY_PORT"}
  traefik: {address: "127.0.0.1:$PROXY_PING_PORT"}
ping: {entryPoint: traefik}
providers:
  # A change of an Ingress or an HTTPRoute is served within a fraction of a second (the
  # default throttle is 2s): what the tests measure is the operator, not this setting.
  providersThrottleDuration: 100ms
  kubernetesIngress:
    endpoint: https://127.0.0.1:$APISERVER_PORT
    token: $token
    certAuthFilePath: $CLUSTER_DIR/pki/ca.crt
    ingressClass: traefik
  kubernetesGateway:
    endpoint: https://127.0.0.1:$APISERVER_PORT
    token: $token
    certAuthFilePath: $CLUSTER_DIR/pki/ca.crt
YAML
)
# Without KUBECONFIG: Traefik prefers it to the endpoint and token above, and the caller's may
# name another cluster.
start proxy env -u KUBECONFIG "$PROXY_BIN/traefik" "--configFile=$config"
wait_for "the proxy's ping ($ping_url)" 60 curl -sf "$ping_url"
kubectl_admin -n rollback-proxy wait --for condition=Programmed --timeout 60s gateway/proxy >/dev/null
cat >"$CLUSTER_DIR/proxy.json" <<JSON
{"url": "http://127.0.0.1:$PROXY_PORT", "ingressClass": "traefik",
 "gateway": {"namespace": "rollback-proxy", "name": "proxy", "listener": "web"}}
JSON
echo "proxy up: http://127.0.0.1:$PROXY_PORT (Ingresses of class traefik, HTTPRoutes of Gateway rollback-proxy/proxy)"
