"""Local stand-ins for everything examples/rollback.yaml talks to in production, so that the
example runs end to end on one machine (`make demo`, tests/e2e/test_example.py).

| production (examples/rollback.yaml)  | stand-in here                                           |
|--------------------------------------|---------------------------------------------------------|
| PostgreSQL postgres.lawyershub.svc   | a real PostgreSQL (Debian's), seeded with Lawyers Hub's |
|                                      | tables, dumped before go-live, then migrated and        |
|                                      | corrupted as the bad release did                        |
| PVC db-backups                       | a host directory holding the dumps, as a hostPath       |
|                                      | PersistentVolume and a claim bound to it                |
| Prometheus prometheus.monitoring.svc | a real Prometheus (Debian's) scraping synthetic traffic |
|                                      | at a healthy error ratio and latency                    |
| Cloudflare api.cloudflare.com        | tests/e2e/fake_cdn.FakeCloudflare                       |
| Slack, the on-call webhook           | tests/e2e/fake_webhooks.FakeWebhooks                    |
| Redis redis.lawyershub.svc           | a listener answering PING with +PONG                    |
| backend, frontend, AI Gateway        | small HTTP servers: health pages, the smoke endpoint    |

The operator runs on the host, so the request it gets must name the stand-ins' loopback
addresses. `transform` does that to the example, field by field, and says what it swapped: the
example itself keeps reading like production. An address with no stand-in is refused, not
passed through.

The fakes, PostgreSQL and Prometheus helpers are the e2e tests' own (tests/e2e), imported; the
Lawyers Hub schema and the go-live migrations are those of the database tests.

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
import copy
import json
import os
import re
import secrets
import shutil
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.e2e.fake_cdn import FakeCloudflare
from tests.e2e.fake_webhooks import FakeWebhooks, Hook
from tests.e2e.lawyershub_db import PRE_GOLIVE_SQL, contents, corrupt, go_live
from tests.e2e.postgres import Database, PostgresServer, start_server, stop_server
from tests.e2e.prometheus import PrometheusServer, Traffic, TrafficTarget
from tests.e2e.support import REPO_ROOT, bound_claim_objects, wait_until

EXAMPLE = REPO_ROOT / "examples" / "rollback.yaml"
PROCESSES = "processes.json"  # in serve's directory: what to stop should serve be killed
CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
DATABASE = "lawyershub"  # the database and its owner role, as production names them

# The dated dumps on the backups volume: two before go-live, one after it (notAfter leaves it).
PRE_GOLIVE_DUMPS = ("pre-golive-snapshot-20260105.sql", "pre-golive-snapshot-20260109.sql")
POST_GOLIVE_DUMP = "pre-golive-snapshot-20260111.sql"
CHOSEN_DUMP = PRE_GOLIVE_DUMPS[-1]

# The watch is 30 minutes in production; a demo cannot wait that long.
DEMO_WATCH = {"duration": "30s", "interval": "5s"}

# The healthy traffic Prometheus sees once the application is back: 0.4 % errors, 120 ms.
TRAFFIC = {"rate": 200.0, "error_ratio": 0.004, "latency": 0.12}


class StartInterruptedError(Exception):
    """Stopping was asked while the stand-ins were starting."""


# --- small servers


@dataclass
class Hit:
    method: str
    path: str
    status: int
    body: Any  # the JSON sent, if any


class SiteServer:
    """An HTTP server on loopback answering a few fixed routes: an application's health page,
    the smoke test's endpoint. Records every request."""

    Route = Callable[[dict[str, str], bytes], tuple[int, str]]

    def __init__(self, name: str, routes: dict[tuple[str, str], Route]) -> None:
        self.name, self.routes = name, routes
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                route = site.routes.get((self.command, self.path.split("?", 1)[0]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, text = route(headers, body) if route else (404, '{"error":"not found"}')
                try:
                    sent = json.loads(body) if body else None
                except ValueError:
                    sent = body.decode(errors="replace")
                with site.lock:
                    site.hits.append(Hit(self.command, self.path, status, sent))
                data = text.encode()
                self.send_response(status)
                kind = "text/html" if text.startswith("<") else "application/json"
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class RedisLike:
    """A TCP listener that answers `PING\\r\\n` with `+PONG\\r\\n`, as a Redis without a
    password does, and anything else with an error."""

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                line = b""
                while not line.endswith(b"\r\n") and len(line) < 1024:
                    chunk = self.request.recv(64)
                    if not chunk:
                        return
                    line += chunk
                self.request.sendall(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR unknown\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the transform


@dataclass(frozen=True)
class Local:
    """Where the stand-ins listen: production `host:port` -> loopback `host:port` (every
    stand-in speaks plain HTTP), and the Cloudflare API base."""

    addresses: dict[str, str]
    cdn_api_base: str

    def to_dict(self) -> dict[str, Any]:
        return {"addresses": self.addresses, "cdnApiBase": self.cdn_api_base}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Local:
        return cls(dict(raw["addresses"]), str(raw["cdnApiBase"]))


@dataclass(frozen=True)
class Swap:
    field: str
    production: str
    local: str


_URL = re.compile(r"https?://[^\s\"'/]+")


def _swap_url(url: str, local: Local, where: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = local.addresses.get(f"{parts.hostname}:{port}")
    if found is None:
        raise ValueError(f"{where}: no local stand-in for {parts.hostname}:{port} ({url})")
    return urlunsplit(("http", found, parts.path, parts.query, parts.fragment))


def _swap_urls_in(text: str, local: Local, where: str) -> str:
    """Every http(s) origin inside a free text (a Job's arguments, an env value)."""
    return _URL.sub(lambda m: _swap_url(m.group(0), local, where), text)


def transform(
    request: dict[str, Any],
    local: Local,
    *,
    namespace: str | None = None,
    watch: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[Swap]]:
    """The request with every production address swapped for its stand-in's, the watch
    shortened (DEMO_WATCH unless `watch` says otherwise), and in `namespace` if given.

    Returns the new request and the list of swaps, in the order of the spec. Raises
    ValueError for an address no stand-in serves: an example that changed must be noticed."""
    out = copy.deepcopy(request)
    spec = out["spec"]
    swaps: list[Swap] = []

    def swap(path: str, old: Any, new: Any) -> Any:
        if old != new:
            swaps.append(Swap(path, str(old), str(new)))
        return new

    if namespace is not None:
        out["metadata"]["namespace"] = swap(
            "metadata.namespace", out["metadata"].get("namespace", ""), namespace
        )
    cdn = spec.get("cdn")
    if cdn is not None:
        if cdn.get("provider") != "cloudflare":
            raise ValueError("spec.cdn: the stand-in speaks Cloudflare's API only")
        old = cdn.get("apiBase", f"{CLOUDFLARE_API} (the default)")
        cdn["apiBase"] = swap("spec.cdn.apiBase", old, local.cdn_api_base)
    for check in (spec.get("verification") or {}).get("checks") or []:
        where = f"spec.verification.checks[{check['name']}]"
        if "http" in check:
            url = check["http"]["url"]
            check["http"]["url"] = swap(f"{where}.http.url", url, _swap_url(url, local, where))
        if "tcp" in check:
            tcp = check["tcp"]
            production = f"{tcp['host']}:{tcp['port']}"
            found = local.addresses.get(production)
            if found is None:
                raise ValueError(f"{where}: no local stand-in for {production}")
            swap(f"{where}.tcp", production, found)
            host, _, port = found.rpartition(":")
            tcp["host"], tcp["port"] = host, int(port)
        if "job" in check:
            job = check["job"]
            for key in [k for k in ("command", "args") if k in job]:
                job[key] = [
                    swap(f"{where}.job.{key}[{i}]", text, _swap_urls_in(text, local, where))
                    for i, text in enumerate(job[key])
                ]
            for env in job.get("env") or []:
                if "value" in env:
                    env["value"] = swap(
                        f"{where}.job.env[{env['name']}]",
                        env["value"],
                        _swap_urls_in(env["value"], local, where),
                    )
    monitoring = spec.get("monitoring")
    if monitoring is not None:
        url = monitoring["prometheus"]["url"]
        monitoring["prometheus"]["url"] = swap(
            "spec.monitoring.prometheus.url", url, _swap_url(url, local, "spec.monitoring")
        )
        for key, short in (watch or DEMO_WATCH).items():
            monitoring[key] = swap(f"spec.monitoring.{key}", monitoring.get(key, "-"), short)
    for hook in spec.get("notify") or []:
        if "url" in hook:
            where = f"spec.notify[{hook['name']}].url"
            hook["url"] = swap(where, hook["url"], _swap_url(hook["url"], local, where))
    return out, swaps


class _Dumper(yaml.SafeDumper):
    """Quotes the strings that YAML 1.1 parsers, kubectl's among them, read as booleans or
    null (a tcp check's `expect: N` is the letter N, not false)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    ambiguous = text.lower() in {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"' if ambiguous else None)


_Dumper.add_representer(str, _represent_str)


def dump(request: dict[str, Any]) -> str:
    """The request as YAML that kubectl reads back exactly."""
    return yaml.dump(request, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_example(path: Path = EXAMPLE) -> dict[str, Any]:
    request: dict[str, Any] = yaml.safe_load(path.read_text())
    return request


# --- the stand-ins together


@dataclass
class Seeded:
    """The database's contents at the points the demo shows: before go-live (what the restore
    must bring back exactly) and at the bad release."""

    pre_golive: dict[str, Any] = field(default_factory=dict)
    bad_release: dict[str, Any] = field(default_factory=dict)


class StandIns:
    """Every stand-in, started together for one namespace (the request's): `start`, `install`
    (the Secrets, volume and claim the request refers to), then `stop`. A context manager.

    `local()` maps the example's production addresses to the stand-in serving each; what the
    request names itself (zone id, webhook paths, Secret names, claim) is read from it."""

    def __init__(self, workdir: Path, namespace: str, request: dict[str, Any] | None = None):
        self.workdir, self.namespace = workdir, namespace
        self.request = request if request is not None else load_example()
        self.spec: dict[str, Any] = self.request["spec"]
        self.backups = workdir / "backups"
        self.postgres: PostgresServer | None = None
        self.db: Database | None = None
        self.seeded = Seeded()
        self.target: TrafficTarget | None = None
        self.traffic: Traffic | None = None
        self.prometheus: PrometheusServer | None = None
        self.cdn_token = secrets.token_urlsafe(24)
        self.smoke_token = secrets.token_urlsafe(24)
        self.cdn: FakeCloudflare | None = None
        self.webhooks: FakeWebhooks | None = None
        self.hooks: dict[str, Hook] = {}  # by notify name
        self.sites: dict[str, SiteServer] = {}
        self.redis: RedisLike | None = None
        self.volume = f"{namespace}-{self._claim()}" if self._claim() else ""

    def __enter__(self) -> StandIns:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- starting and stopping

    def start(
        self,
        stop: threading.Event | None = None,
        started: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """Starts everything. `started` is told of each process that outlives this one unless
        stopped (PostgreSQL, which pg_ctl detaches), as soon as it runs; `stop`, once set,
        ends the start between two stand-ins (StartInterruptedError), never in the middle of one."""

        def check() -> None:
            if stop is not None and stop.is_set():
                raise StartInterruptedError("asked to stop while starting")

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_database()
        if started is not None and self.postgres is not None:
            started({"postgres": str(self.postgres.root), "bin": str(self.postgres.bin_dir)})
        check()
        self._start_prometheus()
        check()
        cdn = FakeCloudflare((self.spec.get("cdn") or {}).get("zoneId", "0"), self.cdn_token)
        cdn.__enter__()
        self.cdn = cdn
        self._start_webhooks()
        self.redis = RedisLike()
        self.sites = {
            "backend": SiteServer(
                "backend",
                {
                    ("GET", "/api/health"): lambda h, b: (
                        200,
                        _json({"status": "ok", "version": "stable-last-known"}),
                    ),
                    ("POST", "/api/smoke/documents"): self._smoke_document,
                },
            ),
            "frontend": SiteServer(
                "frontend",
                {("GET", "/"): lambda h, b: (200, "<!doctype html><title>Lawyers Hub</title>")},
            ),
            "ai-gateway": SiteServer(
                "ai-gateway", {("GET", "/healthz"): lambda h, b: (200, _json({"status": "ok"}))}
            ),
        }

    def stop(self) -> None:
        """Stops whatever was started; safe to call twice and after a failed start."""
        for site in self.sites.values():
            site.close()
        self.sites = {}
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        if self.cdn is not None:
            self.cdn.__exit__()
            self.cdn = None
        if self.webhooks is not None:
            self.webhooks.__exit__()
            self.webhooks = None
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.target is not None:
            self.target.close()
            self.target = None
        if self.postgres is not None:
            stop_server(self.postgres)
            self.postgres = None

    def _start_database(self) -> None:
        self.postgres = server = start_server()
        password = secrets.token_hex(16)
        server.psql("postgres", f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{password}'")
        server.psql("postgres", f"CREATE DATABASE {DATABASE} OWNER {DATABASE}")
        self.db = db = Database(server, DATABASE, DATABASE, password)
        db.psql(PRE_GOLIVE_SQL)
        self.seeded.pre_golive = contents(db)
        self.backups.mkdir(parents=True, exist_ok=True)
        self.backups.chmod(0o755)  # read by the Jobs' non-root user
        for name in PRE_GOLIVE_DUMPS:
            db.dump(self.backups / name).chmod(0o644)
        go_live(db)
        corrupt(db)
        self.seeded.bad_release = contents(db)
        # The nightly backup after go-live holds the bad data: notAfter must leave it alone.
        db.dump(self.backups / POST_GOLIVE_DUMP).chmod(0o644)

    def _start_prometheus(self) -> None:
        self.target = TrafficTarget()
        self.traffic = self.target.traffic(self.namespace, **TRAFFIC)
        directory = self.workdir / "prometheus"
        directory.mkdir(exist_ok=True)
        self.prometheus = PrometheusServer([self.target.address], directory)
        self.prometheus.start()
        self.prometheus.wait_for_data(self.namespace)

    def _start_webhooks(self) -> None:
        webhooks = FakeWebhooks()
        webhooks.__enter__()
        self.webhooks = webhooks
        for hook in self.spec.get("notify") or []:
            if hook.get("format") == "slack":
                self.hooks[hook["name"]] = self.webhooks.slack_hook()
                continue
            path = urlsplit(hook.get("url", "")).path
            if not path.startswith("/hooks/"):
                raise ValueError(f"spec.notify[{hook['name']}]: the stand-in serves /hooks/<name>")
            self.hooks[hook["name"]] = self.webhooks.json_hook(path.removeprefix("/hooks/"))

    def _smoke_document(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """The backend's "save a legal document" smoke endpoint: needs the smoke user's token
        and a case; saves nothing (dryRun) and says what it would have saved."""
        if headers.get("authorization") != f"Bearer {self.smoke_token}":
            return 401, _json({"error": "unauthorized"})
        try:
            document = json.loads(body)
        except ValueError:
            return 400, _json({"error": "not JSON"})
        return 201, _json({"saved": True, "dryRun": True, "caseId": document.get("caseId")})

    # --- what the request sees

    def local(self) -> Local:
        """The production addresses of the example, each with its stand-in's address."""
        assert self.postgres and self.prometheus and self.redis and self.cdn and self.webhooks
        webhooks = urlsplit(self.webhooks.base).netloc
        return Local(
            addresses={
                "backend.lawyershub.svc:8080": self.sites["backend"].address,
                "frontend.lawyershub.svc:80": self.sites["frontend"].address,
                "ai-gateway.lawyershub.svc:8080": self.sites["ai-gateway"].address,
                "postgres.lawyershub.svc:5432": f"{self.postgres.host}:{self.postgres.port}",
                "redis.lawyershub.svc:6379": self.redis.address,
                "prometheus.monitoring.svc:9090": f"127.0.0.1:{self.prometheus.port}",
                "oncall.lawyershub.example:443": webhooks,
            },
            cdn_api_base=self.cdn.api_base,
        )

    def _claim(self) -> str:
        restore = (self.spec.get("database") or {}).get("restore") or {}
        return str((restore.get("backup") or {}).get("claimName", ""))

    def database_url(self) -> str:
        """The application's URL as Prisma writes it (psql does not know connection_limit)."""
        assert self.db is not None
        return f"{self.db.url}?schema=public&connection_limit=5"

    def cluster_objects(self) -> list[dict[str, Any]]:
        """What the request refers to in the namespace, with the stand-ins' values: every
        Secret key it names, and the backups' claim bound to a hostPath PersistentVolume (the
        local cluster runs no volume binder: see cluster/README.md)."""
        secrets_: dict[str, dict[str, str]] = {}

        def put(ref: dict[str, str], value: str) -> None:
            secrets_.setdefault(ref["name"], {})[ref["key"]] = value

        spec = self.spec
        if "cdn" in spec:
            put(spec["cdn"]["credentials"]["secretRef"], self.cdn_token)
        if "database" in spec:
            put(spec["database"]["connection"]["secretRef"], self.database_url())
        for hook in spec.get("notify") or []:
            if "urlSecretRef" in hook:
                put(hook["urlSecretRef"], self.hooks[hook["name"]].url)
        for check in (spec.get("verification") or {}).get("checks") or []:
            for env in (check.get("job") or {}).get("env") or []:
                if "secretKeyRef" in env:
                    put(env["secretKeyRef"], self.smoke_token)
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.namespace},
                "stringData": data,
            }
            for name, data in secrets_.items()
        ]
        claim = self._claim()
        if claim:
            objects += bound_claim_objects(
                self.namespace, claim, self.volume, self.backups, "ReadOnlyMany"
            )
        return objects

    def install(self, api: client.ApiClient) -> list[str]:
        """Creates `cluster_objects` (replacing a volume an earlier run left); returns what was
        created, for a person to read (never a value)."""
        core = client.CoreV1Api(api)
        created = []
        for obj in self.cluster_objects():
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Secret":
                core.create_namespaced_secret(self.namespace, obj)
                created.append(f"Secret {name} ({', '.join(sorted(obj['stringData']))})")
            elif kind == "PersistentVolume":
                self.uninstall(api)
                core.create_persistent_volume(obj)
                created.append(f"PersistentVolume {name} (hostPath {self.backups})")
            else:
                core.create_namespaced_persistent_volume_claim(self.namespace, obj)
                created.append(f"PersistentVolumeClaim {name}, bound to it")
        return created

    def uninstall(self, api: client.ApiClient) -> None:
        """Deletes the PersistentVolume, the one cluster-scoped object (and waits until it is
        gone, so that the next run may create it again); the rest goes with the namespace."""
        if not self.volume:
            return
        core = client.CoreV1Api(api)
        try:
            core.delete_persistent_volume(self.volume)
        except ApiException as error:
            if error.status != 404:
                raise
            return

        def gone() -> bool:
            try:
                core.read_persistent_volume(self.volume)
            except ApiException as error:
                if error.status == 404:
                    return True
                raise
            return False

        wait_until(gone, timeout=30, what=f"PersistentVolume {self.volume} deleted")

    # --- what they received

    def smoke_calls(self) -> list[Hit]:
        """The smoke test's calls to the backend's smoke endpoint."""
        site = self.sites["backend"]
        with site.lock:
            return [h for h in site.hits if h.path.startswith("/api/smoke/")]

    def received(self) -> dict[str, Any]:
        """What the stand-ins got, as plain data: the CDN's requests, each webhook's accepted
        messages, the smoke test's calls and the database's tables now."""
        assert self.cdn is not None and self.db is not None
        notifications = {}
        for name, hook in self.hooks.items():
            notifications[name] = {"kind": hook.kind, "messages": hook.messages}
        return {
            "cdn": {
                "apiBase": self.cdn.api_base,
                "requests": [
                    {"method": r.method, "path": r.path, "status": r.status, "body": r.json}
                    for r in self.cdn.received()
                ],
                "violations": list(self.cdn.violations),
            },
            "notifications": notifications,
            "smoke": [h.__dict__ for h in self.smoke_calls()],
            "database": {
                "address": f"{self.db.server.host}:{self.db.server.port}",
                "name": self.db.name,
                "chosen": CHOSEN_DUMP,
                "preGolive": self.seeded.pre_golive,
                "badRelease": self.seeded.bad_release,
                "now": contents(self.db),
            },
        }


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


def serve(namespace: str, directory: Path, kubeconfig: str | None) -> None:
    """Runs the stand-ins until SIGTERM or SIGINT. In a session of its own, so that a Ctrl-C
    in the terminal reaches the demo's script, which stops this (and so Prometheus and
    PostgreSQL) in order, rather than killing Prometheus under a stand-in still starting."""
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
        with _control_server(stand_ins) as control:
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
    swap = commands.add_parser("transform", help="the example with the stand-ins' addresses")
    swap.add_argument("--dir", type=Path, required=True)
    swap.add_argument("request", type=Path, nargs="?", default=EXAMPLE)
    look = commands.add_parser("show", help="what the running stand-ins received")
    look.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.namespace, args.dir, args.kubeconfig)
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
