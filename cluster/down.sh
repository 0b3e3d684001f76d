#!/usr/bin/env bash
# Stops every component that up.sh started, by the pids it recorded, and removes the state.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.env"
source "$here/lib.sh"

[[ -d "$CLUSTER_DIR" ]] || { echo "no cluster state in $CLUSTER_DIR"; exit 0; }
# Stop in the reverse order of start, so that nothing reconnects to a half-stopped cluster. The
# proxy goes first, then the job runner: it kills its processes and reports their pods while the
# API is up.
for component in proxy job-runner kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$component"
done
rm -rf "$CLUSTER_DIR"
echo "cluster down"
