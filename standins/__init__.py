"""Local stand-ins for what the product talks to outside the cluster: a real PostgreSQL and
Prometheus, Cloudflare's, Fastly's and a webhook's purge APIs, Slack and JSON webhooks, and the
application's own endpoints.

Both `make demo` (scripts/demo_standins.py) and the e2e tests (tests/e2e/) run them, so they
live here, once, in a top-level package of their own: they are not the product (operator/, the
only code the image ships), not the local control plane (cluster/), and not tests (the demo
runs them too). Like tests/, bench/ and scripts/, it is imported from the repository's root.
The tests' fixtures around them stay in tests/e2e/.

| module | what it is |
|---|---|
| `local` | free ports, child processes, waiting with a deadline, claims bound to a host directory |
| `postgres` | a real PostgreSQL server, its databases and their owners |
| `lawyershub_db` | the Lawyers Hub schema, the go-live migrations, the bad release's damage |
| `prometheus` | a real Prometheus scraping synthetic traffic at a chosen error ratio and latency |
| `cdn` | Cloudflare, Fastly and a purge webhook, checked as their APIs document |
| `webhooks` | a Slack-compatible incoming webhook and a JSON receiver |
| `sites` | small HTTP and TCP servers: health pages, the smoke endpoint, a Redis answering PING |
| `transform` | examples/rollback.yaml with the stand-ins' addresses in place of production's |
| `example` | every stand-in the example needs, started together for one namespace |
"""
