"""The local cluster's job runner: the containers of Job pods run as real processes here.

kwok, the local cluster's kubelet, only pretends to run pods. That is all the application's
Deployments need, but the Jobs the operator creates (a database restore, a migrate-down, smoke
tests) must really run, against a real PostgreSQL, for the tests to prove anything. This runner
is the kubelet of one kind of pod: it watches the pods labelled `batch.kubernetes.io/job-name`
that the scheduler has bound to a node, runs their containers as processes of this machine and
reports their status through pods/status as a kubelet does, so that the Job controller completes
or fails the Job on its own. kwok's pod stages leave these pods alone (cluster/kwok-stages/).

There are no images: a container's command runs from the host's binaries, in a private mount
namespace and chroot that shows the host's /usr and /etc read-only, the pod's volumes at their
mountPaths and nothing else of the host's filesystem. The network is the host's (127.0.0.1).
Container output goes to <state-dir>/logs/<namespace>_<pod>_<container>.log, since there is no
kubelet for `kubectl logs` to ask. It needs root: mount namespaces, chroot, setpriv.

    python -m cluster.job_runner --kubeconfig .cluster/kubeconfig --state-dir .cluster/job-runner

cluster/README.md lists what the runner supports and what a test must create for a claim.

One module per part, each depending only on those above it:

| module | what it holds |
|---|---|
| `pod` | the node's address, PodConfigError and its reasons, ObjectSource |
| `environment` | a container's env and envFrom, $(VAR) expansion |
| `volumes` | configMap, secret, emptyDir, hostPath and claim volumes on this machine |
| `plan` | a pod's containers resolved before anything runs: command, env, mounts, identity |
| `termination` | termination messages |
| `status` | container states, pod conditions and the pods/status patches |
| `sandbox` | the container's filesystem view (mount namespace, chroot, setpriv) |
| `claims` | which runner process runs a pod |
| `api` | the runner's own API transport and the ObjectSource of the live cluster |
| `run` | one pod run to its end |
| `watch` | the watch on Job pods, claims and orphaned pods |
| `__main__` | the command line |
"""
