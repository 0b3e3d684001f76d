"""The benchmarks (`make bench`, scripts/bench.sh) and what they share.

| module | what it is |
|---|---|
| `time_to_maintenance`, `full_run`, `scale`, `failover` | the benchmarks |
| `plain_rollback` | the baseline: the same rollback as a plain script |
| `report` | BENCHMARKS.md from the results |
| `api` | the API client (the operator's own transport), paths, the benchmarks' label |
| `app` | the sample application (examples/lawyershub.yaml), the request, the cleanup |
| `identity` | the ServiceAccount the measured client runs as |
| `measure` | the API server's request counters, figures, the machine and code measured |
| `process` | the operator process, its memory, and the control plane's CPU time |
| `watch` | watches that time-stamp each change as it arrives |
"""
