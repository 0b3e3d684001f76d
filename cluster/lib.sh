# Shared by up.sh, down.sh and status checks: paths, ports, and process bookkeeping.
# Sourced after versions.env.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$repo_root/.cluster}"
cache="${ROLLBACK_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback-operator}"
KUBE_BIN="$cache/bin/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$cache/bin/etcd-$ETCD_VERSION/etcd"
KWOK_DIR="$cache/bin/kwok-$KWOK_VERSION"
VENV_PYTHON="$repo_root/.venv/bin/python"
# The job runner's pod files and container logs (<namespace>_<pod>_<container>.log in logs/).
JOB_RUNNER_DIR="$CLUSTER_DIR/job-runner"
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
CONTROLLER_MANAGER_PORT="${CONTROLLER_MANAGER_PORT:-16257}"
SCHEDULER_PORT="${SCHEDULER_PORT:-16259}"
KWOK_PORT="${KWOK_PORT:-16250}"
# The proxy (up.sh --proxy): its one HTTP entrypoint, and its ping endpoint.
PROXY_PORT="${PROXY_PORT:-16080}"
PROXY_PING_PORT="${PROXY_PING_PORT:-16081}"
PROXY_BIN="$cache/bin/traefik-$TRAEFIK_VERSION"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
NODE_NAME="kwok-node-0"

kubectl_admin() { "$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_DIR/kubeconfig" "$@"; }

# start NAME BINARY ARGS...: runs a component in its own session, recording its pid.
start() {
  local name="$1"; shift
  setsid "$@" >"$CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_DIR/pids/$name"
}

# stop NAME: SIGTERM the recorded pid, SIGKILL it if it lingers.
stop() {
  local pidfile="$CLUSTER_DIR/pids/$1" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

is_alive() { [[ -f "$CLUSTER_DIR/pids/$1" ]] && kill -0 "$(cat "$CLUSTER_DIR/pids/$1")" 2>/dev/null; }

cluster_is_up() {
  local component
  for component in etcd kube-apiserver kube-controller-manager kube-scheduler kwok job-runner; do
    is_alive "$component" || return 1
  done
  kubectl_admin get --raw /readyz >/dev/null 2>&1
}

node_reports_ready() {
  [[ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# Ready, and schedulable: the not-ready taint set at registration has been lifted.
node_is_ready() {
  local state
  state="$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}' 2>/dev/null)"
  [[ "$state" == "True " ]]
}

# Ready (its first list went through), or gone: up.sh then says which.
job_runner_settled() { [[ -f "$JOB_RUNNER_DIR/ready" ]] || ! is_alive job-runner; }

# wait_for WHAT SECONDS COMMAND...: retries COMMAND until it succeeds or the deadline passes.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${seconds}s waiting for $what; logs in $CLUSTER_DIR/logs/" >&2
      return 1
    fi
    sleep 0.2
  done
}

write_kubeconfig() {
  local path="$1" token="$2"
  cat >"$path" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $CLUSTER_DIR/pki/ca.crt
users:
- name: admin
  user: {token: $token}
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KCFG
  chmod 600 "$path"
}
