"""`make demo`'s stand-ins, from the command line: examples/rollback.yaml runs end to end on
one machine against local stand-ins for everything it talks to in production (standins/: a
real PostgreSQL and Prometheus, Cloudflare's purge API, the webhooks, Redis and the
application's endpoints).

The operator runs on the host, so the request it gets must name the stand-ins' loopback
addresses: `transform` does that to the example, field by field, and says what it swapped.

Command line, from the repository root (`make demo` uses it):
  python -m scripts.demo_standins serve --namespace lawyershub --dir .cluster/demo
      starts everything, creates the Secrets, the volume and the claim the example needs,
      writes DIR/state.json when ready, and runs until SIGTERM or SIGINT, then cleans up
  python -m scripts.demo_standins transform --dir .cluster/demo examples/rollback.yaml
      the example with the stand-ins' addresses, on stdout; what was swapped, on stderr
  python -m scripts.demo_standins show --dir .cluster/demo
      what the stand-ins received: the purge, the notifications, the smoke test, the data
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from kubernetes import config

from standins.data_plane import data_plane
from standins.example import (
    DATABASE,
    POST_GOLIVE_DUMP,
    PRE_GOLIVE_DUMPS,
    TRAFFIC,
    StandIns,
    StartInterruptedError,
)
from standins.postgres import PostgresServer, stop_server
from standins.transform import EXAMPLE, Local, Swap, dump, load_example, transform

PROCESSES = "processes.json"  # in serve's directory: what to stop should serve be killed


# --- printing


def _users(tables: dict[str, Any]) -> list[str]:
    return [" | ".join(v or "NULL" for v in row[:3]) for row in tables['"User"']]


def _migrations(tables: dict[str, Any]) -> list[str]:
    return sorted(row[3] for row in tables["_prisma_migrations"])


def describe_database(state: dict[str, Any], label: str, key: str) -> list[str]:
    tables = state[key]["tables"]
    lines = [f"  {label}:", '    SELECT id, email, name FROM "User" ORDER BY id;']
    lines += [f"      {row}" for row in _users(tables)]
    lines.append("    SELECT migration_name FROM _prisma_migrations ORDER BY 1;")
    lines += [f"      {name}" for name in _migrations(tables)]
    return lines


def show(received: dict[str, Any]) -> str:
    """What the stand-ins received, for a person."""
    out: list[str] = []
    db = received["database"]
    same = db["now"] == db["preGolive"]
    out.append(f"PostgreSQL (database {db['name']} on {db['address']}):")
    out += describe_database(db, "at the bad release, before the rollback", "badRelease")
    out += describe_database(db, "now", "now")
    out.append(
        f"  -> {'exactly' if same else 'NOT'} the pre-go-live snapshot {db['chosen']} "
        "(every row and the whole schema compared)"
    )
    cdn = received["cdn"]
    out.append(f"\nCloudflare (the stand-in at {cdn['apiBase']}) received:")
    for r in cdn["requests"]:
        out.append(f"  {r['method']} {r['path']} {json.dumps(r['body'])} -> {r['status']}")
    if not cdn["requests"]:
        out.append("  nothing")
    out += [f"  refused as malformed: {v}" for v in cdn["violations"]]
    for name, hook in received["notifications"].items():
        messages = hook["messages"]
        out.append(f"\nwebhook {name} ({hook['kind']}) received {len(messages)} message(s):")
        for message in messages:
            if hook["kind"] == "slack":
                text = str(message.get("text", ""))
            else:
                text = f"{message['event']:<17} phase {message['phase']}, step {message['step']}"
            out.append(f"  {text if len(text) <= 150 else text[:149] + '…'}")
    out.append("\nthe save-document smoke test (a Job) called the backend:")
    for hit in received["smoke"]:
        out.append(f"  {hit['method']} {hit['path']} {json.dumps(hit['body'])} -> {hit['status']}")
    if not received["smoke"]:
        out.append("  never")
    return "\n".join(out)


def print_swaps(swaps: list[Swap], stream: Any = sys.stderr) -> None:
    for s in swaps:
        print(f"  {s.field}: {s.production} -> {s.local}", file=stream)


# --- the command line


@contextlib.contextmanager
def _control_server(stand_ins: StandIns) -> Iterator[str]:
    """GET /received on loopback: how `show` asks the running stand-ins what they got."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/received":
                self.send_error(404)
                return
            data = json.dumps(stand_ins.received()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _clean_leftovers(directory: Path) -> None:
    """What a demo killed without its cleanup left: its Prometheus (found by the
    configuration file in `directory` on its command line) and its PostgreSQL (which pg_ctl
    runs in a session of its own; recorded in `directory` as soon as it runs)."""
    config_file = f"--config.file={directory}/prometheus/".encode()
    for process in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if config_file in (process / "cmdline").read_bytes():
                os.kill(int(process.name), signal.SIGKILL)
    with contextlib.suppress(ValueError, KeyError, OSError, RuntimeError):
        left = json.loads((directory / PROCESSES).read_text())
        root = Path(left["postgres"])
        if root.is_dir():
            stop_server(PostgresServer(Path(left["bin"]), root, 0, ""))
    shutil.rmtree(directory, ignore_errors=True)


def _write(path: Path, value: Any) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(value, indent=2))
    partial.replace(path)


def serve(namespace: str, directory: Path, kubeconfig: str | None, proxy: bool = False) -> None:
    """Runs the stand-ins until SIGTERM or SIGINT. In a session of its own, so that a Ctrl-C
    in the terminal reaches the demo's script, which stops this (and so Prometheus and
    PostgreSQL) in order, rather than killing Prometheus under a stand-in still starting.

    With `proxy`, the sample's Services are served by the data plane's stand-ins too
    (standins/data_plane.py), for the local cluster's proxy to reach."""
    with contextlib.suppress(OSError):  # already a group leader: run as it is
        os.setsid()
    _clean_leftovers(directory)
    directory.mkdir(parents=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    api = config.new_client_from_config(config_file=kubeconfig)
    began = time.monotonic()
    stand_ins = StandIns(directory, namespace)
    try:
        stand_ins.start(stop, lambda processes: _write(directory / PROCESSES, processes))
        created = stand_ins.install(api)
        local = stand_ins.local()
        with contextlib.ExitStack() as serving:
            control = serving.enter_context(_control_server(stand_ins))
            if proxy:
                servers = serving.enter_context(data_plane(api, namespace))
                created += [
                    f"Service {s.name}: served by {s.address} (EndpointSlice)" for s in servers
                ]
            _report_started(stand_ins, local, created, time.monotonic() - began)
            state = {"pid": os.getpid(), "local": local.to_dict(), "control": control}
            _write(directory / "state.json", state)
            stop.wait()
    except StartInterruptedError:
        pass
    finally:
        with contextlib.suppress(Exception):
            stand_ins.uninstall(api)
        stand_ins.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print("stand-ins stopped and removed", flush=True)


def _report_started(stand_ins: StandIns, local: Local, created: list[str], took: float) -> None:
    assert stand_ins.postgres is not None
    by_stand_in = {
        "backend.lawyershub.svc:8080": "HTTP: /api/health, /api/smoke/documents",
        "frontend.lawyershub.svc:80": "HTTP: the home page",
        "ai-gateway.lawyershub.svc:8080": "HTTP: /healthz",
        "postgres.lawyershub.svc:5432": (
            f"PostgreSQL {stand_ins.postgres.bin_dir.parent.name} (Debian's), database {DATABASE}"
        ),
        "redis.lawyershub.svc:6379": "PING -> +PONG",
        "prometheus.monitoring.svc:9090": (
            "Prometheus (Debian's), scraping synthetic traffic every 1s: "
            f"{TRAFFIC['error_ratio']:.1%} errors, {TRAFFIC['latency'] * 1000:.0f} ms"
        ),
        "oncall.lawyershub.example:443": "webhook receivers: Slack-compatible and JSON",
    }
    print(f"started in {took:.1f}s (logs in {stand_ins.workdir}):")
    width = max(len(k) for k in local.addresses)
    for production, address in local.addresses.items():
        print(f"  {production:<{width}}  {address:<16} {by_stand_in.get(production, '')}")
    print(f"  {'api.cloudflare.com':<{width}}  {local.cdn_api_base}  Cloudflare's purge API")
    print(
        f"database {DATABASE}: seeded with Lawyers Hub's tables, dumped to "
        f"{', '.join(PRE_GOLIVE_DUMPS)}, then the go-live's migrations applied and the data "
        f"corrupted, as the bad release did (nightly dump {POST_GOLIVE_DUMP} taken after)"
    )
    print(f"in namespace {stand_ins.namespace}:")
    for line in created:
        print(f"  {line}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="start the stand-ins and run until stopped")
    run.add_argument("--namespace", required=True)
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    run.add_argument(
        "--proxy", action="store_true", help="serve the sample's Services for the local proxy"
    )
    swap = commands.add_parser("transform", help="the example with the stand-ins' addresses")
    swap.add_argument("--dir", type=Path, required=True)
    swap.add_argument("request", type=Path, nargs="?", default=EXAMPLE)
    look = commands.add_parser("show", help="what the running stand-ins received")
    look.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.namespace, args.dir, args.kubeconfig, args.proxy)
        return
    state = json.loads((args.dir / "state.json").read_text())
    if args.command == "transform":
        request, swaps = transform(
            load_example(args.request), Local.from_dict(state["local"]), namespace=None
        )
        print_swaps(swaps)
        sys.stdout.write(dump(request))
    else:
        print(show(httpx.get(f"{state['control']}/received", timeout=30).json()))


if __name__ == "__main__":
    main()
