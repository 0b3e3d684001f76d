#!/usr/bin/env bash
# `make bench`: the benchmarks against the local control plane and its proxy, then BENCHMARKS.md.
#
# Starts the cluster if it is not up (and, in that case, stops it again at the end, as
# `make test` does; BENCH_KEEP_CLUSTER=1 leaves it running). The benchmarks run one after the
# other, never together, each with its own operator process and namespaces, so that one's
# load is not in another's figures. Raw results (JSON) and operator logs go to bench/results/
# (ignored by git), replaced by each run. Run sizes: BENCH_TTM_RUNS (20), BENCH_FULL_RUNS (5),
# BENCH_SCALE (100), BENCH_HISTORY (1000), BENCH_PROXY_RUNS (20). Each figure is printed beside
# the previous page's ("was X", from bench/previous.json), which this run's figures then replace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source cluster/versions.env
source cluster/lib.sh

started_here=0
if ! cluster_is_up; then
  started_here=1
  if [[ "${BENCH_KEEP_CLUSTER:-0}" != 1 ]]; then
    trap 'cluster/down.sh >/dev/null' EXIT
  fi
fi
cluster/up.sh --proxy
export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
export PATH="$KUBE_BIN:$PATH"
# Quiet unless it fails (a CRD created without kubectl makes apply print a harmless warning).
kubectl apply -f crds/ >/dev/null 2>&1 || kubectl apply -f crds/
kubectl wait --for condition=Established --timeout=60s -f crds/ >/dev/null

results=bench/results
rm -rf "$results"
mkdir -p "$results"
echo "results and operator logs: $results/"
python=.venv/bin/python

# Leftovers of an interrupted earlier run (found by their label) would load the cluster.
"$python" -c 'from bench.api import Api
from bench.app import remove_leftovers
left = remove_leftovers(Api.from_kubeconfig())
if left:
    print(f"removed {len(left)} namespace(s) left by an earlier run")'

"$python" -m bench.time_to_maintenance --runs "${BENCH_TTM_RUNS:-20}" \
  --out "$results/time_to_maintenance.json" --logs "$results"
"$python" -m bench.full_run --runs "${BENCH_FULL_RUNS:-5}" \
  --out "$results/full_run.json" --logs "$results"
"$python" -m bench.scale --requests "${BENCH_SCALE:-100}" \
  --out "$results/scale.json" --logs "$results"
"$python" -m bench.data_plane --runs "${BENCH_PROXY_RUNS:-20}" \
  --out "$results/data_plane.json" --logs "$results"
"$python" -m bench.history --finished "${BENCH_HISTORY:-1000}" \
  --out "$results/history.json" --logs "$results"

versions="local control plane: kube-apiserver $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION (pods Ready at once), proxy Traefik $TRAEFIK_VERSION"
if ((started_here)); then
  versions+=", started by this run"
fi
"$python" -m bench.report --results "$results" --out BENCHMARKS.md \
  --command "make bench" --versions "$versions" \
  --previous bench/previous.json --record bench/previous.json
# Its own section, after the report's (which keeps what follows "## The image").
"$python" -m bench.failover --out "$results/failover.json" --logs "$results" \
  --markdown BENCHMARKS.md
